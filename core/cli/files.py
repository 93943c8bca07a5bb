# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d info` and `fuse4d convert`."""
from __future__ import annotations

import argparse
import json

import numpy as np

from ..files import read_any, write_any
from ..io import Sequence4D, SplatArrays


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .ply/.splat/.spz/.glb/.gltf/.usd(a|c) file, or a 4D sequence folder / manifest.json")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def describe(arrays: SplatArrays) -> dict:
    means = arrays.means
    return {
        "count": len(arrays),
        "sh_degree": arrays.sh_degree,
        "bounds_min": means.min(axis=0).round(4).tolist() if len(arrays) else None,
        "bounds_max": means.max(axis=0).round(4).tolist() if len(arrays) else None,
    }


def run_info(args: argparse.Namespace) -> int:
    data = read_any(args.file)
    if isinstance(data, Sequence4D):
        counts = [len(f) for f in data.frames]
        allm = np.concatenate([f.means for f in data.frames]) if sum(counts) else np.zeros((0, 3))
        info = {
            "kind": "sequence",
            "timesteps": len(data.frames),
            "views": data.views,
            "fps": data.fps,
            "cameras": len(data.cameras or []),
            "corresponding": data.corresponding,
            "count_per_timestep": counts,
            "sh_degree": data.frames[0].sh_degree if data.frames else None,
            "bounds_min": allm.min(axis=0).round(4).tolist() if len(allm) else None,
            "bounds_max": allm.max(axis=0).round(4).tolist() if len(allm) else None,
        }
    else:
        info = {"kind": "static", **describe(data)}
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>20}: {value}")
    return 0


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="source: .ply/.splat/.spz/.glb/.gltf/.usd(a|c), a sequence folder or a folder "
                                 "of numbered PLYs (see --fps)")
    p.add_argument("output", help="target by extension: .ply/.splat/.spz/.glb (a sequence: one file per timestep), "
                                  ".usd/.usda/.usdc (a sequence: time samples in one file), or a folder (manifest + PLYs)")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of an input folder of numbered PLYs without "
                                                          "manifest.json (default 8)")


def run_convert(args: argparse.Namespace) -> int:
    written = write_any(args.output, read_any(args.input, fps=args.fps))
    for path in written:
        print(path)
    return 0
