#!/bin/sh
# t1_thawd.sh: DESIGN.md section 7's transfer task T1, run with `thawd run`, next to the PyTorch
# reference tools/t1_reference.py (same data, schedules, batch sizes and aggregation).
#
#   nice -n 19 bench/t1_thawd.sh                 # 5 seeds (~1 h on a busy 2-core VM)
#   SEEDS=2 QUICK=1 bench/t1_thawd.sh            # smoke run
#
# Environment: THAWD (binary, default build/server/thawd), OUT (work dir, default
# /tmp/thawd-t1), SEEDS (5), THREADS (BLAS threads, 2), SOURCE_SEED (0), QUICK (1 = short).
# To share the baselines with a second process (e.g. THREADS=1 each on two cores): RESULTS
# (its own results file), SEED_LIST ("4 3 2 1 0"), SCRATCH_LRS, EPOCH_LIST, SKIP_TRANSFER=1 pick
# a subset; finished runs in OUT are reused by whichever driver reaches them later.
#
# source   cnn-small from scratch on all training images of classes {1,3,5,7,8,9} (relabelled
#          0-5), normalised 0.2402 / 0.3424, fit_one_cycle(2, 3e-3), batch 128, validated on
#          those classes' 6,000 test images; saved once (reused across seeds, as the reference).
# transfer the source body (body_only: new head), freeze, fit_one_cycle(3, 1e-2), unfreeze,
#          fit_one_cycle(10, slice(1e-4, 1e-2)), batch 8, on the first 20 training images of
#          each of {0,2,4,6}; accuracy on their 4,000 test images after the last epoch.
# scratch  cnn-small from scratch on the same 80 images: fit_one_cycle(E, lr) for lr in
#          {1e-3, 3e-3, 1e-2}, E in {13, 52} (the transfer run's steps and 4x as many); the
#          best configuration is the one with the best mean over seeds.
set -eu

THAWD=${THAWD:-build/server/thawd}
OUT=${OUT:-/tmp/thawd-t1}
SEEDS=${SEEDS:-5}
THREADS=${THREADS:-2}
SOURCE_SEED=${SOURCE_SEED:-0}
QUICK=${QUICK:-0}

if [ "$QUICK" = 1 ]; then
    SRC_EPOCHS=1 E_HEAD=1 E_ALL=3 LRS="1e-2"
else
    SRC_EPOCHS=2 E_HEAD=3 E_ALL=10 LRS="1e-3 3e-3 1e-2"
fi
E_SUM=$((E_HEAD + E_ALL))
LRS=${SCRATCH_LRS:-$LRS}
EPOCH_LIST=${EPOCH_LIST:-"$E_SUM $((4 * E_SUM))"}
SEED_LIST=${SEED_LIST:-$(seq 0 $((SEEDS - 1)))}
SKIP_TRANSFER=${SKIP_TRANSFER:-0}
NORM='"normalize":{"mean":0.2402,"std":0.3424}'
TARGET='"data":{"source":"fashion-mnist","classes":[0,2,4,6],"per_class_limit":20,'"$NORM"'}'

mkdir -p "$OUT"
RESULTS=${RESULTS:-"$OUT/results.tsv"}
: >"$RESULTS"

# Runs a spec (unless an earlier run of the same spec finished: the driver can be stopped and
# restarted) and prints the accuracy column of every epoch row of thawd run's table.
run_spec() { # name spec-json
    if ! [ -f "$OUT/$1.log" ] || ! grep -q '^done$' "$OUT/$1.log" ||
        [ "$(cat "$OUT/$1.json" 2>/dev/null)" != "$2" ]; then
        printf '%s\n' "$2" >"$OUT/$1.json"
        "$THAWD" run "$OUT/$1.json" --out "$OUT/$1-out" --threads "$THREADS" >"$OUT/$1.log" 2>&1 || {
            echo "t1_thawd: $1 failed, see $OUT/$1.log" >&2
            exit 1
        }
    fi
    awk '/^[0-9]+ / { print $4 }' "$OUT/$1.log"
}

