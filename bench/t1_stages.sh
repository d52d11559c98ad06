#!/bin/sh
# t1_stages.sh: the T1 seed workflow end to end, thawd (`thawd run`) against PyTorch
# (bench/t1_torch.py), wall time per stage; bench/t1_stages.py runs and joins them.
#
#   bench/t1_stages.sh                   # 3 rounds, 2 threads (~10-15 min on the 2-core VM)
#   bench/t1_stages.sh --repeats 1       # one round
#   bench/t1_stages.sh --quick           # smoke run: short schedules (numbers not meaningful)
#
# Builds thawd with meson --buildtype=release into $BUILD (default build-t1-rel) unless
# $THAWD names a binary ($VERSION describes it; default: git describe of this tree). Other
# options go to t1_stages.py (--threads, --work, --results).
# Writes bench/results/<UTC stamp>-t1stages.{json,md}.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-t1-rel}
if [ -z "${THAWD:-}" ]; then
    [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" --buildtype=release -Dtests=false >/dev/null
    ninja -C "$BUILD" server/thawd >/dev/null
    THAWD=$BUILD/server/thawd
fi
VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo unknown)}
exec python3 bench/t1_stages.py --thawd "$THAWD" --version "$VERSION" "$@"
