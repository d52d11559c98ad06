#!/usr/bin/python3
"""Export a torchvision model's state_dict to a safetensors file thawd loads as-is.

    /usr/bin/python3 tools/torch_to_safetensors.py resnet18 out.safetensors [--in-ch 1]
        [--num-classes 1000] [--seed 0] [--state-dict model.pth]

Without --state-dict the model is torchvision's architecture with a seeded random
initialisation (no weights can be downloaded here); with it, the given .pth state_dict (for
example one trained elsewhere) is loaded first. Names are PyTorch's state_dict names,
including BatchNorm running statistics and num_batches_tracked.
"""
import argparse
import sys

import torch
import torchvision

import safetensors_io


def build(arch, in_ch, num_classes):
    ctor = getattr(torchvision.models, arch, None)
    if ctor is None:
        sys.exit(f"unknown torchvision architecture: {arch}")
    m = ctor(num_classes=num_classes)
    if in_ch != 3 and hasattr(m, "conv1"):
        m.conv1 = torch.nn.Conv2d(in_ch, m.conv1.out_channels, kernel_size=m.conv1.kernel_size,
                                  stride=m.conv1.stride, padding=m.conv1.padding, bias=False)
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch")
    ap.add_argument("out")
    ap.add_argument("--in-ch", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--state-dict")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    m = build(a.arch, a.in_ch, a.num_classes)
    if a.state_dict:
        m.load_state_dict(torch.load(a.state_dict, map_location="cpu"))
    safetensors_io.save(a.out, m.state_dict(), {"arch": a.arch, "source": "torchvision"})
    print(f"wrote {a.out}: {len(m.state_dict())} tensors")


if __name__ == "__main__":
    main()
