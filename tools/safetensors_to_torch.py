#!/usr/bin/python3
"""Convert a thawd safetensors file back to a PyTorch state_dict (.pth).

    /usr/bin/python3 tools/safetensors_to_torch.py in.safetensors out.pth [--check ARCH --in-ch 1 --num-classes N]

With --check, the state_dict is loaded strictly into the named torchvision architecture,
so a missing, unexpected or wrongly shaped tensor is reported by PyTorch.
"""
import argparse

import torch

import safetensors_io
from torch_to_safetensors import build


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--check")
    ap.add_argument("--in-ch", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=1000)
    a = ap.parse_args()
    tensors, meta = safetensors_io.load(a.src)
    sd = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
    if a.check:
        build(a.check, a.in_ch, a.num_classes).load_state_dict(sd, strict=True)
    torch.save(sd, a.out)
    print(f"wrote {a.out}: {len(sd)} tensors; metadata {meta}")


if __name__ == "__main__":
    main()
