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
# `taskset -c WRK_CPUS`; default unpinned), ROUNDS (polled windows, each between two quiet
# ones; with more than one the summary is the median over them; default 1), WRK_DELAY_MS (each connection waits this many ms
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
ROUNDS=${ROUNDS:-1}
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

# Validation on 2% of the training images (not the 10,000-image test split): the epoch-end
# pass then takes a fraction of a second instead of seconds with no steps, which made
# single windows swing by tens of percent.
SPEC='{"model":{"arch":"cnn-small"},"data":{"dataset":"fashion-mnist","per_class_limit":1000,"valid":{"pct":0.02,"seed":1}},"batch_size":128,"stages":[{"op":"fit","epochs":50,"lr":0.001}]}'
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

# Windows: quiet, polled, quiet, ... (ROUNDS polled windows, each between two quiet ones).
# $TMP/windows: "kind steps seconds worker_cpu_s worker_wait_s http_cpu_s" per window;
# $TMP/wrk.<r>.txt: wrk's report of polled window r.
: >"$TMP/windows"
r=1
while :; do
    echo "quiet $(window sleep "$WINDOW")" >>"$TMP/windows"
    [ "$r" -le "$ROUNDS" ] || break
    # shellcheck disable=SC2086 # WRK is a command with arguments
    echo "polled $(window $WRK -t"$WRK_THREADS" -c"$CONNS" -d"${WINDOW}s" --latency "$BASE/v1/jobs/1")" >>"$TMP/windows"
    cp "$TMP/window.txt" "$TMP/wrk.$r.txt"
    r=$((r + 1))
done

job | grep -q '"state":"running"' || { echo "poll: job left running state during the run" >&2; exit 1; }

# Per polled window r: requests, requests/s, p50/p90/p99, errors; its step rate over the
# mean of the two quiet windows around it; the same from CPU time per step.
r=1
: >"$TMP/rounds"
while [ "$r" -le "$ROUNDS" ]; do
    f=$TMP/wrk.$r.txt
    pct() { awk -v p="$1%" '$1 == p { print $2 }' "$f"; }
    errs=$(awk '/Non-2xx|Socket errors/ { printf "%s%s", sep, $0; sep = "; " }' "$f")
    awk -v r="$r" -v reqs="$(awk '/requests in/ { print $1 }' "$f")" \
        -v rps="$(awk '/^Requests\/sec:/ { print $2 }' "$f")" -v p50="$(pct 50)" \
        -v p90="$(pct 90)" -v p99="$(pct 99)" -v errs="${errs:-none}" '
        { kind[NR] = $1; st[NR] = $2; sec[NR] = $3; cpu[NR] = $4; http[NR] = $6 }
        END {
            l = 2 * r; q1 = l - 1; q2 = l + 1
            rate = st[l] / sec[l]; qrate = (st[q1] / sec[q1] + st[q2] / sec[q2]) / 2
            qcpu = (cpu[q1] + cpu[q2]) / (st[q1] + st[q2]); lcpu = st[l] ? cpu[l] / st[l] : 0
            printf "%d\t%s\t%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.1f\t%s\n", r, reqs, rps, p50, p90, p99,
                rate / qrate, lcpu ? qcpu / lcpu : 0, reqs ? http[l] * 1e6 / reqs : 0, errs
        }' "$TMP/windows" >>"$TMP/rounds"
    r=$((r + 1))
done
median() { # median of column $1 of $TMP/rounds
    cut -f"$1" "$TMP/rounds" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
RPS=$(median 3) RATIO=$(median 7) RATIO_CPU=$(median 8) US_REQ=$(median 9)

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUTF=bench/results/$STAMP-poll.md
mkdir -p bench/results
GIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "# Daemon under status polling ($STAMP)"
    echo
    echo "\`bench/poll.sh\` at $GIT, $(nproc) cores, load average before: $LOAD0, after: $(cut -d" " -f1-3 /proc/loadavg)."
    echo "Job: cnn-small, fashion-mnist 1000/class (2% held out for validation), batch 128, Adam lr 1e-3 (\`$SPEC\`)."
    echo "Daemon: \`$THAWD ${THAWD_ARGS:-(default settings)}\`; $(sed -n 's/.* ready .*\(workers=[0-9]* blas_threads=[0-9]*\).*/\1/p' "$TMP/log" | head -n 1)."
    echo "Load: \`$WRK -t$WRK_THREADS -c$CONNS -d${WINDOW}s --latency $BASE/v1/jobs/1\` (loopback${WRK_DELAY_MS:+; a Lua delay() of $WRK_DELAY_MS ms before each request}); $ROUNDS polled window(s), each between two quiet ones."
    echo
    echo "| window | steps | seconds | steps/s | worker CPU s | worker run-queue wait s | CPU ms/step |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    awk '{ printf "| %s | %d | %.1f | %.2f | %.2f | %.2f | %s |\n", $1, $2, $3, $2 / $3, $4, $5,
        $2 ? sprintf("%.0f", $4 * 1000 / $2) : "-" }' "$TMP/windows"
    echo
    echo "| polled window | requests | requests/s | p50 | p90 | p99 | step rate polled / quiet | CPU per step quiet / polled | HTTP CPU µs per request | wrk errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$TMP/rounds"
    echo
    echo "- **$RPS requests/s**, step rate polled / quiet **$RATIO** (medians over the polled windows;"
    echo "  quiet = mean of the quiet windows before and after); from the worker's CPU time per"
    echo "  step instead: $RATIO_CPU; HTTP threads' CPU $US_REQ µs per request."
    for f in "$TMP"/wrk.*.txt; do
        echo
        echo '```'
        cat "$f"
        echo '```'
    done
} >"$OUTF"

awk '{ printf "%-7s %3d steps in %5.1f s = %5.2f steps/s; worker CPU %.0f ms/step, run-queue wait %.1f s\n",
    $1, $2, $3, $2 / $3, $2 ? $4 * 1000 / $2 : 0, $5 }' "$TMP/windows"
awk -F'\t' '{ printf "polled window %s: %s requests/s, p50 %s p90 %s p99 %s, ratio %s (CPU time: %s), %s µs HTTP CPU per request, wrk errors: %s\n",
    $1, $3, $4, $5, $6, $7, $8, $9, $10 }' "$TMP/rounds"
echo "requests/s      $RPS (median)"
echo "ratio           $RATIO (polled / quiet step rate, median; from CPU time per step: $RATIO_CPU)"
echo "written         $OUTF"
