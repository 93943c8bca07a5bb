# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d reconstruct FRAMES_DIR --views V --out SEQ_DIR [--weights FILE]`: a V x T grid of images in,
a 4D splat sequence (manifest + one PLY per timestep, with the V predicted cameras) out."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("frames_dir", help="folder of vVV_tTTT.png images, or one sub-folder per view")
    p.add_argument("--views", type=int, required=True, help="number of views V in the grid (checked)")
    p.add_argument("--out", required=True, help="output 4D sequence folder")
    p.add_argument("--weights", help="safetensors weights: VGGT-1B / VGGT-1B-Commercial model.safetensors "
                                     "(or a converted model.pt) or a Fuse4D reconstructor checkpoint")
    p.add_argument("--config", default="full", choices=["full", "tiny"], help="model size (default full = VGGT-1B)")
    p.add_argument("--random-init", action="store_true",
                   help="run without weights (random model; only for tests and smoke runs)")
    p.add_argument("--analytic", action="store_true",
                   help="Gaussians from depth and pixels only (default when the weights have no Gaussian head)")
    p.add_argument("--no-camera-replacement", action="store_true",
                   help="let each timestep predict its own cameras (default: all share t=0's)")
    p.add_argument("--width", type=int, default=518, help="input width after resizing (default 518)")
    p.add_argument("--fps", type=float, default=8.0, help="playback rate stored in the manifest")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(args: argparse.Namespace):
    from .config import preset
    from .model import VGGT4D
    from .weights import load_vggt_weights, read_state_dict

    if not args.weights and not args.random_init:
        raise ValueError("--weights FILE is required (a randomly initialised model reconstructs nothing; "
                         "pass --random-init only for tests)")
    cfg = preset(args.config, camera_token_replacement=not args.no_camera_replacement)
    model = VGGT4D(cfg)
    has_head = False
    if args.weights:
        report = load_vggt_weights(model, args.weights)
        has_head = not any(k.startswith("gaussian_head.") for k in report.added_kept_init)
        print(report.summary())
    return model, has_head


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..cameras import cameras_to_dicts
    from ..io import Sequence4D, write_sequence
    from .frames import grid_files, load_grid

    if args.views < 1:
        raise ValueError("--views must be at least 1")
    files = grid_files(args.frames_dir, args.views)
    model, has_head = build_model(args)
    device = _device(args.device)
    model = model.to(device).eval()
    images = load_grid(files, args.width, model.cfg.patch_size).to(device)
    V, T, _, H, W = images.shape
    analytic = args.analytic or not has_head
    print(f"reconstructing {V} views x {T} timesteps at {W}x{H} ({'analytic' if analytic else 'Gaussian head'})")
    with torch.no_grad():
        out = model(images[None], heads=("camera", "depth") if analytic else ("camera", "depth", "gaussian"))
        gaussians = model.gaussians(images[None], out, analytic=analytic)[0]
    cameras = model.cameras(out, W, H)[0]
    frames = [g.to_arrays() for g in tqdm(gaussians, desc="timesteps", unit="t")]
    seq = Sequence4D(frames=frames, fps=args.fps, views=V, cameras=cameras_to_dicts(cameras[0]),
                     corresponding=False,
                     extra={"producer": "fuse4d reconstruct", "model": args.config,
                            "mode": "analytic" if analytic else "gaussian_head",
                            "camera_token_replacement": not args.no_camera_replacement,
                            "per_timestep_cameras": [cameras_to_dicts(c) for c in cameras[1:]]
                            if args.no_camera_replacement else []})
    path = write_sequence(args.out, seq)
    print(f"{T} timesteps x {len(frames[0])} Gaussians -> {Path(path)}")
    return 0
