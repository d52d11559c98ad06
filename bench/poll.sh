#!/bin/sh
# poll.sh: the daemon under status polling (issue 7 item 2). Starts thawd on loopback with a
# temporary data dir, trains cnn-small on fashion-mnist, and measures the training step rate
# in a quiet window, in a window while wrk polls GET /v1/jobs/1 from 16 connections, and in a
# second quiet window. Prints wrk's requests/s and latency percentiles, the step rates and the
# ratio loaded / quiet (mean of the two quiet windows), and writes
# bench/results/<UTC stamp>-poll.md.
#
#   bench/poll.sh                    # about a minute and a half
#
# Environment: THAWD (binary; default build-release/server/thawd, built if missing),
# WINDOW (seconds per window, 20), CONNS (wrk connections, 16), WRK_THREADS (2).
# Targets (issue 7): slowdown < 5% and >= 10,000 requests/s. On a 2-core machine wrk itself
# competes with training for CPU, so the measured slowdown is an upper bound.
set -eu

cd "$(dirname "$0")/.."
THAWD=${THAWD:-build-release/server/thawd}
WINDOW=${WINDOW:-20}
CONNS=${CONNS:-16}
WRK_THREADS=${WRK_THREADS:-2}

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y wrk >/dev/null
    else
        sudo apt-get install -y wrk >/dev/null
    fi
fi
if ! [ -x "$THAWD" ]; then
    bdir=$(dirname "$(dirname "$THAWD")")
    [ -d "$bdir" ] || meson setup "$bdir" --buildtype=release -Dtests=false >/dev/null
    ninja -C "$bdir" server/thawd >/dev/null
fi

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/thawd-poll.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

"$THAWD" --host 127.0.0.1 --port 0 --data-dir "$TMP/data" >"$TMP/log" 2>&1 &
PID=$!

PORT=
i=0
while [ -z "$PORT" ]; do
    PORT=$(sed -n 's/.*url=http:\/\/127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/log" | head -n 1)
    i=$((i + 1))
    if [ -z "$PORT" ] && { [ $i -gt 300 ] || ! kill -0 "$PID" 2>/dev/null; }; then
        echo "poll: daemon did not start:" >&2
        cat "$TMP/log" >&2
        exit 1
    fi
    [ -n "$PORT" ] || sleep 0.1
done
BASE=http://127.0.0.1:$PORT

i=0
until curl -sf "$BASE/v1/datasets" | grep -q '"name":"fashion-mnist"[^}]*"state":"ready"'; do
    i=$((i + 1))
    [ $i -le 600 ] || { echo "poll: fashion-mnist never became ready" >&2; exit 1; }
    sleep 0.1
done

SPEC='{"model":{"arch":"cnn-small"},"data":{"dataset":"fashion-mnist","per_class_limit":1000},"batch_size":128,"stages":[{"op":"fit","epochs":50,"lr":0.001}]}'
curl -sf -H 'Content-Type: application/json' -d "$SPEC" "$BASE/v1/jobs" >/dev/null

job() { curl -sf "$BASE/v1/jobs/1"; }
step() { job | sed -n 's/.*"step":\([0-9][0-9]*\).*/\1/p'; }
now() { date +%s.%N; }

# Running, and a few steps past the start (model build, data load, first-step warm-up).
i=0
until job | grep -q '"state":"running"' && [ "$(step)" -ge 20 ]; do
    i=$((i + 1))
    [ $i -le 1200 ] || { echo "poll: job never started training" >&2; exit 1; }
    sleep 0.1
done

quiet() { # prints "steps seconds"
    s0=$(step); t0=$(now)
    sleep "$WINDOW"
    s1=$(step); t1=$(now)
    echo "$((s1 - s0)) $(echo "$t1 - $t0" | bc -l)"
}

# shellcheck disable=SC2046 # "steps seconds" split on purpose
set -- $(quiet)
Q1_STEPS=$1 Q1_SECS=$2
s0=$(step); t0=$(now)
wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WINDOW}s" --latency "$BASE/v1/jobs/1" >"$TMP/wrk.txt"
s1=$(step); t1=$(now)
L_STEPS=$((s1 - s0)) L_SECS=$(echo "$t1 - $t0" | bc -l)
# shellcheck disable=SC2046 # "steps seconds" split on purpose
set -- $(quiet)
Q2_STEPS=$1 Q2_SECS=$2

job | grep -q '"state":"running"' || { echo "poll: job left running state during the run" >&2; exit 1; }

RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk.txt")
pct() { awk -v p="$1%" '$1 == p { print $2 }' "$TMP/wrk.txt"; }
P50=$(pct 50) P90=$(pct 90) P99=$(pct 99)
ERRS=$(awk '/Non-2xx|Socket errors/' "$TMP/wrk.txt")
REQS=$(awk '/requests in/ { print $1 }' "$TMP/wrk.txt")

rate() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
Q1=$(rate "$Q1_STEPS" "$Q1_SECS")
L=$(rate "$L_STEPS" "$L_SECS")
Q2=$(rate "$Q2_STEPS" "$Q2_SECS")
Q=$(echo "($Q1 + $Q2) / 2" | bc -l)
RATIO=$(printf '%.3f' "$(echo "$L / $Q" | bc -l)")
SLOW=$(printf '%.1f' "$(echo "(1 - $L / $Q) * 100" | bc -l)")

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUTF=bench/results/$STAMP-poll.md
mkdir -p bench/results
GIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "# Daemon under status polling ($STAMP)"
    echo
    echo "\`bench/poll.sh\` at $GIT, $(nproc) cores, load average before: $LOAD0."
    echo "Job: cnn-small, fashion-mnist 1000/class, batch 128, Adam lr 1e-3 (\`$SPEC\`)."
    echo "Load: \`wrk -t$WRK_THREADS -c$CONNS -d${WINDOW}s --latency $BASE/v1/jobs/1\` (loopback)."
    echo
    echo "| window | steps | seconds | steps/s |"
    echo "|---|---:|---:|---:|"
    printf '| quiet 1 | %s | %.1f | %s |\n' "$Q1_STEPS" "$Q1_SECS" "$Q1"
    printf '| polled | %s | %.1f | %s |\n' "$L_STEPS" "$L_SECS" "$L"
    printf '| quiet 2 | %s | %.1f | %s |\n' "$Q2_STEPS" "$Q2_SECS" "$Q2"
    echo
    echo "- status requests: $REQS in ${WINDOW} s, **$RPS requests/s**${ERRS:+ ($ERRS)}"
    echo "- latency p50 $P50, p90 $P90, p99 $P99"
    echo "- step rate polled / quiet (mean of both quiet windows): **$RATIO** (slowdown $SLOW%)"
    echo
    echo '```'
    cat "$TMP/wrk.txt"
    echo '```'
} >"$OUTF"

echo "requests/s      $RPS ($REQS requests)"
echo "latency         p50 $P50  p90 $P90  p99 $P99"
[ -z "$ERRS" ] || echo "wrk errors      $ERRS"
echo "step rate       quiet $Q1, polled $L, quiet $Q2 steps/s"
echo "ratio           $RATIO (polled / mean quiet; slowdown $SLOW%)"
echo "written         $OUTF"
