#!/usr/bin/env python3
"""Bar chart (SVG, standard library only) of images/s per mode, thawd beside PyTorch.

usage: plot.py REPORT.json OUT.svg

REPORT.json is what bench/run.sh writes (schema thawd-bench-report/1, made by report.py).
One panel per mode; in each, one pair of bars per (model, batch): PyTorch and thawd medians,
with a line from min to max over the timed runs, and the ratio thawd/PyTorch above the pair.
"""
import json
import sys

MODES = ("train", "frozen_bn", "frozen_nograd", "infer")
COLORS = {"pytorch": "#e07b39", "thawd": "#3a6ea5"}
PANEL_W, PANEL_H, TOP, BOTTOM, LEFT = 330, 260, 50, 60, 55


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_max(v):
    if v <= 0:
        return 1.0
    m = 1.0
    while m * 10 <= v:
        m *= 10
    for f in (1, 2, 2.5, 5, 10):
        if f * m >= v:
            return f * m
    return 10 * m


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        rep = json.load(f)
    sides = {}
    for side in ("pytorch", "thawd"):
        doc = rep.get(side) or {"entries": []}
        for e in doc["entries"]:
            if "error" not in e:
                sides[(side, e["model"], e["batch"], e["mode"])] = e["images_per_s"]
    configs = []
    for (_, model, batch, _) in sides:
        if (model, batch) not in configs:
            configs.append((model, batch))
    configs.sort(key=lambda c: (c[0] != "m1", c[0], c[1]))
    modes = [m for m in MODES if any(k[3] == m for k in sides)]
    width = LEFT + len(modes) * PANEL_W + 20
    height = TOP + PANEL_H + BOTTOM + 30
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="14">images/s per mode: PyTorch %s vs thawd %s, '
           '%s threads (median; bars show min-max)</text>'
           % (LEFT, esc((rep.get("pytorch") or {}).get("version", "?")),
              esc((rep.get("thawd") or {}).get("version", "?")), esc(rep.get("threads", "?")))]
    for side, y in (("pytorch", 20), ("thawd", 34)):
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>'
                   '<text x="%d" y="%d">%s</text>' % (width - 110, y - 9, COLORS[side],
                                                      width - 95, y, side))
    for pi, mode in enumerate(modes):
        x0 = LEFT + pi * PANEL_W
        vmax = nice_max(max([sides[k]["max"] for k in sides if k[3] == mode] or [1]))
        y_of = lambda v: TOP + PANEL_H - PANEL_H * v / vmax  # noqa: E731
        out.append('<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>'
                   % (x0 + 10, TOP - 8, mode))
        for t in range(5):
            v = vmax * t / 4
            out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>'
                       '<text x="%d" y="%.1f" text-anchor="end">%d</text>'
                       % (x0, x0 + PANEL_W - 20, y_of(v), y_of(v), x0 - 3, y_of(v) + 4, v))
        gw = (PANEL_W - 30) / max(1, len(configs))
        for ci, (model, batch) in enumerate(configs):
            gx = x0 + 5 + ci * gw
            vals = {}
            for si, side in enumerate(("pytorch", "thawd")):
                s = sides.get((side, model, batch, mode))
                if not s:
                    continue
                vals[side] = s["median"]
                bx = gx + 4 + si * (gw - 8) / 2
                bw = (gw - 8) / 2 - 2
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                           % (bx, y_of(s["median"]), bw, TOP + PANEL_H - y_of(s["median"]),
                              COLORS[side]))
                cx = bx + bw / 2
                out.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>'
                           % (cx, cx, y_of(s["min"]), y_of(s["max"])))
            if len(vals) == 2 and vals["pytorch"] > 0:
                top = min(y_of(sides[(s, model, batch, mode)]["max"]) for s in vals)
                out.append('<text x="%.1f" y="%.1f" text-anchor="middle">%.2fx</text>'
                           % (gx + gw / 2, top - 4, vals["thawd"] / vals["pytorch"]))
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                       '<text x="%.1f" y="%d" text-anchor="middle">b%s</text>'
                       % (gx + gw / 2, TOP + PANEL_H + 15, esc(model), gx + gw / 2,
                          TOP + PANEL_H + 28, esc(batch)))
        out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>'
                   % (x0, x0 + PANEL_W - 20, TOP + PANEL_H, TOP + PANEL_H))
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
