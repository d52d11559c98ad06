#!/bin/sh
# poll.sh: the daemon under status polling (issue 7 item 2). Starts thawd on loopback with a
# temporary data dir, trains cnn-small on fashion-mnist, and measures the training step rate
# in a quiet window, in a window while wrk polls GET /v1/jobs/1 from 16 connections, and in a
# second quiet window. Prints wrk's requests/s and latency percentiles, the step rates and the
# ratio loaded / quiet (mean of the two quiet windows), and writes
# bench/results/<UTC stamp>-poll.md. It also reads the daemon's per-thread CPU accounting
# (/proc/PID/task/*/schedstat): the worker's CPU time per step and run-queue wait in each
# window, and the HTTP threads' CPU time per request.
#
#   bench/poll.sh                    # default settings, about a minute and a half
#   THAWD_ARGS="--blas-threads 1 --worker-cpus 0 --http-cpus 1" WRK_CPUS=1 bench/poll.sh
#                                    # training on core 0, serving (and wrk) on core 1
#
# Environment: THAWD (binary; default build-release/server/thawd, built if missing),
# WINDOW (seconds per window, 20), CONNS (wrk connections, 16), WRK_THREADS (2),
# THAWD_ARGS (extra daemon options; default none), WRK_CPUS (run wrk under
# `taskset -c WRK_CPUS`; default unpinned), WRK_DELAY_MS (each connection waits this many ms
# before its next request, through a wrk Lua script: a paced poller instead of wrk's flat
# out; 1 ms with 16 connections gives roughly 10,000 requests/s; default none).
# Targets (issue 7): slowdown < 5% and >= 10,000 requests/s. wrk runs on the same machine
# and takes CPU like any other process; on a machine shared with other work, a window's step
# rate also depends on what else runs, which the worker's run-queue wait shows.
set -eu

cd "$(dirname "$0")/.."
THAWD=${THAWD:-build-release/server/thawd}
WINDOW=${WINDOW:-20}
CONNS=${CONNS:-16}
WRK_THREADS=${WRK_THREADS:-2}
THAWD_ARGS=${THAWD_ARGS:-}
WRK_CPUS=${WRK_CPUS:-}
WRK_DELAY_MS=${WRK_DELAY_MS:-}
WRK=wrk
[ -z "$WRK_CPUS" ] || WRK="taskset -c $WRK_CPUS wrk"

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

# shellcheck disable=SC2086 # THAWD_ARGS is a list of options on purpose
"$THAWD" --host 127.0.0.1 --port 0 --data-dir "$TMP/data" $THAWD_ARGS >"$TMP/log" 2>&1 &
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
if [ -n "$WRK_DELAY_MS" ]; then
    echo "function delay() return $WRK_DELAY_MS end" >"$TMP/delay.lua"
    WRK="$WRK -s $TMP/delay.lua"
fi

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

# Per-thread CPU accounting from /proc/PID/task/*/schedstat (ns on CPU, ns waiting on a run
# queue): the training worker is the thread named thawd with the most CPU time; HTTP threads
# are MHD's. With other load on the machine these say whether a slower window means less CPU
# for training (waiting) or more CPU per step (interference), and what a request costs.
WORKER_TID=$(for t in /proc/"$PID"/task/*; do
    [ "$(cat "$t/comm")" = thawd ] && echo "$(cut -d" " -f1 "$t/schedstat") ${t##*/}"
