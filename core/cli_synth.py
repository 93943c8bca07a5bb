# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d synth`: write synthetic dynamic 4D scenes in the 4D dataset layout (docs/datasets.md)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="dataset folder (sample_00000/, ...); existing samples are kept")
    p.add_argument("--scenes", type=int, default=16, help="number of scenes (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (scene i uses seed + i)")
    p.add_argument("--views", type=int, default=4, help="input cameras per scene (default 4)")
    p.add_argument("--frames", type=int, default=8, help="timesteps per scene (default 8)")
    p.add_argument("--heldout", type=int, default=2, help="held-out evaluation cameras (default 2)")
    p.add_argument("--size", default="64x64", help="WxH (default 64x64)")


def run(args: argparse.Namespace) -> int:
    from .cli_render import parse_size
    from .synthetic import SyntheticConfig, generate_dataset

    width, height = parse_size(args.size)
    if args.scenes < 1 or args.views < 1 or args.frames < 1:
        raise ValueError("--scenes, --views and --frames must be at least 1")
    cfg = SyntheticConfig(views=args.views, frames=args.frames, heldout_views=args.heldout, width=width, height=height)
    generate_dataset(args.out, args.scenes, cfg, seed=args.seed)
    print(f"{args.scenes} scenes in {args.out}")
    return 0
