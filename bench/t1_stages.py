#!/usr/bin/env python3
"""t1_stages.py: wall time of each stage of the T1 seed workflow, thawd against PyTorch.

usage: t1_stages.py --thawd BIN [--pytorch /usr/bin/python3] [--repeats 3] [--threads 2]
                    [--work /tmp/thawd-t1stages] [--results bench/results] [--quick]

The workflow of DESIGN.md section 7 (T1), seed 0, done end to end on each side, the sides
alternating (PyTorch, thawd, PyTorch, thawd, ...):
  thawd    two `thawd run --timeline FILE` jobs: the source job (fit_one_cycle(2, 3e-3) on the
           36,000 source images, batch 128, save) and the transfer job (the source body with a
           new head, freeze, lr_find, fit_one_cycle(3, 1e-2), unfreeze,
           fit_one_cycle(10, slice(1e-4, 1e-2)), batch 8, save); stage times come from the
           timeline's event times (see thawd_stages);
  PyTorch  bench/t1_torch.py, the same steps in one process, timed with time.perf_counter.
Both validate after every epoch, as fastai does (6,000 source / 4,000 target test images).
Each process's wall time is taken here; what no stage covers (interpreter start and
`import torch`, exec and spec parsing, exit) is the row "start-up and exit".

Prints a table (medians and min-max over the repeats, ratio PyTorch time / thawd time: above 1
means thawd is faster), the accuracies of both sides and the load average, and writes
<results>/<UTC stamp>-t1stages.{json,md}. Standard library only.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NORM = {"mean": 0.2402, "std": 0.3424}

# (key, label); thawd cannot split its job set-up, see thawd_stages
STAGES = [
    ("data", "data loading and preparation"),
    ("pretrain", "pretrain the source model: fit_one_cycle(2, 3e-3), 36,000 images, batch 128"),
    ("save_source", "save the source model"),
    ("load_body", "load the source body into a new model (+ new head)"),
    ("freeze", "freeze"),
    ("lr_find", "lr_find (1e-7 to 10, 100 iterations, batch 8)"),
    ("fit_frozen", "fit_one_cycle(3, 1e-2), frozen"),
    ("unfreeze", "unfreeze"),
    ("fit_unfrozen", "fit_one_cycle(10, slice(1e-4, 1e-2)), without its last validation"),
    ("final_valid", "final validation on the 4,000 target test images"),
    ("save", "save weights"),
    ("startup", "start-up and exit (interpreter + import torch / exec + spec parsing)"),
]


def specs(quick, source_weights):
    src_epochs, e_head, e_all = (1, 1, 3) if quick else (2, 3, 10)
    source = {
        "name": "t1-source", "seed": 0, "batch_size": 128, "model": {"arch": "cnn-small"},
        "data": {"source": "fashion-mnist", "classes": [1, 3, 5, 7, 8, 9], "normalize": NORM},
        "stages": [{"op": "fit_one_cycle", "epochs": src_epochs, "lr_max": 0.003},
                   {"op": "save", "name": "source"}]}
    transfer = {
        "name": "t1-transfer", "seed": 0, "batch_size": 8,
        "model": {"arch": "cnn-small", "weights": source_weights, "body_only": True},
        "data": {"source": "fashion-mnist", "classes": [0, 2, 4, 6], "per_class_limit": 20,
                 "normalize": NORM},
        "stages": [{"op": "freeze"}, {"op": "lr_find"},
                   {"op": "fit_one_cycle", "epochs": e_head, "lr_max": 0.01},
                   {"op": "unfreeze"},
                   {"op": "fit_one_cycle", "epochs": e_all, "lr_max": {"slice": [0.0001, 0.01]}},
                   {"op": "save", "name": "transfer"}]}
    return source, transfer


def read_timeline(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def job_times(events):
    """From one job's timeline: set-up seconds (engine start to the first stage), and per stage
    index (op, seconds, events of the stage)."""
    t_run = next(e["t"] for e in events if e["event"] == "run")
    begins = [e for e in events if e["event"] == "stage_begin"]
    if not begins or not any(e["event"] == "end" and e["result"] == "success" for e in events):
        raise ValueError("the job did not finish")
    stages = {}
    for b in begins:
        i = b["stage"]
        end = next(e for e in events if e["event"] == "stage_end" and e["stage"] == i)
        evs = [e for e in events if e.get("stage") == i and b["t"] <= e["t"] <= end["t"]]
        stages[i] = (b["op"], end["t"] - b["t"], evs)
    return begins[0]["t"] - t_run, stages


def epoch_split(evs):
    """Validation seconds of each epoch (from the epoch's last training batch to its epoch
    event) and checkpoint seconds (from the epoch event to the checkpoint's artifact event)."""
    valid, ckpt, last_batch, last_epoch = [], 0.0, None, None
    for e in evs:
        if e["event"] == "batch":
            last_batch = e["t"]
        elif e["event"] == "epoch":
            valid.append(e["t"] - last_batch)
            last_epoch = e["t"]
        elif e["event"] == "artifact" and e.get("kind") == "checkpoint" and last_epoch:
            ckpt += e["t"] - last_epoch
    return valid, ckpt


def accuracy_of(evs):
    acc = [e["accuracy"] for e in evs if e["event"] == "epoch"]
    return acc[-1] if acc else None


def thawd_stages(src_tl, tr_tl, walls):
    """Stage seconds of one thawd round. The engine loads the data, builds the model and loads
    its weights before the first stage, in one step the timeline cannot split: both jobs'
    set-up is booked to "data" (it includes the transfer job's body loading; "load_body" is
    None)."""
    src_setup, src = job_times(src_tl)
    tr_setup, tr = job_times(tr_tl)
    want_src = ["fit_one_cycle", "save"]
    want_tr = ["freeze", "lr_find", "fit_one_cycle", "unfreeze", "fit_one_cycle", "save"]
    if [src[i][0] for i in sorted(src)] != want_src or [tr[i][0] for i in sorted(tr)] != want_tr:
        raise ValueError("unexpected stages in the timelines")
    valid_last, ckpt_last = epoch_split(tr[4][2])
    st = {
        "data": src_setup + tr_setup, "pretrain": src[0][1], "save_source": src[1][1],
        "load_body": None, "freeze": tr[0][1], "lr_find": tr[1][1], "fit_frozen": tr[2][1],
        "unfreeze": tr[3][1], "fit_unfrozen": tr[4][1] - valid_last[-1],
        "final_valid": valid_last[-1], "save": tr[5][1]}
    st["startup"] = sum(walls) - sum(v for v in st.values() if v is not None)
    lf = next((e for e in tr[1][2] if e["event"] == "lr_find"), {})
    valid = [epoch_split(s[2]) for s in (src[0], tr[2], tr[4])]
    return st, {
        "source_accuracy": accuracy_of(src[0][2]), "head_accuracy": accuracy_of(tr[2][2]),
        "accuracy": accuracy_of(tr[4][2]), "lr_find_points": lf.get("points"),
        "lr_find_valley": lf.get("valley"), "setup_source_s": src_setup,
        "setup_transfer_s": tr_setup, "validation_s": sum(sum(v) for v, _ in valid),
        "checkpoint_s": sum(c for _, c in valid)}


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_children():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(cmd, log, env, cpu):
    """Runs cmd, returns its wall seconds; adds its CPU seconds (user + system) to cpu[0]."""
    t0, c0 = time.perf_counter(), cpu_children()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    cpu[0] += cpu_children() - c0
    if p.returncode != 0:
        sys.exit("t1_stages: %s failed (exit %d), see %s" % (cmd[0], p.returncode, log))
    return wall


def run_thawd(a, r, env):
    d = os.path.join(a.work, "thawd-%d" % r)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    src_out = os.path.join(d, "source-out")
    source, transfer = specs(a.quick, os.path.join(src_out, "source.safetensors"))
    walls, tls, cpu = [], [], [0.0]
    for name, spec, out in (("source", source, src_out),
                            ("transfer", transfer, os.path.join(d, "transfer-out"))):
        path = os.path.join(d, name + ".json")
        with open(path, "w") as f:
            json.dump(spec, f, indent=1)
        tl = os.path.join(d, name + ".timeline")
        walls.append(run([a.thawd, "run", path, "--out", out, "--threads", str(a.threads),
                          "--timeline", tl], os.path.join(d, name + ".log"), env, cpu))
        tls.append(read_timeline(tl))
    st, info = thawd_stages(tls[0], tls[1], walls)
    info["wall_s"] = sum(walls)
    info["cpu_s"] = cpu[0]
    return st, info


def run_torch(a, r, env):
    d = os.path.join(a.work, "torch-%d" % r)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    js = os.path.join(d, "stages.json")
    cmd = [a.pytorch, os.path.join(HERE, "t1_torch.py"), "--json", js, "--out", d,
           "--threads", str(a.threads)] + (["--quick"] if a.quick else [])
    # PyTorch at its best, as in torch_ref.py: per-op buffers stay in glibc's heap instead
    # of fresh mmaps that page-fault every step (BENCHMARKS.md, "PyTorch at its best")
    env = dict(env)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 40))
    cpu = [0.0]
    wall = run(cmd, os.path.join(d, "log"), env, cpu)
    with open(js) as f:
        doc = json.load(f)
    st = {k: doc["stages"].get(k) for k, _ in STAGES if k != "startup"}
    st["startup"] = wall - sum(v for v in st.values() if v is not None)
    info = {k: doc[k] for k in ("source_accuracy", "head_accuracy", "accuracy",
                                "lr_find_points", "lr_find_valley", "import_s", "torch")}
    info["wall_s"] = wall
    info["cpu_s"] = cpu[0]
    return st, info


