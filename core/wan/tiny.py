# SPDX-License-Identifier: GPL-3.0-or-later
"""The shipped tiny 4D video model (weights/video_tiny) and what a caller needs around it.

    from fuse4d.core.wan.tiny import load_tiny_video_model, animate_frozen_time
    model, config, codec = load_tiny_video_model()
    out = animate_frozen_time(model, config, codec, row)   # row: [V, H, W, 3] float in [0, 1]
    out.frames                                              # [V, T, H, W, 3], out.frames[:, 0] == row

The sampling settings it was measured with (size, frames, steps, shift) live in config.json "extra".
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .codecs import PixelCodec, WanVAECodec
from .model_io import VideoModelConfig, load_video_model
from .pipeline import Generate4DConfig, Generate4DOutput, generate_4d

TINY_VIDEO_DIR = Path(__file__).resolve().parents[2] / "weights" / "video_tiny"


def load_codec(config: VideoModelConfig, vae: str | os.PathLike | None = None, device: torch.device | str = "cpu"):
    """The codec a video model was trained with: PixelCodec (tiny models) or the Wan VAE (a diffusers
    AutoencoderKLWan folder, `vae`)."""
    if config.codec == "pixel":
        return PixelCodec(config.pixel_factor)
    if config.codec == "wan-vae":
        if vae is None:
            raise ValueError("this video model works in the Wan VAE's latent space: pass vae=<AutoencoderKLWan folder>")
        from diffusers import AutoencoderKLWan

        return WanVAECodec(AutoencoderKLWan.from_pretrained(os.fspath(vae)).to(device).eval())
    raise ValueError(f"unknown codec {config.codec!r}")


def load_tiny_video_model(folder: str | os.PathLike | None = None, device: torch.device | str = "cpu"):
    """(model, VideoModelConfig, codec) of the shipped tiny model (or a folder written by the trainer)."""
    folder = Path(folder or os.environ.get("FUSE4D_VIDEO_TINY", TINY_VIDEO_DIR))
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder}: no model.safetensors (the tiny video model ships in weights/video_tiny; "
                                "`fuse4d train-video --config tiny` rebuilds it)")
    model, config = load_video_model(folder, device=device)
    return model, config, load_codec(config, device=device)


def sampling_defaults(config: VideoModelConfig) -> dict:
    """views / frames / size / steps / shift / guidance the model was trained and measured at."""
    extra = config.extra or {}
    return {"views": extra.get("views", 4), "frames": extra.get("frames", 8), "size": extra.get("size", 48),
            "steps": extra.get("steps", 16), "shift": extra.get("shift", config.flow_shift),
            "guidance": extra.get("guidance", 1.0)}


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N, H, W, 3] -> [N, size, size, 3] (area-like antialiased bilinear), clamped to [0, 1]."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = images.permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


@torch.no_grad()
def animate_frozen_time(model, config: VideoModelConfig, codec, row: torch.Tensor, frames: int | None = None,
                        steps: int | None = None, seed: int = 0, progress: bool = True) -> Generate4DOutput:
    """Animate V views of a scene at t = 0 (`row` [V, H, W, 3] in [0, 1]; resized to the model's square
    size when needed) into a V x T grid at that size; frames[:, 0] is the (resized) row itself."""
    d = sampling_defaults(config)
    row = _resize(torch.as_tensor(row).float(), d["size"])
    cfg = Generate4DConfig(views=row.shape[0], frames=frames or d["frames"], height=d["size"], width=d["size"],
                           seed=seed, steps=steps or d["steps"], guidance=d["guidance"], shift=d["shift"],
                           progress=progress)
    return generate_4d(model, codec, cfg, frozen_time=row, video_config=config)
