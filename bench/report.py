#!/usr/bin/env python3
"""Combine the outputs of bench/run.sh into one JSON document and a markdown table.

usage: report.py --peak PEAK.json --torch TORCH.json [--thawd THAWD.json] --json OUT.json --md OUT.md

Standard library only (runs under any python3). The inputs are peak's JSON and two
"thawd-bench/1" documents (bench/README.md); entries are matched on (model, batch, mode) and
reported with the ratio thawd / PyTorch of the median images/s. A thawd entry whose
flops_per_step differs from PyTorch's for the same config is flagged: both sides must count
by the same rules, or their GFLOPS are not comparable.
"""
import argparse
import json
import sys

SCHEMA = "thawd-bench/1"


def load(path, want_schema):
    with open(path) as f:
        doc = json.load(f)
    if want_schema and doc.get("schema") != SCHEMA:
        raise SystemExit("%s: schema %r, expected %r" % (path, doc.get("schema"), SCHEMA))
    return doc


def key(e):
    return (e["model"], e["batch"], e["mode"])


def fmt_ips(e):
    if e is None:
        return "-"
    if "error" in e:
        return "error"
    ips = e["images_per_s"]
    return "%.0f (%.0f-%.0f)" % (ips["median"], ips["min"], ips["max"])


def fmt_gf(e, peak):
    if e is None or "error" in e:
        return "-"
    g = e["gflops"]["median"]
    return "%.1f (%.0f%%)" % (g, 100.0 * g / peak) if peak else "%.1f" % g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peak", required=True)
    ap.add_argument("--torch", required=True)
    ap.add_argument("--thawd")
    ap.add_argument("--json", required=True)
    ap.add_argument("--md", required=True)
    args = ap.parse_args()

    peak = load(args.peak, False)
    torch = load(args.torch, True)
    thawd = load(args.thawd, True) if args.thawd else None
    threads = torch["threads"]
    # The FMA peak for `threads` threads: the highest of the wall-clock peak, threads x the
    # one-thread peak and the peak per CPU time (which other processes on a busy machine do not
    # lower; all three agree on an idle machine).
    fl = peak.get("fma_gflops", {})
    fc = peak.get("fma_gflops_per_cpu_time", {})
    cands = [fl.get(str(threads), {}).get("best"), fc.get(str(threads), {}).get("best")]
    if fl.get("1", {}).get("best"):
        cands.append(threads * fl["1"]["best"])
    fma = max([v for v in cands if v] or [0]) or None

    thawd_by = {key(e): e for e in thawd["entries"]} if thawd else {}
    rows, comparisons = [], []
    for e in torch["entries"]:
        t = thawd_by.pop(key(e), None)
        ratio = None
        note = ""
        if t is not None and "error" not in t and "error" not in e:
            ratio = t["images_per_s"]["median"] / e["images_per_s"]["median"]
            if t.get("flops_per_step") != e.get("flops_per_step"):
                note = "FLOP counts differ (%s vs %s)" % (t.get("flops_per_step"),
                                                         e.get("flops_per_step"))
        comparisons.append({"model": e["model"], "batch": e["batch"], "mode": e["mode"],
                            "pytorch_images_per_s": e.get("images_per_s", {}).get("median"),
                            "thawd_images_per_s": (t or {}).get("images_per_s", {}).get("median"),
                            "ratio": ratio, "note": note})
        rows.append((e, t, ratio, note))
    for t in thawd_by.values():  # configs only thawd ran
        rows.append((None, t, None, "no PyTorch entry"))

    combined = {"schema": "thawd-bench-report/1", "date": torch.get("date"),
                "host": torch.get("host"), "threads": threads, "peak": peak, "pytorch": torch,
                "thawd": thawd, "comparison": comparisons}
    with open(args.json, "w") as f:
        json.dump(combined, f, indent=1)
        f.write("\n")

    out = []
    out.append("# thawd benchmark, %s" % torch.get("date"))
    host = torch.get("host", {})
    out.append("")
    out.append("Host: %s, %s CPUs, kernel %s; %d threads; PyTorch %s%s." % (
        host.get("cpu", "?"), host.get("cpus", "?"), host.get("kernel", "?"), threads,
        torch.get("version"), ", thawd %s" % thawd.get("version") if thawd else ""))
    sg = (peak.get("sgemm_gflops") or [{}])[0]
    out.append("Peak (%s, best of %s): FMA %s GFLOPS on 1 thread, %s on %d (per CPU time: %s / %s); "
               "OpenBLAS (%s) sgemm %sx%sx%s %s / %s GFLOPS." % (
                   peak.get("isa"), peak.get("repeats"), fl.get("1", {}).get("best"),
                   fl.get(str(threads), {}).get("best"), threads, fc.get("1", {}).get("best"),
                   fc.get(str(threads), {}).get("best"), peak.get("openblas", {}).get("core"),
                   sg.get("M"), sg.get("N"), sg.get("K"), sg.get("1", {}).get("best"),
                   sg.get(str(threads), {}).get("best")))
    loads = [x for e in torch["entries"] for x in e.get("loadavg", [])]
    if loads and max(loads) > 0.5 * (host.get("cpus") or 1) + threads:
        out.append("**Busy machine**: 1-minute load average up to %.1f on %s CPUs during the "
                   "PyTorch runs; medians are low and noisy, max is the better estimate."
                   % (max(loads), host.get("cpus", "?")))
    out.append("images/s: median (min-max); GFLOPS: median (%% of %.0f GFLOPS, the FMA peak for "
               "%d threads)." % (fma or 0, threads))
    out.append("")
    out.append("| model | batch | mode | PyTorch img/s | thawd img/s | thawd/PyTorch | "
               "PyTorch GFLOPS | thawd GFLOPS | PyTorch RSS MiB | thawd RSS MiB | note |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for e, t, ratio, note in rows:
        ref = e or t
        out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            ref["model"], ref["batch"], ref["mode"], fmt_ips(e), fmt_ips(t),
            "%.2fx" % ratio if ratio else "-", fmt_gf(e, fma), fmt_gf(t, fma),
            "%.0f" % e["peak_rss_mib"] if e and "peak_rss_mib" in e else "-",
            "%.0f" % t["peak_rss_mib"] if t and "peak_rss_mib" in t else "-", note))
    with open(args.md, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
