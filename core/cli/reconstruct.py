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
    p.add_argument("--config", choices=["full", "tiny"],
                   help="model size for --random-init, or for a VGGT-format file without a stored config "
                        "(a Fuse4D checkpoint stores its own; a VGGT-1B file is recognised)")
    p.add_argument("--random-init", action="store_true",
                   help="run without weights (random model; only for tests and smoke runs)")
    p.add_argument("--analytic", action="store_true",
                   help="Gaussians from depth and pixels only (default when the weights have no Gaussian head)")
    p.add_argument("--no-camera-replacement", action="store_true",
                   help="let each timestep predict its own cameras (default: all share t=0's)")
    p.add_argument("--width", type=int, help="input width after resizing (default: the model's img_size, "
                                             "518 for VGGT-1B)")
    p.add_argument("--fps", type=float, default=8.0, help="playback rate stored in the manifest")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(args: argparse.Namespace):
    """-> (model, summary line). The config comes from the weights file when it has one."""
    from ..recon.checkpoint import file_config
    from ..recon.config import preset
    from ..recon.model import VGGT4D
    from ..recon.weights import load_vggt_weights

    if not args.weights and not args.random_init:
        raise ValueError("--weights FILE is required (a randomly initialised model reconstructs nothing; "
                         "pass --random-init only for tests)")
    if args.weights:
        cfg = file_config(args.weights, fallback=preset(args.config) if args.config else None)
        model = VGGT4D(cfg)
        summary = load_vggt_weights(model, args.weights, strict_additions=True).summary()
    else:
        model = VGGT4D(preset(args.config or "full"))
        summary = "random initialisation (--random-init)"
    model.cfg.camera_token_replacement = not args.no_camera_replacement
    return model, summary


def model_name(cfg) -> str:
    """'full' / 'tiny' when the config is a preset's (switches aside), else 'custom'."""
    import dataclasses

    from ..recon.config import full, tiny

    switches = ("enable_gaussian", "temporal_attention", "camera_token_replacement", "enable_point")
    same = {k: getattr(cfg, k) for k in switches}
    for name, make in (("full", full), ("tiny", tiny)):
        if dataclasses.replace(make(), **same) == cfg:
            return name
    return "custom"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..cameras import cameras_to_dicts
    from ..io import Sequence4D, write_sequence
    from ..recon.api import reconstruct_timesteps, uses_head
    from ..recon.frames import grid_files, load_grid

    if args.views < 1:
        raise ValueError("--views must be at least 1")
    files = grid_files(args.frames_dir, args.views)
    model, summary = build_model(args)
    print(summary)
    device = _device(args.device)
    model = model.to(device).eval()
    images = load_grid(files, args.width or model.cfg.img_size, model.cfg.patch_size)
    V, T, _, H, W = images.shape
    analytic = not uses_head(model, True if args.analytic else None)
    print(f"reconstructing {V} views x {T} timesteps at {W}x{H} ({'analytic' if analytic else 'Gaussian head'})")
    with tqdm(total=T, desc="timesteps", unit="t") as bar:
        gaussians, cameras = reconstruct_timesteps(model, images, progress=bar.update, analytic=analytic)
    frames = [g.to_arrays() for g in gaussians]
    seq = Sequence4D(frames=frames, fps=args.fps, views=V, cameras=cameras_to_dicts(cameras[0]),
                     corresponding=False,
                     extra={"producer": "fuse4d reconstruct", "model": model_name(model.cfg),
                            "weights": Path(args.weights).name if args.weights else None,
                            "mode": "analytic" if analytic else "gaussian_head",
                            "camera_token_replacement": not args.no_camera_replacement,
                            "per_timestep_cameras": [cameras_to_dicts(c) for c in cameras[1:]]
                            if args.no_camera_replacement else []})
    path = write_sequence(args.out, seq)
    print(f"{T} timesteps x {len(frames[0])} Gaussians -> {Path(path)}")
    return 0
