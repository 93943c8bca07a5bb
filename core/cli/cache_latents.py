# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d cache-latents`: a frames dataset -> precomputed Wan latents + text states (core/wan/cache_latents.py)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder of frame samples (vVV_tTTT.png, prompt.txt; e.g. from render-dataset)")
    p.add_argument("--out", required=True, help="new dataset folder of latents.safetensors (+ text_embeds) samples")
    p.add_argument("--vae", required=True, help="diffusers AutoencoderKLWan folder (e.g. Wan2.1-T2V-1.3B-Diffusers/vae)")
    p.add_argument("--text-encoder", help="UMT5 folder with its tokenizer (e.g. .../text_encoder); else no text states")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="VAE dtype (default fp32)")
    p.add_argument("--device", default="auto", help="auto: this rank's GPU (LOCAL_RANK), else the CPU")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..wan.cache_latents import cache_latents

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    r = cache_latents(args.data, args.out, args.vae, args.text_encoder, args.device, dtype)
    print(f"cache-latents rank {r['rank']}/{r['world']}: {r['written']} samples encoded, "
          f"{r['done_before']} already cached, of {r['samples']}")
    return 0
