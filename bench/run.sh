#!/bin/sh
# bench/run.sh: machine peak + PyTorch reference (+ thawd's engine, once it has a bench binary),
# run side by side and written to bench/results/<date>.json and bench/results/<date>.md
# (<date>-quick.* for --quick runs).
#
# usage: bench/run.sh [--quick] [--threads N] [--nice] [-- extra arguments for both benchmarks]
#   --quick    2 repeats of 3 steps, M1 batch 128 only (a smoke run, numbers not meaningful)
#   --threads  threads for every side (default 2)
#   --nice     run everything under nice -n 19 (development on a shared machine)
#   after --, e.g. --models m1 --modes train,infer --batches 64,128 --repeats 5 --iters 20
# environment:
#   BENCH_BUILD  where peak is compiled (default <repo>/build-bench)
#   THAWD_BENCH  thawd's engine benchmark binary (default: built with meson --buildtype=release
#                into THAWD_BUILD, default <repo>/build-bench-release)
#   PYTORCH      python with torch (default /usr/bin/python3)
#   OPENBLAS_CORETYPE, when set, pins OpenBLAS's kernels for every side (the report names the
#                core in use); `env -u OPENBLAS_CORETYPE bench/run.sh` lets OpenBLAS choose
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
PYTORCH=${PYTORCH:-/usr/bin/python3}
THREADS=2
QUICK=0
NICE=
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --nice) NICE="nice -n 19" ;;
    --threads)
        [ $# -ge 2 ] || { echo "run.sh: --threads needs a value" >&2; exit 2; }
        THREADS=$2
        shift
        ;;
    --) shift; break ;;
    *) echo "run.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
    shift
done
case $THREADS in '' | *[!0-9]*) echo "run.sh: --threads must be a number" >&2; exit 2 ;; esac

ARGS="--threads $THREADS"
PEAK_ARGS="--threads $THREADS"
if [ $QUICK = 1 ]; then
    ARGS="$ARGS --models m1 --batches 128 --repeats 2 --iters 3 --warmup 1"
    PEAK_ARGS="$PEAK_ARGS --repeats 2 --n 1024"
fi

mkdir -p "$BUILD" "$ROOT/bench/results"
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
[ $QUICK = 0 ] || STAMP=$STAMP-quick
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. machine peak (FMA and OpenBLAS sgemm), plus M1's per-image forward GEMM shapes
#    (M = out channels, N = output pixels, K = in channels * 9).
echo "== peak" >&2
# shellcheck disable=SC2046
cc -O2 -march=native -std=c17 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -pthread \
    "$ROOT/bench/peak.c" $(pkg-config --cflags --libs openblas) -o "$BUILD/peak"
# shellcheck disable=SC2086
$NICE "$BUILD/peak" $PEAK_ARGS --shape 32x784x288 --shape 64x196x288 --shape 64x196x576 \
    --shape 128x49x576 >"$TMP/peak.json"

# 2. PyTorch reference
echo "== pytorch" >&2
# shellcheck disable=SC2086
$NICE "$PYTORCH" "$ROOT/bench/torch_ref.py" $ARGS "$@" >"$TMP/torch.json" ||
    echo "run.sh: some PyTorch configs failed (marked \"error\" in the results)" >&2

# 3. thawd's engine --------------------------------------------------------------------------
# >>> THAWD SIDE. The engine's benchmark binary must accept the same options as torch_ref.py
# (--models, --modes, --batches, --repeats, --iters, --warmup, --threads) and print one
# "thawd-bench/1" JSON document on stdout with "implementation": "thawd" (schema in
# bench/README.md). bench/thawd_bench.c is that binary; it is built here unless THAWD_BENCH is set.
THAWD_ARG=
if [ -z "${THAWD_BENCH:-}" ]; then
    # Build it: a release meson build of its own (configured once), bench/thawd-bench only.
    REL=${THAWD_BUILD:-$ROOT/build-bench-release}
    if { [ -f "$REL/build.ninja" ] || meson setup "$REL" "$ROOT" --buildtype=release \
        -Dtests=false >"$TMP/meson.log" 2>&1; } && ninja -C "$REL" bench/thawd-bench \
        >"$TMP/ninja.log" 2>&1; then
        THAWD_BENCH=$REL/bench/thawd-bench
    else
        echo "run.sh: could not build thawd-bench (see below); looking for an existing one" >&2
        tail -n 20 "$TMP/meson.log" "$TMP/ninja.log" >&2 2>/dev/null || true
        THAWD_BENCH=$(ls -t "$ROOT"/build*/bench/thawd-bench 2>/dev/null | head -n 1 || true)
    fi
fi
if [ -n "$THAWD_BENCH" ] && [ -x "$THAWD_BENCH" ]; then
    echo "== thawd ($THAWD_BENCH)" >&2
    # shellcheck disable=SC2086
    if $NICE "$THAWD_BENCH" $ARGS "$@" >"$TMP/thawd.json"; then
        THAWD_ARG="--thawd $TMP/thawd.json"
    else
        echo "run.sh: $THAWD_BENCH failed; results without thawd" >&2
    fi
else
    echo "== thawd: no engine benchmark binary yet (set THAWD_BENCH), skipped" >&2
fi
# <<< THAWD SIDE

# 4. combine
# shellcheck disable=SC2086
python3 "$ROOT/bench/report.py" --peak "$TMP/peak.json" --torch "$TMP/torch.json" $THAWD_ARG \
    --json "$ROOT/bench/results/$STAMP.json" --md "$ROOT/bench/results/$STAMP.md"
python3 "$ROOT/bench/plot.py" "$ROOT/bench/results/$STAMP.json" "$ROOT/bench/results/$STAMP.svg" ||
    echo "run.sh: plot.py failed (the tables are written)" >&2
echo "wrote bench/results/$STAMP.json, $STAMP.md and $STAMP.svg" >&2
