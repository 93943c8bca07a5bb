# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d convert-weights SRC DST`: a pickled checkpoint (.pt/.pth/.bin) to safetensors, once.

The one place that unpickles, and only with `torch.load(weights_only=True)` (tensors, no code)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a pickled state dict (.pt / .pth / .bin), e.g. VGGT's model.pt")
    p.add_argument("dst", help="the .safetensors file to write")


def run(args: argparse.Namespace) -> int:
    from ..weights_file import check_safetensors, convert_to_safetensors

    if not str(args.dst).endswith(".safetensors"):
        raise ValueError(f"{args.dst}: the output must be a .safetensors file")
    out = convert_to_safetensors(args.src, args.dst)
    tensors = len([k for k in check_safetensors(out) if k != "__metadata__"])
    print(f"wrote {out} ({tensors} tensors)")
    return 0
