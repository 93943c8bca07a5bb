# SPDX-License-Identifier: GPL-3.0-or-later
"""A Fuse4D video model folder: `config.json` (architecture + 4D settings) + `model.safetensors`.

The safetensors file uses the diffusers key layout; `load_video_model` also accepts a bare Wan
checkpoint (either layout) with a config given in code.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch

from .keys import WanConfig, load_wan_transformer


@dataclass
class VideoModelConfig:
    """What the sampler and trainer need to know about a (fine-tuned) 4D video model."""
    wan: WanConfig
    t_max: int = 32                        # RoPE time slots per view (latent frames)
    codec: str = "pixel"                   # "pixel" (tiny models) or "wan-vae"
    pixel_factor: int = 2                  # PixelCodec space-to-depth factor
    patch_embed_conditioning: bool = False  # trained with the paper's additive reference embeddings
    per_token_timestep: bool = False       # timestep 0 on conditioned tokens (Wan 2.2 TI2V style)
    flow_shift: float = 5.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["wan"] = self.wan.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VideoModelConfig":
        d = dict(d)
        d["wan"] = WanConfig.from_dict(d["wan"])
        return cls(**d)


def save_video_model(folder: str | os.PathLike, model: torch.nn.Module, config: VideoModelConfig) -> None:
    """Write config.json and model.safetensors (temp names, then renamed)."""
    from safetensors.torch import save_file

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = os.path.join(folder, "model.safetensors.tmp")
    save_file(sd, tmp, metadata={"format": "pt", "fuse4d": "video-model"})
    os.replace(tmp, os.path.join(folder, "model.safetensors"))
    tmp = os.path.join(folder, "config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(config.to_dict(), f, indent=2)
    os.replace(tmp, os.path.join(folder, "config.json"))


def load_video_model(folder: str | os.PathLike, device: torch.device | str = "cpu"):
    """(model, VideoModelConfig) from a folder written by `save_video_model` (or the trainer)."""
    folder = os.fspath(folder)
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{folder}: no config.json (not a Fuse4D video model folder)")
    with open(cfg_path, encoding="utf-8") as f:
        config = VideoModelConfig.from_dict(json.load(f))
    model = load_wan_transformer(os.path.join(folder, "model.safetensors"), config.wan, device=device)
    return model, config
