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
    p.add_argument("--size", default="64x64", help="WxH (default 64x64; square for --kind motion)")
    p.add_argument("--kind", choices=("gaussians", "motion"), default="gaussians",
                   help="'gaussians': textured Gaussian objects (the reconstructor's data); 'motion': ray-cast "
                        "scenes with real motion (the 4D completion benchmark's, core/motion_scenes.py)")
    p.add_argument("--rig", choices=("fixed", "random"), default="fixed", help="camera rig of --kind motion")


def run(args: argparse.Namespace) -> int:
    from .render import parse_size
    from ..synthetic import SyntheticConfig, generate_dataset

    width, height = parse_size(args.size)
    if args.scenes < 1 or args.views < 1 or args.frames < 1:
        raise ValueError("--scenes, --views and --frames must be at least 1")
    if args.kind == "motion":
        from ..motion_scenes import MotionSceneConfig, write_motion_dataset

        if width != height:
            raise ValueError("--kind motion renders square frames: give --size NxN")
        write_motion_dataset(args.out, args.scenes, MotionSceneConfig(views=args.views, frames=args.frames,
                                                                      heldout_views=args.heldout, size=width,
                                                                      rig=args.rig), seed=args.seed)
    else:
        cfg = SyntheticConfig(views=args.views, frames=args.frames, heldout_views=args.heldout, width=width,
                              height=height)
        generate_dataset(args.out, args.scenes, cfg, seed=args.seed)
    print(f"{args.scenes} scenes in {args.out}")
    return 0
