#!/usr/bin/python3
"""PyTorch reference benchmark for thawd's engine (DESIGN.md section 8, issue 7).

Run with Debian's python3-torch (the plain python3 lacks it):
    nice -n 19 /usr/bin/python3 bench/torch_ref.py --repeats 2 --iters 2   # quick look
    /usr/bin/python3 bench/torch_ref.py > out.json                         # full run

Every (model, batch, mode) runs in a fresh subprocess, so the peak RSS reported is that of one
mode alone (`import torch` included; its share is reported as rss_import_mib).

Models
  m1        M1 `cnn-small` (DESIGN.md section 7), input 1x28x28, 10 classes;
            body = stem, group1, group2; head = avg pool, Flatten, Dropout(0.25), Linear.
  resnet18  torchvision resnet18 (random init), input 3x64x64, 10 classes;
            body = everything before avgpool; head = avgpool, Flatten, fc.
Modes
  train          forward, cross-entropy, backward, Adam step; everything trains.
  frozen_bn      fastai freeze() with train_bn=True: conv/linear weights of the body have
                 requires_grad=False, BatchNorm params of the body and the whole head train;
                 BatchNorm stays in train mode (running stats update).
  frozen_nograd  train_bn=False: the body runs under torch.no_grad() in eval mode; only the
                 head trains.
  infer          model.eval() under torch.no_grad().
The optimizer is torch.optim.AdamW with fastai Adam's settings: betas (0.9, 0.99) with the
momentum re-set every step as 1cycle does, eps 1e-5, decoupled weight decay 0.01, no weight
decay on BatchNorm params and biases. AdamW's update, p *= 1 - lr*wd, then
p -= lr/(1-b1^t) * m / (sqrt(v/(1-b2^t)) + eps), is fastai's: eps sits outside the sqrt in both.

Output: one JSON document on stdout (schema described in bench/README.md, "thawd-bench/1"), a
human table on stderr. images/s and GFLOPS are the median and min..max over --repeats timed
runs of --iters steps each, after --warmup untimed steps.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SCHEMA = "thawd-bench/1"
MODELS = ("m1", "resnet18")
MODES = ("train", "frozen_bn", "frozen_nograd", "infer")
DEFAULT_BATCHES = {"m1": [64, 128, 256], "resnet18": [32]}
INPUT = {"m1": (1, 28, 28), "resnet18": (3, 64, 64)}
CLASSES = 10


# ----------------------------------------------------------------------------- FLOP counting
#
# The one place where FLOPs are counted, for PyTorch and (by the same rules, documented in
# bench/README.md) for thawd's engine. Only convolutions and linear layers count:
#   forward          2 * MACs = 2 * N * OC * OH * OW * IC/groups * KH * KW  (conv)
#                               2 * N * in * out                            (linear)
#   weight gradient  the same again, if the layer's weight is trainable in this mode
#   input gradient   the same again, if any parameter that runs earlier in the network is
#                    trainable (then the gradient must flow through this layer's input)
# So a fully trained layer costs 3x its forward, except the first layer (no input gradient:
# 2x). In frozen_bn the body convs cost 2x (forward + input gradient, because the BatchNorms
# below them train) and the stem conv 1x; in frozen_nograd and infer the body costs 1x.
# BatchNorm, ReLU, pooling, loss and optimizer work are not counted (they are memory-bound and
# below 2% of the FLOPs here); GFLOPS is therefore "useful GEMM-like FLOPs per second".
# "Earlier" means earlier in execution order, which is exact for M1's chain and for resnet18 in
# these modes (the only trainable parameters that gate input gradients are the stem's BatchNorm
# or everything).


def count_flops(model, x, trainable, nograd_body=None):
    """Return (flops per step, per-layer list) for one forward(+backward) on input x.

    trainable(p) says whether parameter p trains in this mode; nograd_body, if given, is the
    sub-module run under no_grad (nothing in it needs gradients)."""
    import torch
    import torch.nn as nn

    records = []  # (module, fwd_flops) in execution order, for every leaf with parameters

    def hook(mod, inp, out):
        f = 0
        if isinstance(mod, nn.Conv2d):
            n, oc, oh, ow = out.shape
            ic = mod.in_channels // mod.groups
            kh, kw = mod.kernel_size
            f = 2 * n * oc * oh * ow * ic * kh * kw
        elif isinstance(mod, nn.Linear):
            f = 2 * inp[0].shape[0] * mod.in_features * mod.out_features
        records.append((mod, f))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if len(list(m.children())) == 0 and len(list(m.parameters(recurse=False))) > 0]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(was_training)
    for h in handles:
        h.remove()

    in_body = set()
    if nograd_body is not None:
        in_body = {id(m) for m in nograd_body.modules()}
    total, layers, grad_flows = 0, [], False
    for mod, f in records:
        params = list(mod.parameters(recurse=False))
        body_nograd = id(mod) in in_body
        w_train = (not body_nograd) and trainable(params[0])
        mult = 1 if f else 0
        if f and w_train:
            mult += 1
        if f and grad_flows and not body_nograd:
            mult += 1
        total += mult * f
        if f:
            layers.append({"layer": type(mod).__name__, "fwd_flops": f, "mult": mult})
        if not body_nograd and any(trainable(p) for p in params):
            grad_flows = True
    return total, layers


# ----------------------------------------------------------------------------- models


def make_model(name):
    import torch.nn as nn

    if name == "m1":
        def cbr(ic, oc, stride=1):
            return [nn.Conv2d(ic, oc, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(oc), nn.ReLU(inplace=True)]

        body = nn.Sequential(
            nn.Sequential(*cbr(1, 32)),
            nn.Sequential(*cbr(32, 32), *cbr(32, 64, 2)),
            nn.Sequential(*cbr(64, 64), *cbr(64, 128, 2)),
        )
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
                             nn.Linear(128, CLASSES))
        return nn.Sequential(body, head)
    if name == "resnet18":
        import torchvision

        r = torchvision.models.resnet18(num_classes=CLASSES)
        body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3,
                             r.layer4)
        head = nn.Sequential(r.avgpool, nn.Flatten(), r.fc)
        return nn.Sequential(body, head)
    raise ValueError("unknown model %r" % name)


def is_norm(m):
    import torch.nn as nn

    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def make_adamw(model):
    import torch

    decay, no_decay = [], []
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if is_norm(m) or pname == "bias" else decay).append(p)
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-5)


# ----------------------------------------------------------------------------- one config


def run_child(args):
    """Benchmark one (model, batch, mode) in this process and print its JSON entry."""
    import torch
    import torch.nn.functional as F

    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_name, batch, mode = args.child
    batch = int(batch)
    model = make_model(model_name)
    body, head = model[0], model[1]
    x = torch.randn(batch, *INPUT[model_name])
    y = torch.randint(0, CLASSES, (batch,))

    if mode == "frozen_bn":
        for m in body.modules():
            for p in m.parameters(recurse=False):
                p.requires_grad_(is_norm(m))
    elif mode in ("frozen_nograd", "infer"):
        for p in body.parameters():
            p.requires_grad_(False)
        if mode == "infer":
            for p in head.parameters():
                p.requires_grad_(False)
    elif mode != "train":
        raise ValueError("unknown mode %r" % mode)

    flops, layers = count_flops(model, x, lambda p: p.requires_grad,
                                body if mode == "frozen_nograd" else None)

    opt = make_adamw(model) if mode != "infer" else None
    step_no = [0]

    def step():
        if mode == "infer":
            with torch.no_grad():
                model(x)
            return
        # 1cycle re-sets lr and momentum before every batch; do the same (values immaterial).
        step_no[0] += 1
        mom = 0.85 + 0.1 * ((step_no[0] % 10) / 10.0)
        for g in opt.param_groups:
            g["lr"] = 1e-4
            g["betas"] = (mom, 0.99)
        if mode == "frozen_nograd":
            with torch.no_grad():
                feats = body(x)
            out = head(feats)
        else:
            out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if mode == "infer":
        model.eval()
    elif mode == "frozen_nograd":
        model.train()
        body.eval()
    else:
        model.train()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step()
        times.append((time.perf_counter() - t0) / args.iters)
    ips = sorted(batch / t for t in times)
    gf = sorted(flops / t / 1e9 for t in times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    entry = {
        "model": model_name,
        "batch": batch,
        "mode": mode,
        "threads": args.threads,
        "input": list(INPUT[model_name]),
        "classes": CLASSES,
        "images_per_s": {"median": statistics.median(ips), "min": ips[0], "max": ips[-1]},
        "step_ms_median": 1e3 * statistics.median(times),
        "gflops": {"median": statistics.median(gf), "min": gf[0], "max": gf[-1]},
        "flops_per_step": flops,
        "flops_per_image": flops / batch,
        "peak_rss_mib": rss / 1024.0,
        "rss_import_mib": rss_import / 1024.0,
        "repeats": args.repeats,
        "iters": args.iters,
        "warmup": args.warmup,
        # 1-minute load average before and after: above ~0 (beyond this process) the machine
        # was shared and the timings are low and noisy; max is then the better estimate.
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if args.layers:
        entry["layers"] = layers
    print(json.dumps(entry))
    return 0


# ----------------------------------------------------------------------------- driver


def host_info():
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def table(entries):
    lines = ["%-9s %5s %-13s %16s %22s %16s %9s" % ("model", "batch", "mode", "images/s",
                                                   "(min..max)", "GFLOPS", "RSS MiB")]
    for e in entries:
        if "error" in e:
            lines.append("%-9s %5d %-13s  error: %s" % (e["model"], e["batch"], e["mode"],
                                                       e["error"]))
            continue
        ips, gf = e["images_per_s"], e["gflops"]
        lines.append("%-9s %5d %-13s %16.1f %10.1f..%-10.1f %7.1f (%.0f..%.0f) %9.1f"
                     % (e["model"], e["batch"], e["mode"], ips["median"], ips["min"], ips["max"],
                        gf["median"], gf["min"], gf["max"], e["peak_rss_mib"]))
    return "\n".join(lines)


def split_list(s, allowed=None, conv=str):
    out = [conv(v) for v in s.split(",") if v]
    if allowed is not None:
        for v in out:
            if v not in allowed:
                raise SystemExit("unknown value %r (choose from %s)" % (v, ", ".join(allowed)))
    return out


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference benchmark for thawd")
    ap.add_argument("--models", default="m1,resnet18", help="comma list of %s" % ", ".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of %s" % ", ".join(MODES))
    ap.add_argument("--batches", default="",
                    help="comma list of batch sizes for every model (default: m1 64,128,256; "
                         "resnet18 32)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per config")
    ap.add_argument("--iters", type=int, default=10, help="steps per timed run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", action="store_true", help="include per-layer FLOP counts")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave glibc malloc's adaptive mmap threshold on (PyTorch's rate then "
                         "varies up to 4.6x between processes)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeats < 1 or args.iters < 1 or args.warmup < 0 or args.threads < 1:
        raise SystemExit("--repeats, --iters and --threads must be >= 1, --warmup >= 0")
    if args.child:
        return run_child(args)

    models = split_list(args.models, MODELS)
    modes = split_list(args.modes, MODES)
    try:
        batches = split_list(args.batches, conv=int)
    except ValueError:
        raise SystemExit("--batches: comma list of integers")
    if any(b < 1 for b in batches):
        raise SystemExit("--batches must be positive")

    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(args.threads)
    if not args.malloc_default:
        # PyTorch allocates and frees its per-op buffers (oneDNN's reorders, activations) on
        # every step. With glibc's adaptive mmap threshold, some processes get them from fresh
        # mmaps and page-fault through them every step: up to 4.6x slower, decided per process
        # (BENCHMARKS.md). A fixed threshold of 32 MiB and no heap trimming keep them in the
        # heap and PyTorch at its best; the environment's own values win.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 40))
    import torch  # only for the version string; children import their own

    doc = {
        "schema": SCHEMA,
        "implementation": "pytorch",
        "version": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_info(),
        "threads": args.threads,
        "settings": {"repeats": args.repeats, "iters": args.iters, "warmup": args.warmup},
        "entries": [],
    }
    for model in models:
        for batch in batches or DEFAULT_BATCHES[model]:
            for mode in modes:
                cmd = [sys.executable, os.path.abspath(__file__), "--child", model, str(batch),
                       mode, "--repeats", str(args.repeats), "--iters", str(args.iters),
                       "--warmup", str(args.warmup), "--threads", str(args.threads)]
                if args.layers:
                    cmd.append("--layers")
                p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if p.returncode != 0:
                    err = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
                    entry = {"model": model, "batch": batch, "mode": mode, "error": err}
                else:
                    entry = json.loads(p.stdout.strip().splitlines()[-1])
                doc["entries"].append(entry)
                print(table([entry]).splitlines()[1], file=sys.stderr, flush=True)
    print("\n" + table(doc["entries"]), file=sys.stderr)
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 1 if any("error" in e for e in doc["entries"]) else 0


if __name__ == "__main__":
    sys.exit(main())
