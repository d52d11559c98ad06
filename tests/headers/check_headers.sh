#!/bin/sh
# check_headers.sh SRCDIR BUILDDIR CC: every header of engine/, storage/ and server/ compiles
# on its own (it includes what it needs), under the project's warnings. Prints TAP.
set -u
src=$1 build=$2 cc=${3:-cc}
flags="-std=c17 -Wall -Wextra -Wpedantic -Werror -Wstrict-prototypes -Wmissing-prototypes
       -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I$build $(pkg-config --cflags openblas)"
n=0 failed=0
for h in "$src"/engine/*.h "$src"/storage/*.h "$src"/server/*.h; do
    [ -f "$h" ] || continue
    n=$((n + 1))
    rel=${h#"$src"/}
    # shellcheck disable=SC2086
    if out=$(printf '#include "%s"\n' "$h" | $cc $flags -I"$(dirname "$h")" -fsyntax-only -x c - 2>&1); then
        echo "ok $n - $rel is self-contained"
    else
        failed=$((failed + 1))
        echo "not ok $n - $rel is self-contained"
        printf '%s\n' "$out" | sed 's/^/# /'
    fi
done
echo "1..$n"
[ "$failed" -eq 0 ]
