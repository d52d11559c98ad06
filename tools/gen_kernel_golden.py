#!/usr/bin/python3
"""Write PyTorch golden vectors for thawd's CNN kernels to tests/data/kernels/.

Run with Debian's python3-torch:  /usr/bin/python3 tools/gen_kernel_golden.py
The output is committed, so CI needs no PyTorch; re-run only when adding cases, and say why
in the commit.

Each case is one little-endian file <name>.bin:
    magic  b"THKG0001"
    u32    number of tensors
    per tensor: u32 name length, name (ASCII), u32 ndim, u32 dims[ndim], f32 data[prod(dims)]
Every file has a tensor "cfg" holding the case's integer configuration (exact in float32),
the fixed inputs, and PyTorch's outputs and gradients. Inputs are drawn in float32 from a
fixed seed; the forward and backward passes then run in float64, so the references carry
no float32 rounding of their own.
"""
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "kernels")


def write(name, tensors):
    path = os.path.join(OUT, name + ".bin")
    with open(path, "wb") as f:
        f.write(b"THKG0001")
        f.write(struct.pack("<I", len(tensors)))
        for key, t in tensors:
            t = t.detach().to(torch.float32).contiguous()
            data = t.numpy().astype("<f4").tobytes()
            kb = key.encode("ascii")
            f.write(struct.pack("<I", len(kb)))
            f.write(kb)
            f.write(struct.pack("<I", t.dim()))
            f.write(struct.pack("<%dI" % t.dim(), *t.shape))
            f.write(data)
    print("wrote", os.path.relpath(path), sum(t.numel() for _, t in tensors), "floats")


def rand(gen, *shape, lo=-1.0, hi=1.0):
    """float32 uniform in [lo, hi), returned as float64 holding exactly those values."""
    return (torch.rand(*shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo).double()


def cfg(*vals):
    return torch.tensor([float(v) for v in vals])


def conv_case(gen, name, N, IC, IH, IW, OC, KH, KW, SH, SW, PH, PW, bias):
    x = rand(gen, N, IC, IH, IW).requires_grad_()
    w = rand(gen, OC, IC, KH, KW, lo=-0.5, hi=0.5).requires_grad_()
    b = rand(gen, OC).requires_grad_() if bias else None
    y = F.conv2d(x, w, b, stride=(SH, SW), padding=(PH, PW))
    dy = rand(gen, *y.shape)
    y.backward(dy)
    t = [("cfg", cfg(N, IC, IH, IW, OC, KH, KW, SH, SW, PH, PW, int(bias))), ("x", x), ("w", w)]
    if bias:
        t.append(("b", b))
    t += [("dy", dy), ("y", y), ("dx", x.grad), ("dw", w.grad)]
    if bias:
        t.append(("db", b.grad))
    write(name, t)


def bn_case(gen, name, shape):
    N, C = shape[0], shape[1]
    S = 1
    for d in shape[2:]:
        S *= d
    bn = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(C).double()
    gamma0, beta0 = rand(gen, C, lo=0.5, hi=1.5), rand(gen, C)
    rm0, rv0 = rand(gen, C), rand(gen, C, lo=0.5, hi=2.0)
    with torch.no_grad():
        bn.weight.copy_(gamma0)
        bn.bias.copy_(beta0)
        bn.running_mean.copy_(rm0)
        bn.running_var.copy_(rv0)
    x = rand(gen, *shape, lo=-2.0, hi=3.0).requires_grad_()
    bn.train()
    y = bn(x)
    dy = rand(gen, *y.shape)
    y.backward(dy)
    assert bn.momentum == 0.1 and bn.eps == 1e-5
    bn.eval()
    with torch.no_grad():
        y_eval = bn(x)
    write(name, [("cfg", cfg(N, C, S)), ("x", x), ("gamma", gamma0), ("beta", beta0),
                 ("running_mean0", rm0), ("running_var0", rv0), ("dy", dy), ("y", y),
                 ("dx", x.grad), ("dgamma", bn.weight.grad), ("dbeta", bn.bias.grad),
                 ("running_mean", bn.running_mean), ("running_var", bn.running_var),
                 ("num_batches_tracked", bn.num_batches_tracked.double().reshape(1)),
                 ("y_eval", y_eval)])


def pool_case(gen, name, kind, N, C, IH, IW, K, S, P, cip=True):
    x = rand(gen, N, C, IH, IW).requires_grad_()
    if kind == "max":
        y = F.max_pool2d(x, K, S, P)
    else:
        y = F.avg_pool2d(x, K, S, P, count_include_pad=cip)
    dy = rand(gen, *y.shape)
    y.backward(dy)
    write(name, [("cfg", cfg(N, C, IH, IW, K, K, S, S, P, P, int(cip))), ("x", x), ("dy", dy),
                 ("y", y), ("dx", x.grad)])


def adaptive_case(gen, name, kind, N, C, IH, IW, OH, OW):
    x = rand(gen, N, C, IH, IW).requires_grad_()
    if kind == "avg":
        y = F.adaptive_avg_pool2d(x, (OH, OW))
    elif kind == "max":
        y = F.adaptive_max_pool2d(x, (OH, OW))
    else:  # fastai AdaptiveConcatPool2d: cat([max, avg], 1)
        y = torch.cat([F.adaptive_max_pool2d(x, (OH, OW)), F.adaptive_avg_pool2d(x, (OH, OW))], 1)
    dy = rand(gen, *y.shape)
    y.backward(dy)
    write(name, [("cfg", cfg(N, C, IH, IW, OH, OW)), ("x", x), ("dy", dy), ("y", y),
                 ("dx", x.grad)])


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20240607)
    conv_case(gen, "conv_3x3_s1_p1_bias", 2, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, True)
    conv_case(gen, "conv_3x3_s2_p1", 2, 2, 9, 8, 3, 3, 3, 2, 2, 1, 1, False)
    conv_case(gen, "conv_1x1_s2_bias", 3, 4, 6, 5, 5, 1, 1, 2, 2, 0, 0, True)
    conv_case(gen, "conv_5x3_s2x1_p2x0_bias", 1, 2, 8, 7, 2, 5, 3, 2, 1, 2, 0, True)
    conv_case(gen, "conv_7x7_s2_p3", 2, 3, 12, 11, 4, 7, 7, 2, 2, 3, 3, False)
    bn_case(gen, "bn2d_train", (4, 3, 5, 5))
    bn_case(gen, "bn1d_train", (6, 5))
    pool_case(gen, "maxpool_k3_s2_p1", "max", 2, 3, 9, 9, 3, 2, 1)
    pool_case(gen, "maxpool_k2_s2", "max", 2, 2, 7, 6, 2, 2, 0)
    pool_case(gen, "avgpool_k3_s2_p1", "avg", 2, 3, 9, 8, 3, 2, 1, True)
    pool_case(gen, "avgpool_k3_s2_p1_nopad", "avg", 2, 3, 9, 8, 3, 2, 1, False)
    adaptive_case(gen, "adaptive_avg_7x9_3x4", "avg", 2, 3, 7, 9, 3, 4)
    adaptive_case(gen, "adaptive_max_7x9_3x4", "max", 2, 3, 7, 9, 3, 4)
    adaptive_case(gen, "concat_pool_7x7_1x1", "concat", 2, 4, 7, 7, 1, 1)
    adaptive_case(gen, "concat_pool_5x6_2x2", "concat", 2, 2, 5, 6, 2, 2)
    print("torch", torch.__version__, file=sys.stderr)


if __name__ == "__main__":
    main()
