# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d demo`: the main job on the embedded default (core/jobs/demo.py)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--views", type=int, default=4, help="views V on the arc (default 4)")
    p.add_argument("--frames", type=int, help="frames T per view (default: the video model's, 8 for the tiny one)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the video model's own setting)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--heldout", type=int, default=3, help="held-out cameras for the PSNR (default 3)")
    p.add_argument("--arc", type=float, default=90.0, help="arc of the cameras in degrees (default 90)")
    p.add_argument("--video-model", help="a Fuse4D video model folder (default: the shipped tiny model)")
    p.add_argument("--recon", help="reconstructor weights (.safetensors; default: the shipped tiny model)")
    p.add_argument("--vae", help="diffusers AutoencoderKLWan folder, for Wan-latent video models")
    p.add_argument("--text-encoder", help="UMT5 folder to encode --prompt (Wan models)")
    p.add_argument("--prompt", default="", help="text prompt (models trained with text)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (1 = off; default: the model's)")
    p.add_argument("--preview-size", type=int, default=160, help="pixel size of a preview tile (default 160)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--scene", help="a dynamic 4D dataset sample for the completion part (default: the bundled one)")
    p.add_argument("--completion-model", help="a Fuse4D video model folder for the completion (default: the "
                                              "shipped weights/video_motion)")
    p.add_argument("--no-completion", action="store_true", help="skip the completion part")


def run(args: argparse.Namespace) -> int:
    from ..jobs.demo import run_demo

    return run_demo(args)
