# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d export-comfy`: a train-video run as files ComfyUI's stock loaders read (core/wan/export_comfy.py)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a train-video --out folder (model/ + checkpoints/) or a model folder")
    p.add_argument("--model-out", help="the fine-tuned Wan as one .safetensors for UNETLoader (models/diffusion_models/)")
    p.add_argument("--lora-out", help="the LoRA of a --train lora run for LoraLoaderModelOnly (models/loras/)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="bf16",
                   help="tensor type of the model file (default bf16, as the Wan releases; the LoRA stays fp32)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..wan.export_comfy import export_lora, export_model

    if not args.model_out and not args.lora_out:
        raise ValueError("nothing to write: give --model-out and/or --lora-out")
    if args.model_out:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        print(f"model: {export_model(args.run, args.model_out, dtype)}")
    if args.lora_out:
        print(f"LoRA: {export_lora(args.run, args.lora_out)}")
    return 0