done | sort -n | tail -n 1 | cut -d" " -f2)
sample() { # prints "step seconds worker_cpu_ns worker_wait_ns http_cpu_ns"
    w=$(cat "/proc/$PID/task/$WORKER_TID/schedstat")
    h=$(for t in /proc/"$PID"/task/*; do
        case "$(cat "$t/comm")" in MHD-*) cut -d" " -f1 "$t/schedstat" ;; esac
    done | awk '{ s += $1 } END { printf "%.0f", s }')
    echo "$(step) $(now) ${w% *} $h"
}
window() { # runs "$@" (output to $TMP/window.txt); prints "steps seconds worker_cpu_s
    # worker_wait_s http_cpu_s"
    a=$(sample)
    "$@" >"$TMP/window.txt"
    b=$(sample)
    echo "$a $b" | awk '{ printf "%d %.3f %.3f %.3f %.3f\n", $6 - $1, $7 - $2, ($8 - $3) / 1e9,
        ($9 - $4) / 1e9, ($10 - $5) / 1e9 }'
}

# shellcheck disable=SC2046 # fields split on purpose
set -- $(window sleep "$WINDOW")
Q1_STEPS=$1 Q1_SECS=$2 Q1_CPU=$3 Q1_WAIT=$4
# shellcheck disable=SC2046,SC2086 # fields split on purpose; WRK is a command with arguments
set -- $(window $WRK -t"$WRK_THREADS" -c"$CONNS" -d"${WINDOW}s" --latency "$BASE/v1/jobs/1")
L_STEPS=$1 L_SECS=$2 L_CPU=$3 L_WAIT=$4 L_HTTP=$5
cp "$TMP/window.txt" "$TMP/wrk.txt"
# shellcheck disable=SC2046 # fields split on purpose
set -- $(window sleep "$WINDOW")
Q2_STEPS=$1 Q2_SECS=$2 Q2_CPU=$3 Q2_WAIT=$4

job | grep -q '"state":"running"' || { echo "poll: job left running state during the run" >&2; exit 1; }

RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk.txt")
pct() { awk -v p="$1%" '$1 == p { print $2 }' "$TMP/wrk.txt"; }
P50=$(pct 50) P90=$(pct 90) P99=$(pct 99)
ERRS=$(awk '/Non-2xx|Socket errors/' "$TMP/wrk.txt")
REQS=$(awk '/requests in/ { print $1 }' "$TMP/wrk.txt")

rate() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
per() { [ "$2" -gt 0 ] && printf '%.0f' "$(echo "$1 * 1000 / $2" | bc -l)" || echo "-"; }
# The same ratio from the worker's CPU time per step instead of wall time: 1.000 when
# polling leaves each step's cost alone and any slowdown is time spent waiting for a CPU.
QCPU=$(echo "($Q1_CPU + $Q2_CPU) / ($Q1_STEPS + $Q2_STEPS)" | bc -l)
LCPU=$(echo "$L_CPU / $L_STEPS" | bc -l)
RATIO_CPU=$(printf '%.3f' "$(echo "$QCPU / $LCPU" | bc -l)")
US_REQ=$(printf '%.1f' "$(echo "$L_HTTP * 1000000 / $REQS" | bc -l)")
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
    echo "Daemon: \`thawd ${THAWD_ARGS:-(default settings)}\`; $(sed -n 's/.* ready .*\(workers=[0-9]* blas_threads=[0-9]*\).*/\1/p' "$TMP/log" | head -n 1)."
    echo "Load: \`$WRK -t$WRK_THREADS -c$CONNS -d${WINDOW}s --latency $BASE/v1/jobs/1\` (loopback${WRK_DELAY_MS:+; a Lua delay() of $WRK_DELAY_MS ms before each request})."
    echo
    echo "| window | steps | seconds | steps/s | worker CPU s | worker run-queue wait s | CPU ms/step |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    row() { printf '| %s | %s | %.1f | %s | %.2f | %.2f | %s |\n' "$1" "$2" "$3" "$4" "$5" "$6" "$(per "$5" "$2")"; }
    row "quiet 1" "$Q1_STEPS" "$Q1_SECS" "$Q1" "$Q1_CPU" "$Q1_WAIT"
    row "polled" "$L_STEPS" "$L_SECS" "$L" "$L_CPU" "$L_WAIT"
    row "quiet 2" "$Q2_STEPS" "$Q2_SECS" "$Q2" "$Q2_CPU" "$Q2_WAIT"
    echo
    echo "- status requests: $REQS in ${WINDOW} s, **$RPS requests/s**${ERRS:+ ($ERRS)}"
    echo "- latency p50 $P50, p90 $P90, p99 $P99"
    echo "- HTTP threads' CPU in the polled window: ${L_HTTP} s, $US_REQ µs per request"
    echo "- step rate polled / quiet (mean of both quiet windows): **$RATIO** (slowdown $SLOW%)"
    echo "- the same from the worker's CPU time per step (quiet / polled): $RATIO_CPU"
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
echo "worker CPU/step quiet $(per "$Q1_CPU" "$Q1_STEPS"), polled $(per "$L_CPU" "$L_STEPS"), quiet $(per "$Q2_CPU" "$Q2_STEPS") ms; run-queue wait $Q1_WAIT / $L_WAIT / $Q2_WAIT s"
echo "CPU-time ratio  $RATIO_CPU (worker CPU per step, quiet / polled)"
echo "HTTP CPU        $US_REQ µs per request"
echo "written         $OUTF"
