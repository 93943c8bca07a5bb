# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d cache-latents`: encode a frames dataset once (Wan VAE per view, UMT5 per caption) into the
precomputed-latents form `train-video` reads fastest (docs/datasets.md): per sample
`latents.safetensors` ("latents" [C, V*T', h, w], metadata views) + `text_embeds.safetensors`
("text_embeds" [L, D]), with the sample's prompt.txt / cameras.json copied beside them.

Sharded like the trainer: under torchrun every rank takes samples rank, rank + world, ... on its own
device (LOCAL_RANK's GPU, else the CPU); no collectives, so ranks never wait for each other. A sample
whose latents exist is skipped (resumable); each is written under a temporary name and renamed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

COPIED = ("prompt.txt", "cameras.json")


def _rank_world() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", _rank_world()[2] % torch.cuda.device_count())
    return torch.device("cpu")


class TextEncoder:
    """UMT5 encoder states for prompts, loaded once (zero after the last real token, as Wan)."""

    def __init__(self, path: str, device: torch.device, max_length: int = 512):
        from transformers import AutoTokenizer, UMT5EncoderModel

        self.tok = AutoTokenizer.from_pretrained(path)
        self.enc = UMT5EncoderModel.from_pretrained(path).to(device).eval()
        self.device, self.max_length = device, max_length

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        ids = self.tok([prompt], padding="max_length", max_length=self.max_length, truncation=True,
                       return_attention_mask=True, return_tensors="pt")
        states = self.enc(ids.input_ids.to(self.device), ids.attention_mask.to(self.device)).last_hidden_state[0]
        states = states.float().cpu()
        states[int(ids.attention_mask.sum()):] = 0
        return states


def sample_folders(data: str | os.PathLike) -> list[Path]:
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {data}")
    found = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise ValueError(f"{data}: no sample folders")
    return found


def cache_latents(data: str | os.PathLike, out: str | os.PathLike, vae: str, text_encoder: str | None = None,
                  device: str = "auto", dtype: torch.dtype = torch.float32, progress: bool = True) -> dict:
    """Encode this rank's share of `data` into `out`; returns counts for this rank."""
    from diffusers import AutoencoderKLWan
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from ..io import atomic_folder
    from .codecs import WanVAECodec
    from .data import read_sample

    rank, world, _ = _rank_world()
    out = Path(out)
    if Path(data).resolve() == out.resolve():
        raise ValueError("--out must differ from the frames dataset (latents go into a new dataset folder)")
    mine = sample_folders(data)[rank::world]
    dev = pick_device(device)
    codec = WanVAECodec(AutoencoderKLWan.from_pretrained(vae, torch_dtype=dtype).to(dev).eval())
    encoder = TextEncoder(text_encoder, dev) if text_encoder else None
    done = written = 0
    for folder in tqdm(mine, desc=f"cache-latents {rank}/{world}", disable=not progress, unit="sample"):
        target = out / folder.name
        if (target / "latents.safetensors").is_file():
            done += 1
            continue
        sample = read_sample(str(folder))
        if "frames" not in sample:
            raise ValueError(f"{folder}: holds latents already, not frames")
        grid = sample["frames"]  # [V, T, H, W, 3]
        codec.latent_frames(grid.shape[1])  # a clear error for frame counts the causal VAE cannot take
        latents = torch.cat([codec.encode(grid[v].to(dev)).cpu() for v in range(grid.shape[0])], dim=1)
        with atomic_folder(target) as tmp:
            save_file({"latents": latents.contiguous()}, str(tmp / "latents.safetensors"),
                      metadata={"views": str(grid.shape[0]), "frames": str(grid.shape[1])})
            if "text_embeds" in sample:
                save_file({"text_embeds": sample["text_embeds"].contiguous()}, str(tmp / "text_embeds.safetensors"))
            elif encoder is not None:
                save_file({"text_embeds": encoder(sample["prompt"]).contiguous()}, str(tmp / "text_embeds.safetensors"))
            for name in COPIED:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, tmp / name)
        written += 1
    return {"rank": rank, "world": world, "samples": len(mine), "written": written, "done_before": done}
