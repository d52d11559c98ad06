#!/usr/bin/python3
"""PyTorch reference for thawd's transfer task T1 (DESIGN.md section 7).

Run with Debian's python3-torch:
    nice -n 19 /usr/bin/python3 tools/t1_reference.py              # 5 seeds, full
    nice -n 19 /usr/bin/python3 tools/t1_reference.py --quick      # smoke run, 2-3 minutes

What it does, on Fashion-MNIST (IDX .gz files, --data):
  source  all 36,000 training images of classes {1,3,5,7,8,9}, relabelled 0-5, normalised
          with their own pixel mean/std (computed here and printed; DESIGN.md says
          0.2402/0.3424); M1 from scratch, fit_one_cycle(2, 3e-3), batch 128; accuracy on
          those classes' 6,000 test images is printed.
  target  classes {0,2,4,6} relabelled 0-3: the first 20 training images of each class in file
          order (80 images); evaluated on their 4,000 test images. Normalised with the source
          statistics (the pretrained body expects them; scratch runs use the same input).
  transfer  source body + new head (Linear 128->4, PyTorch default init), freeze (body convs
          frozen, BatchNorm trainable), fit_one_cycle(3, 1e-2), unfreeze,
          fit_one_cycle(10, slice(1e-4, 1e-2)) over groups stem+group1 | group2 | head
          (even_mults: 1e-4, 1e-3, 1e-2), batch 8 (10 steps per epoch).
  scratch   M1 from scratch on the 80 images, fit_one_cycle(E, lr) for lr in {1e-3, 3e-3, 1e-2}
          and E in {13, 52} epochs (the transfer run's 130 steps, and 4x as many).

fastai semantics are implemented here by hand from the formulas in
/work/shared/reference/fastai-semantics.md:
  * 1cycle: combined cosine, lr L/div -> L over the first pct_start of the steps, then
    L -> L/div_final; momentum 0.95 -> 0.85 -> 0.95; sampled before each batch at pos = t/N
    (never 1.0); div 25, div_final 1e5, pct_start 0.25.
  * Adam: beta1 = the scheduled momentum, beta2 (sqr_mom) 0.99, eps 1e-5 outside the sqrt of
    the debiased second moment, decoupled weight decay 0.01 applied first with the current lr;
    no weight decay on BatchNorm parameters and biases; state cleared on freeze and unfreeze.
  * training batches are shuffled each epoch, the last incomplete batch is dropped.

The source model is pretrained once (seed --source-seed) and cached under --cache; every seed
then runs transfer and scratch with its own init, shuffling and dropout. --source-per-seed
pretrains a separate source model for every seed instead.

bench/t1_torch.py times the seed workflow stage by stage with these functions; for it this file
also has lr_find (fastai's sweep, with the valley suggestion), validate (loss and accuracy),
load_task (the data) and fit_one_cycle's on_epoch hook (per-epoch validation).
"""
import argparse
import gzip
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
SOURCE_CLASSES = [1, 3, 5, 7, 8, 9]
TARGET_CLASSES = [0, 2, 4, 6]
TARGET_PER_CLASS = 20


# ----------------------------------------------------------------------------- data


def read_idx(path):
    """Read an IDX file (optionally gzip'd) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError("%s: size does not match the header" % path)
    return data.reshape(dims)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def select(x, y, classes, per_class=None):
    """Images of `classes` in file order, relabelled by their index in `classes`;
    with per_class, only the first per_class images of each class."""
    keep = np.zeros(len(y), dtype=bool)
    for c in classes:
        idx = np.nonzero(y == c)[0]
        if per_class is not None:
            idx = idx[:per_class]
        keep[idx] = True
    remap = np.full(10, -1, dtype=np.int64)
    for i, c in enumerate(classes):
        remap[c] = i
    return x[keep], remap[y[keep]]


def to_tensor(x, mean, std):
    return torch.from_numpy((x - mean) / std).unsqueeze(1).contiguous()


def load_task(data_dir, mean=None, std=None):
    """Reads Fashion-MNIST and returns (src, tgt, mean, std): dicts of N x 1 x 28 x 28 tensors
    xtr/ytr/xte/yte for the source and the target task, both normalised with the source
    training images' mean and std (computed here unless given)."""
    xtr, ytr = load_split(data_dir, "train")
    xte, yte = load_split(data_dir, "test")
    sx, sy = select(xtr, ytr, SOURCE_CLASSES)
    if mean is None or std is None:
        mean, std = float(sx.mean(dtype=np.float64)), float(sx.std(dtype=np.float64))
    sxt, syt = select(xte, yte, SOURCE_CLASSES)
    src = {"xtr": to_tensor(sx, mean, std), "ytr": torch.from_numpy(sy),
           "xte": to_tensor(sxt, mean, std), "yte": torch.from_numpy(syt)}
    tx, ty = select(xtr, ytr, TARGET_CLASSES, TARGET_PER_CLASS)
    txt, tyt = select(xte, yte, TARGET_CLASSES)
    tgt = {"xtr": to_tensor(tx, mean, std), "ytr": torch.from_numpy(ty),
           "xte": to_tensor(txt, mean, std), "yte": torch.from_numpy(tyt)}
    return src, tgt, mean, std


