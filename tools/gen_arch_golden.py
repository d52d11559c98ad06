#!/usr/bin/python3
"""Golden vectors for thawd's vision architectures, computed with PyTorch.

    /usr/bin/python3 tools/gen_arch_golden.py [--out tests/data/arch] [--resnet18 DIR]

Writes safetensors files holding a model's state_dict (names as thawd uses them) plus
"__"-prefixed tensors that thawd's weight loader ignores:
  cnn_small.safetensors  M1 (nn.Sequential(body, head), DESIGN.md section 7) for 1x32x32
      inputs, batch 4, 5 classes, random weights and running statistics:
      __x [4,1,32,32], __labels [4] (as float), __eval_logits (eval mode),
      __train_logits, __loss, __grad.<name> for every trainable tensor (train mode, one
      forward/backward of the mean cross-entropy, head dropout disabled since its mask is
      random), __rm.<bn> running means after that train forward.
  block.safetensors  one torchvision BasicBlock(8 -> 16, stride 2, downsample), input
      [2,8,9,9]: __x, __r (loss = sum(y * r)), __eval_y, __train_y, __grad.<name>, __dx.
With --resnet18 DIR (not committed: 45 MB), resnet18 with torchvision's head, 1x32x32
inputs, 10 classes: DIR/resnet18.safetensors with __x and __eval_logits; test_engine_golden
compares it when THAWD_RESNET18_GOLDEN=DIR is set.
"""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def randomize_bn(m, g):
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(1 + 0.3 * torch.rand(mod.running_var.shape, generator=g))
                mod.num_batches_tracked.fill_(3)


def m1(in_ch, n_out):
    def cbr(ic, oc, stride=1):
        return [nn.Conv2d(ic, oc, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(oc),
                nn.ReLU()]
    body = nn.Sequential(nn.Sequential(*cbr(in_ch, 32)),
                         nn.Sequential(*cbr(32, 32), *cbr(32, 64, 2)),
                         nn.Sequential(*cbr(64, 64), *cbr(64, 128, 2)))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
                         nn.Linear(128, n_out))
    return nn.Sequential(body, head)


def state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def cnn_small(out):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    m = m1(1, 5)
    randomize_bn(m, g)
    sd = state(m)
    x = torch.randn(4, 1, 32, 32, generator=g)
    y = torch.tensor([0, 3, 1, 4])
    t = dict(sd)
    m.eval()
    with torch.no_grad():
        t["__eval_logits"] = m(x)
    m.train()
    m[1][2].eval()  # dropout off: its mask cannot be reproduced
    logits = m(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    t["__x"], t["__labels"] = x, y.float()
    t["__train_logits"], t["__loss"] = logits.detach(), loss.detach().reshape(1)
    for k, p in m.named_parameters():
        t["__grad." + k] = p.grad.detach()
    for k, v in m.state_dict().items():
        if k.endswith("running_mean"):
            t["__rm." + k] = v.detach().clone()
    safetensors_io.save(os.path.join(out, "cnn_small.safetensors"), t, {"arch": "cnn-small"})
    print(f"cnn_small: loss {loss.item():.6f}")


def block(out):
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    ds = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    b = torchvision.models.resnet.BasicBlock(8, 16, stride=2, downsample=ds)
    randomize_bn(b, g)
    t = state(b)
    x = torch.randn(2, 8, 9, 9, generator=g)
    r = torch.randn(2, 16, 5, 5, generator=g)
    b.eval()
    with torch.no_grad():
        t["__eval_y"] = b(x)
    b.train()
    xg = x.clone().requires_grad_(True)
    yv = b(xg)
    (yv * r).sum().backward()
    t["__x"], t["__r"], t["__train_y"], t["__dx"] = x, r, yv.detach(), xg.grad.detach()
    for k, p in b.named_parameters():
        t["__grad." + k] = p.grad.detach()
    safetensors_io.save(os.path.join(out, "block.safetensors"), t, {"arch": "basic_block"})
    print("block: written")


def resnet18(out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    randomize_bn(m, g)
    t = state(m)
    x = torch.randn(2, 1, 32, 32, generator=g)
    m.eval()
    with torch.no_grad():
        t["__eval_logits"] = m(x)
    t["__x"] = x
    safetensors_io.save(os.path.join(out, "resnet18.safetensors"), t, {"arch": "resnet18"})
    print(f"resnet18: written to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "arch"))
    ap.add_argument("--resnet18")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    cnn_small(a.out)
    block(a.out)
    if a.resnet18:
        resnet18(a.resnet18)


if __name__ == "__main__":
    main()
