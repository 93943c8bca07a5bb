# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d render-dataset`: animated 3D assets -> 4D training samples (docs/datasets.md) with Blender."""
from __future__ import annotations

import argparse


def _pair(text: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected MIN,MAX") from None
    if lo > hi:
        raise ValueError(f"{name} {text!r}: MIN is larger than MAX")
    return lo, hi


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..render_dataset.plan import LIGHTINGS, RenderSettings

    d = RenderSettings()
    p.add_argument("assets", help="an asset (.glb/.gltf/.fbx/.blend with actions) or a folder of them (recursive)")
    p.add_argument("--out", help="dataset folder (one sample_folder per sample); finished samples are kept")
    p.add_argument("--shard", default="0/1", help="i/n: render only shard i of n (independent, deterministic)")
    p.add_argument("--views", type=int, default=d.views, help=f"cameras on the arc (default {d.views})")
    p.add_argument("--frames", type=int, default=d.frames, help=f"frames per view (default {d.frames}; 1 + 4k for Wan)")
    p.add_argument("--heldout", type=int, default=d.heldout, help=f"held-out cameras (default {d.heldout})")
    p.add_argument("--size", default=f"{d.width}x{d.height}", help=f"WxH (default {d.width}x{d.height})")
    p.add_argument("--arc-samples", type=int, default=d.arc_samples,
                   help=f"dynamic samples per asset, views on a fixed arc (default {d.arc_samples})")
    p.add_argument("--frozen-samples", type=int, default=d.frozen_samples,
                   help=f"frozen-time samples per asset (default {d.frozen_samples})")
    p.add_argument("--arc", type=float, default=d.arc_deg, help=f"arc the views span, degrees (default {d.arc_deg:g})")
    p.add_argument("--elevation", default="{:g},{:g}".format(*d.elevation),
                   help="camera elevation range in degrees, drawn per sample (default %(default)s)")
    p.add_argument("--radius", default="{:g},{:g}".format(*d.radius),
                   help="camera distance range (the object fits the unit cube; default %(default)s)")
    p.add_argument("--fov", type=float, default=d.fov_deg, help=f"vertical field of view (default {d.fov_deg:g})")
    p.add_argument("--frame-step", type=float, default=d.frame_step,
                   help=f"asset frames between rendered frames (default {d.frame_step:g})")
    p.add_argument("--lighting", choices=LIGHTINGS, default=d.lighting, help=f"default {d.lighting}")
    p.add_argument("--background", default=d.background, help="white, black, grey, random or R,G,B (default white)")
    p.add_argument("--engine", choices=("cycles", "eevee"), default=d.engine, help=f"default {d.engine}")
    p.add_argument("--render-samples", type=int, default=d.samples, help=f"samples per pixel (default {d.samples})")
    p.add_argument("--no-depth", action="store_true", help="do not write depth.safetensors")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every random choice (default 0)")
    p.add_argument("--blender", help="Blender executable or a Python with bpy (default: this Python, else PATH)")
    p.add_argument("--threads", type=int, default=0, help="Blender render threads (0: all)")
    p.add_argument("--asset-timeout", type=float, default=3600.0, help="seconds one asset may take (default 3600)")
    p.add_argument("--make-test-assets", type=int, metavar="N",
                   help="write N procedural animated .glb assets into ASSETS and exit")


def settings_from_args(args: argparse.Namespace):
    from .render import parse_size
    from ..render_dataset.plan import RenderSettings

    width, height = parse_size(args.size)
    return RenderSettings(views=args.views, frames=args.frames, heldout=args.heldout, width=width, height=height,
                          arc_samples=args.arc_samples, frozen_samples=args.frozen_samples, arc_deg=args.arc,
                          elevation=_pair(args.elevation, "--elevation"), radius=_pair(args.radius, "--radius"),
                          fov_deg=args.fov, frame_step=args.frame_step, lighting=args.lighting,
                          background=args.background, engine=args.engine, samples=args.render_samples,
                          depth=not args.no_depth, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from ..render_dataset import make_test_assets, run_shard
    from ..render_dataset.plan import parse_shard

    if args.make_test_assets is not None:
        if args.make_test_assets < 1:
            raise ValueError("--make-test-assets needs N >= 1")
        for path in make_test_assets(args.assets, args.make_test_assets, args.seed, blender=args.blender):
            print(path)
        return 0
    if not args.out:
        raise ValueError("--out is required (the dataset folder)")
    settings = settings_from_args(args)
    report = run_shard(args.assets, args.out, settings, parse_shard(args.shard), blender=args.blender,
                       threads=args.threads, asset_timeout=args.asset_timeout)
    print(f"shard {report['shard']}/{report['of']}: {report['assets']} assets, {report['samples_written']} samples "
          f"written, {report['samples_done_before']} already done, {len(report['skipped_assets'])} assets skipped, "
          f"{len(report['failed_samples'])} samples failed, {report['seconds']:.1f} s")
    return 0