# ----------------------------------------------------------------------------- model


def conv_bn_relu(ic, oc, stride=1):
    return [nn.Conv2d(ic, oc, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(oc),
            nn.ReLU(inplace=True)]


def make_m1(n_out):
    """M1 `cnn-small` (DESIGN.md section 7), input 1x28x28. model[0] is the body
    (stem, group1, group2), model[1] the head."""
    body = nn.Sequential(
        nn.Sequential(*conv_bn_relu(1, 32)),  # stem
        nn.Sequential(*conv_bn_relu(32, 32), *conv_bn_relu(32, 64, 2)),  # group1
        nn.Sequential(*conv_bn_relu(64, 64), *conv_bn_relu(64, 128, 2)),  # group2
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
                         nn.Linear(128, n_out))
    return nn.Sequential(body, head)


def layer_groups(model):
    """stem+group1 | group2 | head, as lists of parameters."""
    body, head = model[0], model[1]
    return [list(body[0].parameters()) + list(body[1].parameters()),
            list(body[2].parameters()), list(head.parameters())]


def no_wd_params(model):
    """fastai's norm_bias_params(with_bias=True): BatchNorm parameters and every bias."""
    out = set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.update(id(p) for p in m.parameters(recurse=False))
        elif getattr(m, "bias", None) is not None:
            out.add(id(m.bias))
    return out


def freeze_body(model):
    """fastai freeze() with train_bn=True: body params stop training except BatchNorm."""
    for m in model[0].modules():
        is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False):
            p.requires_grad_(is_bn)


def unfreeze(model):
    for p in model.parameters():
        p.requires_grad_(True)


# ----------------------------------------------------------------------------- fastai pieces


def sched_cos(start, end, p):
    return start + (1.0 + math.cos(math.pi * (1.0 - p))) * (end - start) / 2.0


def combined_cos(pct, a, b, c, pos):
    """fastai combined_cos(pct, a, b, c) evaluated at pos in [0, 1)."""
    if pos < pct:
        return sched_cos(a, b, pos / pct)
    return sched_cos(b, c, (pos - pct) / (1.0 - pct))


def even_mults(start, stop, n):
    if n == 1:
        return [stop]
    step = (stop / start) ** (1.0 / (n - 1))
    return [start * step**i for i in range(n)]


def resolve_lr(lr, n_groups):
    """A float, or a (start, stop) tuple meaning slice(start, stop)."""
    if isinstance(lr, tuple):
        return even_mults(lr[0], lr[1], n_groups)
    return [lr] * n_groups


class FastaiAdam:
    """fastai's Adam (decouple_wd=True) over parameter groups; hypers set per step."""

    def __init__(self, groups, no_wd, sqr_mom=0.99, eps=1e-5, wd=0.01):
        self.groups = groups
        self.no_wd = no_wd
        self.sqr_mom, self.eps, self.wd = sqr_mom, eps, wd
        self.state = {}

    def clear_state(self):
        self.state = {}

    def zero_grad(self):
        for g in self.groups:
            for p in g:
                p.grad = None

    @torch.no_grad()
    def step(self, lrs, mom):
        for g, lr in zip(self.groups, lrs):
            for p in g:
                if p.grad is None:
                    continue
                if self.wd != 0 and id(p) not in self.no_wd:
                    p.mul_(1.0 - lr * self.wd)
                st = self.state.get(id(p))
                if st is None:
                    st = self.state[id(p)] = [torch.zeros_like(p), torch.zeros_like(p), 0]
                m, v = st[0], st[1]
                m.mul_(mom).add_(p.grad, alpha=1.0 - mom)
                v.mul_(self.sqr_mom).addcmul_(p.grad, p.grad, value=1.0 - self.sqr_mom)
                st[2] += 1
                b1 = 1.0 - mom ** st[2]
                b2 = 1.0 - self.sqr_mom ** st[2]
                denom = (v / b2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-lr / b1)


