#!/usr/bin/env python3
"""Paired runs: PyTorch and thawd on the same config back to back, several rounds.

usage: pairs.py --thawd BIN [--pytorch /usr/bin/python3] [--rounds 3] [--models m1]
                [--batches 128] [--modes train,frozen_bn,frozen_nograd,infer]
                [--repeats 3] [--iters 4] [--warmup 2] [--threads 2] [--json OUT]

On a shared machine the load changes within minutes, so run.sh's "all of PyTorch, then all
of thawd" can compare the two sides under different loads. Here each round runs one config
on PyTorch (bench/torch_ref.py) and immediately after on thawd (BIN, bench/thawd_bench.c),
alternating which side goes first, and the ratio thawd/PyTorch is taken within the round.
Printed: per config the median over rounds of each side's median images/s, the median and
range of the per-round ratios, and both peak RSS values. Standard library only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return None, (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
    doc = json.loads(p.stdout)
    e = doc["entries"][0]
    return (None, e["error"]) if "error" in e else (e, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thawd", required=True)
    ap.add_argument("--pytorch", default="/usr/bin/python3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="m1")
    ap.add_argument("--batches", default="")
    ap.add_argument("--modes", default="train,frozen_bn,frozen_nograd,infer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(a.threads)
    common = ["--repeats", str(a.repeats), "--iters", str(a.iters), "--warmup", str(a.warmup),
              "--threads", str(a.threads)]
    defaults = {"m1": "128", "resnet18": "32"}
    results = []
    for model in a.models.split(","):
        for batch in (a.batches or defaults.get(model, "128")).split(","):
            for mode in a.modes.split(","):
                cfg = ["--models", model, "--batches", batch, "--modes", mode] + common
                rounds = []
                for r in range(a.rounds):
                    sides = [("pytorch", [a.pytorch, os.path.join(HERE, "torch_ref.py")] + cfg),
                             ("thawd", [a.thawd] + cfg)]
                    if r % 2:
                        sides.reverse()
                    got = {}
                    for name, cmd in sides:
                        e, err = run(cmd, env)
                        if err:
                            print("%s %s %s %s: %s" % (name, model, batch, mode, err),
                                  file=sys.stderr)
                        got[name] = e
                    if got["pytorch"] and got["thawd"]:
                        rounds.append(got)
                if not rounds:
                    continue
                med = {s: statistics.median(g[s]["images_per_s"]["median"] for g in rounds)
                       for s in ("pytorch", "thawd")}
                ratios = sorted(g["thawd"]["images_per_s"]["median"] /
                                g["pytorch"]["images_per_s"]["median"] for g in rounds)
                rss = {s: statistics.median(g[s]["peak_rss_mib"] for g in rounds)
                       for s in ("pytorch", "thawd")}
                row = {"model": model, "batch": int(batch), "mode": mode, "rounds": len(rounds),
                       "pytorch_images_per_s": med["pytorch"], "thawd_images_per_s": med["thawd"],
                       "ratio_median": statistics.median(ratios), "ratio_min": ratios[0],
                       "ratio_max": ratios[-1], "pytorch_rss_mib": rss["pytorch"],
                       "thawd_rss_mib": rss["thawd"],
                       "loadavg": [x for g in rounds for x in g["pytorch"].get("loadavg", [])]}
                results.append(row)
                print("%-8s %4s %-13s pytorch %7.1f thawd %7.1f  ratio %.2f (%.2f-%.2f)  "
                      "RSS %4.0f / %4.0f MiB" % (model, batch, mode, med["pytorch"],
                                                 med["thawd"], row["ratio_median"], ratios[0],
                                                 ratios[-1], rss["pytorch"], rss["thawd"]),
                      flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"schema": "thawd-bench-pairs/1", "settings": vars(a), "results": results},
                      f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
