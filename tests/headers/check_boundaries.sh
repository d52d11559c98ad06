#!/bin/sh
# check_boundaries.sh SRCDIR: the module boundaries of DESIGN.md section 2 hold in the source.
# engine/ sees no HTTP, JSON or SQL library and no other module; storage/ sees only SQLite;
# only engine/gemm.c includes cblas.h; only server/ includes microhttpd.h and jansson.h.
# Prints TAP.
set -u
src=$1
n=0 failed=0

check() { # description, forbidden include regex, files...
    desc=$1 pattern=$2
    shift 2
    n=$((n + 1))
    hits=$(grep -HnE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($pattern)[>\"]" "$@" 2>/dev/null)
    if [ -z "$hits" ]; then
        echo "ok $n - $desc"
    else
        failed=$((failed + 1))
        echo "not ok $n - $desc"
        printf '%s\n' "$hits" | sed 's/^/# /'
    fi
}

eng=$(ls "$src"/engine/*.[ch])
sto=$(ls "$src"/storage/*.[ch])
# shellcheck disable=SC2086
check "engine includes no HTTP/JSON/SQL library" 'microhttpd\.h|jansson\.h|sqlite3\.h|curl/.*' $eng
# shellcheck disable=SC2086
check "engine includes no storage or server header" 'storage\.h|(\.\./)?server/.*|srv_.*\.h' $eng
# shellcheck disable=SC2086
check "storage includes no HTTP/JSON/BLAS library" 'microhttpd\.h|jansson\.h|cblas\.h|curl/.*' $sto
# shellcheck disable=SC2086
check "storage includes no engine or server header" 'engine\.h|(\.\./)?server/.*' $sto
# shellcheck disable=SC2086
check "only engine/gemm.c includes cblas.h" 'cblas\.h' $(echo $eng | tr ' ' '\n' | grep -v '/gemm\.c$') "$src"/storage/*.[ch] "$src"/server/*.[ch]
echo "1..$n"
[ "$failed" -eq 0 ]