def fit_one_cycle(model, opt, x, y, n_epoch, lr_max, bs, gen, div=25.0, div_final=1e5,
                  pct_start=0.25, moms=(0.95, 0.85, 0.95), on_epoch=None):
    """Train in place. Returns the list of per-batch losses. on_epoch(e), if given, is called
    after the training batches of each epoch e (fastai validates there; see validate)."""
    peaks = resolve_lr(lr_max, len(opt.groups))
    n = x.shape[0]
    nb = n // bs
    if nb == 0:
        raise ValueError("fewer training images (%d) than one batch (%d)" % (n, bs))
    total = n_epoch * nb
    losses = []
    for e in range(n_epoch):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for b in range(nb):
            pos = (e * nb + b) / total
            lrs = [combined_cos(pct_start, L / div, L, L / div_final, pos) for L in peaks]
            mom = combined_cos(pct_start, moms[0], moms[1], moms[2], pos)
            idx = perm[b * bs : (b + 1) * bs]
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step(lrs, mom)
            losses.append(loss.item())
        if on_epoch is not None:
            on_epoch(e)
    return losses


def lr_find(model, opt, x, y, bs, gen, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True,
            mom=0.9):
    """fastai lr_find: batch k trains with lr start_lr * (end_lr / start_lr) ** (k / num_it) on
    every group (mom: the optimizer's default beta1, as no schedule runs), epochs of reshuffled
    batches until num_it batches or, with stop_div, until the smoothed loss (debiased EMA, beta
    0.98) exceeds 4x its minimum; no validation. Weights, buffers and Adam state are restored
    after. Returns (lrs, smoothed losses, valley suggestion or None)."""
    num_it = max(num_it, 6)
    nb = x.shape[0] // bs
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = {k: [t.clone() if torch.is_tensor(t) else t for t in st]
                 for k, st in opt.state.items()}
    lrs, smooth, avg, best = [], [], 0.0, float("inf")
    model.train()
    done = False
    for _ in range(num_it // nb + 1):
        perm = torch.randperm(x.shape[0], generator=gen)
        for b in range(nb):
            k = len(lrs)
            lr = start_lr * (end_lr / start_lr) ** (k / num_it)
            idx = perm[b * bs : (b + 1) * bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step([lr] * len(opt.groups), mom)
            avg = 0.98 * avg + 0.02 * loss.item()
            s = avg / (1.0 - 0.98 ** (k + 1))
            lrs.append(lr)
            smooth.append(s)
            best = min(best, s)
            if (stop_div and s > 4 * best) or len(lrs) >= num_it or math.isnan(s):
                done = True
                break
        if done:
            break
    opt.zero_grad()
    model.load_state_dict(saved_model)
    opt.state = saved_opt
    return lrs, smooth, valley(lrs[num_it // 10 : -5], smooth[num_it // 10 : -5])


def valley(lrs, losses):
    """fastai's valley suggestion: the middle of the longest strictly decreasing run
    (not necessarily contiguous) of the smoothed losses; None without points."""
    if any(math.isnan(v) for v in losses):
        n = next(i for i, v in enumerate(losses) if math.isnan(v))
        lrs, losses = lrs[:n], losses[:n]
    n = len(losses)
    if n == 0:
        return None
    length = [1] * n
    max_start, max_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and length[i] < length[j] + 1:
                length[i] = length[j] + 1
            if length[i] > length[max_end]:
                max_end = i
                max_start = i - length[i]
    sections = (max_end - max_start) / 3
    return lrs[max_start + int(sections) + int(sections / 2)]


@torch.no_grad()
def validate(model, x, y, bs=1000):
    """Eval mode, no gradients: (mean cross-entropy, accuracy) over all of x."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], bs):
        out = model(x[i : i + bs])
        loss += F.cross_entropy(out, y[i : i + bs], reduction="sum").item()
        correct += (out.argmax(1) == y[i : i + bs]).sum().item()
    return loss / x.shape[0], correct / x.shape[0]


def accuracy(model, x, y, bs=1000):
    return validate(model, x, y, bs)[1]


# ----------------------------------------------------------------------------- the task


def pretrain_source(src, seed, epochs):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_m1(len(SOURCE_CLASSES))
    opt = FastaiAdam(layer_groups(model), no_wd_params(model))
    t0 = time.time()
    fit_one_cycle(model, opt, src["xtr"], src["ytr"], epochs, 3e-3, 128, gen)
    acc = accuracy(model, src["xte"], src["yte"])
    print("source seed %d: %d epochs in %.0f s, accuracy %.2f%% on %d test images"
          % (seed, epochs, time.time() - t0, 100 * acc, src["xte"].shape[0]), flush=True)
    return model[0].state_dict(), acc


def run_transfer(body_state, tgt, seed, e_head, e_all):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_m1(len(TARGET_CLASSES))  # fresh head with PyTorch's default init
    model[0].load_state_dict(body_state)
    opt = FastaiAdam(layer_groups(model), no_wd_params(model))
    freeze_body(model)
    opt.clear_state()
    fit_one_cycle(model, opt, tgt["xtr"], tgt["ytr"], e_head, 1e-2, 8, gen)
    acc_head = accuracy(model, tgt["xte"], tgt["yte"])
    unfreeze(model)
    opt.clear_state()
    fit_one_cycle(model, opt, tgt["xtr"], tgt["ytr"], e_all, (1e-4, 1e-2), 8, gen)
    return acc_head, accuracy(model, tgt["xte"], tgt["yte"])


def run_scratch(tgt, seed, epochs, lr):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_m1(len(TARGET_CLASSES))
    opt = FastaiAdam(layer_groups(model), no_wd_params(model))
    fit_one_cycle(model, opt, tgt["xtr"], tgt["ytr"], epochs, lr, 8, gen)
    return accuracy(model, tgt["xte"], tgt["yte"])


def mean_std(v):
    a = np.array(v, dtype=np.float64) * 100
    return a.mean(), (a.std(ddof=1) if len(a) > 1 else 0.0)


def fmt(v):
    m, s = mean_std(v)
    return "%.1f%% +- %.1f" % (m, s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="directory with the Fashion-MNIST .gz files")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    ap.add_argument("--source-seed", type=int, default=0)
    ap.add_argument("--source-per-seed", action="store_true",
                    help="pretrain a separate source model for every seed")
    ap.add_argument("--cache", default="/tmp/thawd-t1-source",
                    help="directory caching pretrained source bodies ('' = no cache)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 seeds, 1 source epoch, short target schedules")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    n_seeds = min(args.seeds, 2) if args.quick else args.seeds
    src_epochs = 1 if args.quick else 2
    e_head, e_all = (1, 3) if args.quick else (3, 10)
    scratch_lrs = [1e-2] if args.quick else [1e-3, 3e-3, 1e-2]

    print("torch %s, %d threads, %s, %s" % (torch.__version__, torch.get_num_threads(),
                                            platform.machine(), platform.processor() or ""))
    src, tgt, mean, std = load_task(args.data)
    print("source: %d train images, pixel mean %.4f std %.4f (DESIGN.md: 0.2402 / 0.3424)"
          % (src["xtr"].shape[0], mean, std))
    tx, ty = tgt["xtr"], tgt["ytr"]
    print("target: %d train images (counts %s), %d test images"
          % (tx.shape[0], np.bincount(ty.numpy()).tolist(), tgt["xte"].shape[0]), flush=True)

    bodies = {}

    def source_body(seed):
        if seed in bodies:
            return bodies[seed]
        path = None
        if args.cache:
            os.makedirs(args.cache, exist_ok=True)
            path = os.path.join(args.cache, "source-seed%d-ep%d.pt" % (seed, src_epochs))
            if os.path.exists(path):
                bodies[seed] = torch.load(path)
                print("source seed %d: loaded %s" % (seed, path))
                return bodies[seed]
        state, _ = pretrain_source(src, seed, src_epochs)
        if path:
            torch.save(state, path)
        bodies[seed] = state
        return state

    steps = (e_head + e_all) * (tx.shape[0] // 8)
    scratch_cfgs = [(lr, ep) for lr in scratch_lrs for ep in (e_head + e_all, 4 * (e_head + e_all))]
    res = {"head": [], "transfer": [], "scratch": {c: [] for c in scratch_cfgs}}
    t0 = time.time()
    for seed in range(n_seeds):
        body = source_body(seed if args.source_per_seed else args.source_seed)
        acc_head, acc = run_transfer(body, tgt, seed, e_head, e_all)
        res["head"].append(acc_head)
        res["transfer"].append(acc)
        line = "seed %d: transfer %.2f%% (after head phase %.2f%%)" % (seed, 100 * acc,
                                                                      100 * acc_head)
        for lr, ep in scratch_cfgs:
            a = run_scratch(tgt, seed, ep, lr)
            res["scratch"][(lr, ep)].append(a)
            line += " | scratch lr %g %d steps %.2f%%" % (lr, ep * (tx.shape[0] // 8), 100 * a)
        print(line, flush=True)

    print("\nsummary over %d seeds (%.0f s for the target runs):" % (n_seeds, time.time() - t0))
    print("  transfer (%d steps):        %s" % (steps, fmt(res["transfer"])))
    print("  after the frozen phase:     %s" % fmt(res["head"]))
    best = None
    for (lr, ep), v in res["scratch"].items():
        print("  scratch lr %-6g %4d steps: %s" % (lr, ep * (tx.shape[0] // 8), fmt(v)))
        if best is None or mean_std(v)[0] > mean_std(best[1])[0]:
            best = ((lr, ep), v)
    (lr, ep), v = best
    print("  best scratch (lr %g, %d steps): %s" % (lr, ep * (tx.shape[0] // 8), fmt(v)))
    worst_t, best_s = min(res["transfer"]), max(max(v) for v in res["scratch"].values())
    print("  worst transfer seed %.2f%% vs best scratch run %.2f%%" % (100 * worst_t,
                                                                        100 * best_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
