# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d train-recon`: train the feed-forward 4D reconstructor (static then dynamic stage).

Single process: `fuse4d train-recon --config tiny`; several GPUs:
`torchrun --nproc_per_node 8 -m fuse4d train-recon --config paper --init-weights vggt.safetensors`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="preset: tiny (CPU, minutes), ablation, smoke, paper")
    p.add_argument("--config-json", help="a JSON file of ReconTrainConfig fields overriding the preset")
    p.add_argument("--data", help="'synthetic' (made on the fly, default) or a dataset folder (docs/datasets.md)")
    p.add_argument("--out", help="checkpoint folder (training resumes from its last checkpoint)")
    p.add_argument("--static-steps", type=int)
    p.add_argument("--dynamic-steps", type=int)
    p.add_argument("--init-weights", help="safetensors to start from (e.g. converted VGGT-1B weights)")
    p.add_argument("--no-camera-token-replacement", action="store_true", help="ablation: replacement off")
    p.add_argument("--no-temporal-attention", action="store_true", help="ablation: no temporal layers")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    p.add_argument("--export", help="after training, write the weights (safetensors) + a JSON record here, "
                                    "with the held-out PSNR of the trained and the untrained model")
    p.add_argument("--eval-scenes", type=int, help="held-out scenes for the PSNR in --export")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="CPU threads for torch (e.g. 1 on a shared machine)")


def config_from_args(args: argparse.Namespace):
    from ..synthetic import SyntheticConfig
    from ..recon.train import ReconTrainConfig, preset

    cfg = preset(args.config)
    if args.config_json:
        data = {**cfg.to_json(), **json.loads(Path(args.config_json).read_text())}
        cfg = ReconTrainConfig.from_json(data)
    changes = {}
    for name in ("data", "out", "static_steps", "dynamic_steps", "init_weights", "eval_scenes", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if args.no_camera_token_replacement:
        changes["camera_token_replacement"] = False
    if args.no_temporal_attention:
        changes["temporal_attention"] = False
    cfg = dataclasses.replace(cfg, **changes)
    if not isinstance(cfg.synth, SyntheticConfig):
        raise ValueError("synth must be a SyntheticConfig")
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..recon.train import train
    from ..recon.train_report import export_trained

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    result = train(cfg, resume=not args.no_resume)
    print(f"trained to step {result['step']}; last checkpoint {result['checkpoint']}")
    if args.export:
        record = export_trained(result["model"], cfg, args.export, result)
        s = record["scores"]
        print(f"held-out PSNR: trained {s['trained']['psnr_heldout']:.2f} dB, trained analytic "
              f"{s['trained_analytic']['psnr_heldout']:.2f} dB, untrained {s['untrained']['psnr_heldout']:.2f} dB "
              f"-> {args.export} (+ .json)")
    return 0
