# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d render`: a splat scene (or one timestep of a 4D sequence) from orbit cameras."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class OrbitSpec:
    views: int
    arc_deg: float = 360.0


def parse_cameras(text: str) -> OrbitSpec:
    """`orbit:N` or `orbit:N:ARC_DEG`."""
    parts = text.split(":")
    if parts[0] != "orbit" or len(parts) not in (2, 3):
        raise ValueError(f"--cameras {text!r}: expected orbit:N or orbit:N:ARC_DEG")
    try:
        spec = OrbitSpec(int(parts[1]), float(parts[2]) if len(parts) == 3 else 360.0)
    except ValueError:
        raise ValueError(f"--cameras {text!r}: N must be an integer and ARC_DEG a number") from None
    if spec.views < 1 or spec.views > 1024:
        raise ValueError(f"--cameras {text!r}: N must be between 1 and 1024")
    return spec


def parse_size(text: str) -> tuple[int, int]:
    """`WxH` -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WxH, e.g. 256x256") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise ValueError(f"--size {text!r}: width and height must be within 8..8192")
    return w, h


def framing(means: np.ndarray) -> tuple[np.ndarray, float]:
    """A robust look-at target and orbit radius for a captured scene (ignores far outliers)."""
    lo, hi = np.percentile(means, 2, axis=0), np.percentile(means, 98, axis=0)
    target = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo)) * 1.1 + 1e-3
    return target, radius


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", help="'sample' (the bundled sample scene), a .ply/.splat/.spz, or a sequence folder")
    p.add_argument("--cameras", default="orbit:8", help="orbit:N[:ARC_DEG] (default orbit:8, full circle)")
    p.add_argument("--size", default="256x256", help="WxH (default 256x256)")
    p.add_argument("--out", required=True, help="output folder for view_XX.png and contact_sheet.png")
    p.add_argument("--elevation", type=float, default=20.0, help="camera elevation in degrees (default 20)")
    p.add_argument("--radius", type=float, default=None, help="orbit radius (default: from the scene bounds)")
    p.add_argument("--fov", type=float, default=50.0, help="vertical field of view in degrees (default 50)")
    p.add_argument("--timestep", type=int, default=0, help="which timestep of a 4D sequence (default 0)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"], help="rasterizer")


def load_scene_gaussians(scene: str, timestep: int = 0):
    """'sample' or a file/sequence -> Gaussians (torch)."""
    from ..gaussians import Gaussians

    if scene == "sample":
        from ..scene import sample_scene

        return sample_scene()
    from ..files import read_any
    from ..io import Sequence4D

    data = read_any(scene)
    if isinstance(data, Sequence4D):
        if not 0 <= timestep < len(data.frames):
            raise ValueError(f"{scene}: --timestep {timestep} outside 0..{len(data.frames) - 1}")
        data = data.frames[timestep]
    return Gaussians.from_arrays(data)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..cameras import orbit_cameras
    from ..images import contact_sheet, save_png
    from ..render import render

    spec = parse_cameras(args.cameras)
    width, height = parse_size(args.size)
    gaussians = load_scene_gaussians(args.scene, args.timestep)
    if len(gaussians.means) == 0:
        raise ValueError(f"{args.scene}: the scene has no Gaussians")
    target, radius = framing(gaussians.means.detach().cpu().numpy())
    cameras = orbit_cameras(spec.views, radius=args.radius or radius, elevation_deg=args.elevation,
                            arc_deg=spec.arc_deg, target=target, fov_deg=args.fov, width=width, height=height)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for i in tqdm(range(spec.views), desc="render", unit="view"):
        rgb = render(gaussians, cameras[i:i + 1], backend=args.backend).rgb[0]
        images.append(rgb.detach().cpu().numpy())
        save_png(out / f"view_{i:02d}.png", images[-1])
    save_png(out / "contact_sheet.png", contact_sheet(images))
    print(f"wrote {spec.views} views and contact_sheet.png to {out}")
    return 0