SRC="$OUT/source-s$SOURCE_SEED-e$SRC_EPOCHS-out/source.safetensors"
if [ ! -f "$SRC" ]; then
    t0=$(date +%s)
    acc=$(run_spec "source-s$SOURCE_SEED-e$SRC_EPOCHS" '{"name":"t1-source","seed":'"$SOURCE_SEED"',
 "batch_size":128,"model":{"arch":"cnn-small"},
 "data":{"source":"fashion-mnist","classes":[1,3,5,7,8,9],'"$NORM"'},
 "stages":[{"op":"fit_one_cycle","epochs":'"$SRC_EPOCHS"',"lr_max":0.003},
           {"op":"save","name":"source"}]}' | tail -n 1)
    echo "source seed $SOURCE_SEED: $SRC_EPOCHS epochs in $(($(date +%s) - t0)) s, accuracy $acc"
    printf 'source\t%s\t-\t-\t%s\n' "$SOURCE_SEED" "$acc" >>"$RESULTS"
fi

# All transfer runs first, then the scratch baselines configuration by configuration (the
# short schedules first), so a partial run already has complete transfer numbers.
for seed in $SEED_LIST; do
    [ "$SKIP_TRANSFER" = 1 ] && break
    accs=$(run_spec "transfer-s$seed" '{"name":"t1-transfer","seed":'"$seed"',"batch_size":8,
 "model":{"arch":"cnn-small","weights":"'"$SRC"'","body_only":true},'"$TARGET"',
 "stages":[{"op":"freeze"},{"op":"fit_one_cycle","epochs":'"$E_HEAD"',"lr_max":0.01},
           {"op":"unfreeze"},
           {"op":"fit_one_cycle","epochs":'"$E_ALL"',"lr_max":{"slice":[0.0001,0.01]}}]}')
    head=$(printf '%s\n' "$accs" | sed -n "${E_HEAD}p")
    final=$(printf '%s\n' "$accs" | tail -n 1)
    printf 'transfer\t%s\t-\t-\t%s\n' "$seed" "$final" >>"$RESULTS"
    printf 'head\t%s\t-\t-\t%s\n' "$seed" "$head" >>"$RESULTS"
    echo "seed $seed: transfer $final (after head phase $head)"
done
for ep in $EPOCH_LIST; do
    for lr in $LRS; do
        line="scratch lr $lr $ep epochs:"
        for seed in $SEED_LIST; do
            a=$(run_spec "scratch-s$seed-lr$lr-e$ep" '{"name":"t1-scratch","seed":'"$seed"',
 "batch_size":8,"model":{"arch":"cnn-small"},'"$TARGET"',
 "stages":[{"op":"fit_one_cycle","epochs":'"$ep"',"lr_max":'"$lr"'}]}' | tail -n 1)
            printf 'scratch\t%s\t%s\t%s\t%s\n' "$seed" "$lr" "$ep" "$a" >>"$RESULTS"
            line="$line $a"
        done
        echo "$line"
    done
done

# Summary: mean +- sample std over seeds, in percent; best scratch = best mean.
awk -F '\t' -v steps_per_epoch=10 '
function add(k, v) { n[k]++; s[k] += v; q[k] += v * v; if (!(k in mx) || v > mx[k]) mx[k] = v;
                     if (!(k in mn) || v < mn[k]) mn[k] = v }
function mean(k) { return 100 * s[k] / n[k] }
function sd(k) { return n[k] > 1 ? 100 * sqrt((q[k] - s[k] * s[k] / n[k]) / (n[k] - 1)) : 0 }
$1 == "transfer" || $1 == "head" { add($1, $5) }
$1 == "scratch" { k = "scratch lr " $3 " " $4 * steps_per_epoch " steps"; add(k, $5); keys[k] = 1 }
END {
    printf "transfer:                %.1f%% +- %.1f (%d seeds, worst %.1f%%)\n", mean("transfer"),
           sd("transfer"), n["transfer"], 100 * mn["transfer"]
    printf "after the frozen phase:  %.1f%% +- %.1f\n", mean("head"), sd("head")
    best = ""
    for (k in keys) {
        printf "%-24s %.1f%% +- %.1f (best run %.1f%%)\n", k ":", mean(k), sd(k), 100 * mx[k]
        if (best == "" || mean(k) > mean(best)) best = k
    }
    printf "best scratch (%s): %.1f%% +- %.1f\n", best, mean(best), sd(best)
    printf "transfer - best scratch: %+.1f points\n", mean("transfer") - mean(best)
}' "$RESULTS" | tee "$OUT/summary.txt"