def stats(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def fmt_s(s):
    if s is None:
        return "-"
    m = s["median"]
    if m >= 10:
        f = "%.1f"
    elif m >= 0.1:
        f = "%.2f"
    else:
        f = "%.4f"
    return (f + " (" + f + "-" + f + ")") % (m, s["min"], s["max"])


def fmt_ratio(t, p):
    if not t or not p or t["median"] <= 0:
        return "-"
    return "%.2f" % (p["median"] / t["median"])


def table(rows):
    out = ["| stage | PyTorch s, median (min-max) | thawd s, median (min-max) | PyTorch/thawd |",
           "|---|---:|---:|---:|"]
    for key, label, p, t in rows:
        bold = "**" if key == "total" else ""
        out.append("| %s%s%s | %s | %s | %s%s%s |" % (bold, label, bold, fmt_s(p), fmt_s(t),
                                                      bold, fmt_ratio(t, p), bold))
    return out


def pct(v):
    return "-" if v is None else "%.2f%%" % (100 * v)


def report(a, rounds, started, final):
    """Summarises the rounds so far; writes <results>/<stamp>-t1stages.{json,md} (again after
    every round, so an interrupted run keeps what it measured). Prints the table if final."""
    def side_rounds(side):
        return [x for x in rounds if x["side"] == side]

    summary = {}
    for side in ("pytorch", "thawd"):
        rs = side_rounds(side)
        summary[side] = {k: stats([x["stages"][k] for x in rs]) for k, _ in STAGES}
        summary[side]["total"] = stats([x["wall_s"] for x in rs])
        summary[side]["cpu"] = stats([x.get("cpu_s") for x in rs])
        summary[side]["data+load_body"] = stats(
            [x["stages"]["data"] + (x["stages"]["load_body"] or 0) for x in rs])
        for k in ("source_accuracy", "head_accuracy", "accuracy", "lr_find_points"):
            summary[side][k] = [x[k] for x in rs]
    per_round_ratio = [p["wall_s"] / t["wall_s"]
                       for p, t in zip(side_rounds("pytorch"), side_rounds("thawd"))]
    loads = [v for x in rounds for v in x["loadavg"] if v is not None]

    rows = [(k, lbl, summary["pytorch"][k], summary["thawd"][k]) for k, lbl in STAGES]
    rows.insert(4, ("data+load_body", "data loading + loading the source body (comparable sum)",
                    summary["pytorch"]["data+load_body"], summary["thawd"]["data+load_body"]))
    rows.append(("total", "total (wall time of the processes)", summary["pytorch"]["total"],
                 summary["thawd"]["total"]))
    rows.append(("cpu", "CPU time of the processes (user + system)", summary["pytorch"]["cpu"],
                 summary["thawd"]["cpu"]))
    th = side_rounds("thawd")
    md = ["# T1 workflow: wall time per stage, thawd against PyTorch", "",
          "`bench/t1_stages.sh`%s, %s UTC, rounds: %d (PyTorch then thawd in each), %d threads; "
          "load average (1 min) %.1f-%.1f during the runs; thawd %s." % (
              " --quick" if a.quick else "", started.strftime("%Y-%m-%d %H:%M"), len(th),
              a.threads, min(loads) if loads else float("nan"),
              max(loads) if loads else float("nan"), a.version or "?"), ""]
    md += table(rows)
    md += ["", "Per-round total ratio (PyTorch/thawd): %s." % ", ".join(
        "%.2f" % x for x in per_round_ratio), ""]
    md += ["| accuracy | PyTorch | thawd |", "|---|---|---|"]
    for k, lbl in (("source_accuracy", "source model, 6,000 source test images"),
                   ("head_accuracy", "after the frozen fit (4,000 target test images)"),
                   ("accuracy", "final (4,000 target test images)")):
        md.append("| %s | %s | %s |" % (lbl, " ".join(pct(v) for v in summary["pytorch"][k]),
                                        " ".join(pct(v) for v in summary["thawd"][k])))
    md.append("| lr_find iterations | %s | %s |" % (
        " ".join(str(v) for v in summary["pytorch"]["lr_find_points"]),
        " ".join(str(v) for v in summary["thawd"]["lr_find_points"])))
    md += ["", "thawd's set-up (before the first stage: data, model, body weights) per round: "
           "source job %s s, transfer job %s s; validation after every epoch %s s in all, "
           "per-epoch resumable checkpoints %s s in all." % (
               "/".join("%.2f" % x["setup_source_s"] for x in th),
               "/".join("%.2f" % x["setup_transfer_s"] for x in th),
               "/".join("%.2f" % x["validation_s"] for x in th),
               "/".join("%.3f" % x["checkpoint_s"] for x in th))]
    if final:
        print("\n".join(md[2:]))

    doc = {"schema": "thawd-t1stages/1", "date": started.isoformat(timespec="seconds"),
           "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                    "kernel": platform.release()},
           "thawd": a.thawd, "version": a.version, "threads": a.threads, "repeats": a.repeats,
           "rounds_done": len(th),
           "quick": a.quick, "loadavg": [min(loads), max(loads)] if loads else None,
           "stages": [{"key": k, "label": lbl} for k, lbl in STAGES],
           "summary": summary, "per_round_total_ratio": per_round_ratio, "rounds": rounds}
    os.makedirs(a.results, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%MZ")
    base = os.path.join(a.results, stamp + "-t1stages" + ("-quick" if a.quick else ""))
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    if final:
        print("wrote %s.json and .md" % base)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--thawd", required=True, help="thawd binary (release build)")
    ap.add_argument("--pytorch", default="/usr/bin/python3")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/thawd-t1stages")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--version", default="", help="git describe of the thawd build")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 source epoch, fits of 1 and 3 epochs")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(a.threads)

    rounds = []
    started = datetime.datetime.now(datetime.timezone.utc)
    for r in range(a.repeats):
        for side, fn in (("pytorch", run_torch), ("thawd", run_thawd)):
            la0 = loadavg()
            st, info = fn(a, r, env)
            info["loadavg"] = [la0, loadavg()]
            rounds.append({"round": r, "side": side, "stages": st, **info})
            print("round %d %-7s %6.1f s (CPU %.1f s), accuracy %s (source %s), load %s-%s" % (
                r, side, info["wall_s"], info["cpu_s"], pct(info["accuracy"]),
                pct(info["source_accuracy"]), la0, info["loadavg"][1]), flush=True)
        report(a, rounds, started, r == a.repeats - 1)

    return 0


if __name__ == "__main__":
    sys.exit(main())
