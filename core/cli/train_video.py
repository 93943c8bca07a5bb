# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d train-video`: fine-tune a Wan transformer into a fused 4D model, or train the tiny one.

  fuse4d train-video --config tiny --out runs/video_tiny   # CPU, synthetic 4D scenes, ~25 min on one thread
  torchrun --nproc-per-node 8 -m fuse4d train-video --config wan2.1-t2v-1.3b \
      --init wan2.1_t2v_1.3B.safetensors --data DATASET --vae Wan2.1-T2V-1.3B-Diffusers/vae --out runs/wan4d
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from ..wan.keys import CONFIGS
from ..wan.model_io import VideoModelConfig
from ..wan.flow import NOISE_LEVELS
from ..wan.trainer import TrainVideoConfig, motion_config, tiny_config, train_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", choices=sorted(set(CONFIGS) | {"motion"}),
                        help="architecture: 'motion' (the 4D completion model) and 'tiny' train from scratch on "
                             "the CPU; the Wan names fine-tune --init")
    parser.add_argument("--out", default=None, help="output folder (checkpoints/, model/, log.jsonl)")
    parser.add_argument("--init", default=None, help="base Wan weights (.safetensors, original/ComfyUI or diffusers keys)")
    parser.add_argument("--data", default=None, help="dataset folder (docs/datasets.md); omit for synthetic grids")
    parser.add_argument("--source", choices=("motion", "scenes", "blobs"), default=None,
                        help="synthetic grids without --data: 4D scenes (rendered once, cached) or instant blobs")
    parser.add_argument("--scenes", type=int, default=None, help="synthetic training scenes (seeds 0 .. N-1)")
    parser.add_argument("--data-cache", default=None, help="rendered-scene cache (default ~/.cache/fuse4d/video_scenes)")
    parser.add_argument("--size", type=int, default=None, help="square size of synthetic frames")
    parser.add_argument("--attention", choices=("fused", "sequential", "parallel", "time"), default=None,
                        help="self-attention pattern: the paper's fused (default), a study baseline, or the "
                             "time-only control")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny default 1)")
    parser.add_argument("--vae", default=None, help="diffusers AutoencoderKLWan folder for PNG datasets (Wan configs)")
    parser.add_argument("--text-encoder", default=None, help="UMT5 folder to encode prompt.txt files")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--views", type=int, default=None, help="views per synthetic grid")
    parser.add_argument("--frames", type=int, default=None, help="pixel frames per view of synthetic grids")
    parser.add_argument("--t-max", type=int, default=None, help="RoPE time slots per view (latent frames)")
    parser.add_argument("--train", choices=("attn", "lora", "full"), default=None,
                        help="what trains: self-attention q/k/v/o (default for Wan), LoRA on them, or everything")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--noise", choices=NOISE_LEVELS, default=None,
                        help="training noise levels (default: the config's; 'shifted' = as the sampler visits them)")
    parser.add_argument("--pure-noise", type=float, default=None,
                        help="probability of noise level exactly 1, where the first sampling step runs")
    parser.add_argument("--patch-embed-conditioning", action="store_true",
                        help="also add the reference frames' patch embeddings (the paper's conditioning)")
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    parser.add_argument("--dist", choices=("ddp", "fsdp2"), default="ddp", help="strategy under torchrun")
    parser.add_argument("--backend", default="auto", help="fused attention backend (auto, merge, flex, reference)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)


def config_from_args(args: argparse.Namespace) -> TrainVideoConfig:
    if args.config == "tiny":
        cfg = tiny_config(out=args.out or "runs/video-tiny")
    elif args.config == "motion":
        cfg = motion_config(out=args.out or "runs/video_motion")
    else:
        wan = CONFIGS[args.config]
        model = VideoModelConfig(wan=wan, t_max=32, codec="wan-vae",
                                 per_token_timestep=args.config.startswith("wan2.2"))
        cfg = TrainVideoConfig(out=args.out or f"runs/{args.config}-4d", model=model, views=8, frames=29,
                               size=256, lr=1e-4, train="attn", save_every=500)
    overrides = {"init": args.init, "data": args.data, "vae": args.vae, "text_encoder": args.text_encoder,
                 "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "views": args.views,
                 "frames": args.frames, "train": args.train, "save_every": args.save_every, "source": args.source,
                 "scenes": args.scenes, "data_cache": args.data_cache, "size": args.size, "threads": args.threads,
                 "noise": args.noise, "pure_noise": args.pure_noise}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    model = cfg.model
    if args.t_max is not None:
        model = replace(model, t_max=args.t_max)
    if args.patch_embed_conditioning:
        model = replace(model, patch_embed_conditioning=True)
    if args.attention is not None:
        model = replace(model, attention=args.attention)
    return replace(cfg, model=model, lora_rank=args.lora_rank, resume=not args.no_resume,
                   dist=args.dist, backend=args.backend, device=args.device, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.model.codec == "wan-vae" and not cfg.data:
        raise ValueError(f"--config {args.config} needs --data (synthetic grids are for --config tiny)")
    result = train_video(cfg)
    losses = result["losses"]
    if losses:
        k = max(1, min(20, len(losses) // 4))
        print(f"train-video: {len(losses)} steps, loss {sum(losses[:k]) / k:.4f} -> {sum(losses[-k:]) / k:.4f}; "
              f"model written to {result['model_dir']}")
    return 0
