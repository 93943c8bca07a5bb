# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d animate-scene --job JOB --out DIR`: the local back end of the Blender add-on's
"animate a captured scene" (the job folder protocol is core/io/job.py).

JOB/cameras.json lists V cameras (OpenCV world-to-camera `viewmat`, `K`, `width`, `height`) and
the frozen-time render of each; the answer in DIR is a 4D sequence in the job's world, with the
job's cameras in its manifest. Progress goes to stdout as `progress <fraction> <message>` lines.
"""
from __future__ import annotations

import argparse
from pathlib import Path

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", required=True, help="job folder with cameras.json and the frozen-time views")
    p.add_argument("--out", required=True, help="output 4D sequence folder")
    p.add_argument("--frames", type=int, help="frames per view (default: the job's)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the video model's own setting)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video-model", help="a Fuse4D video model folder (default: the shipped tiny model)")
    p.add_argument("--recon", help="reconstructor weights (.safetensors; default: the shipped tiny model)")
    p.add_argument("--vae", help="diffusers AutoencoderKLWan folder, for Wan-latent video models")
    p.add_argument("--text-encoder", help="UMT5 folder to encode the job's prompt (Wan models)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def load_views(folder: Path, job: dict):
    """[V, H, W, 3] float views, one per job camera (all the same size)."""
    import numpy as np
    import torch

    from ..images import load_image
    from ..io.paths import safe_member

    images = []
    for cam in job["cameras"]:
        path = safe_member(folder, cam["image"], what="job image")  # read_job checked it too
        if not path.exists():
            raise FileNotFoundError(f"{path}: view image not found")
        images.append(load_image(path))
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"{folder}: the view images differ in size")
    return torch.from_numpy(np.stack(images))


def run(args: argparse.Namespace) -> int:
    from ..jobs import animate
    from ..cameras import cameras_from_dicts, cameras_to_dicts
    from ..io import read_job, write_sequence

    def progress(fraction: float, message: str) -> None:
        print(f"progress {fraction:.3f} {message}", flush=True)

    folder = Path(args.job)
    job = read_job(folder)
    views = load_views(folder, job)
    cameras = cameras_from_dicts(job["cameras"])
    frames = int(args.frames or job.get("frames") or 8)
    if frames < 1 or (args.steps or 1) < 1:
        raise ValueError("--frames and --steps must be at least 1")
    progress(0.0, "loading models")
    models = animate.load_models(args.video_model, args.recon, args.vae, args.text_encoder, args.device)
    settings = animate.AnimateSettings(frames=frames, steps=args.steps, seed=args.seed, prompt=job.get("prompt", ""))
    result = animate.animate_views(models, views, cameras, settings,
                                   progress=lambda f, m: progress(0.05 + 0.9 * f, m))
    seq = animate.sequence_of(result, float(job.get("fps", 8.0)), {"producer": "fuse4d animate-scene", **models.names})
    seq.cameras = cameras_to_dicts(cameras)  # the job's cameras at the job's image size
    write_sequence(args.out, seq)
    progress(1.0, f"wrote {len(seq)} timesteps to {args.out}")
    return 0
