# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d demo`: the main job on the embedded default.

Until the tiny trained models land, the demo renders the bundled sample scene from an orbit
(the first step of "animate a captured scene")."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--views", type=int, default=8, help="number of orbit views (default 8)")
    p.add_argument("--size", default="256x256", help="WxH of each view (default 256x256)")


def run(args: argparse.Namespace) -> int:
    from .cli_render import run as render_run

    ns = argparse.Namespace(scene="sample", cameras=f"orbit:{args.views}", size=args.size, out=args.out,
                            elevation=20.0, radius=None, fov=50.0, timestep=0, backend="auto")
    return render_run(ns)
