# SPDX-License-Identifier: GPL-3.0-or-later
"""Latent codecs for one view's video: frames [T, H, W, 3] in [0, 1] <-> latents [C, T', h, w].

Views are always coded separately (temporal compression runs along time only, never across views).
  PixelCodec    space-to-depth of the pixels (no temporal compression): the tiny CPU models;
  WanVAECodec   diffusers AutoencoderKLWan (causal: T' = 1 + (T - 1) // 4, latent 0 = pixel frame 0),
                with the checkpoint's per-channel latent normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class PixelCodec:
    """Latents are pixels in [-1, 1], folded `factor` x `factor` into channels."""

    temporal_factor = 1

    def __init__(self, factor: int = 2):
        self.factor = int(factor)
        self.channels = 3 * self.factor ** 2
        self.spatial_factor = self.factor

    def latent_frames(self, frames: int) -> int:
        return frames

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        x = video.permute(0, 3, 1, 2) * 2.0 - 1.0  # [T, 3, H, W]
        return F.pixel_unshuffle(x, self.factor).permute(1, 0, 2, 3).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(latents.permute(1, 0, 2, 3), self.factor)
        return ((x + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


class WanVAECodec:
    """AutoencoderKLWan, one view at a time; encode uses the posterior mean (deterministic)."""

    def __init__(self, vae):
        self.vae = vae
        cfg = vae.config
        self.channels = cfg.z_dim
        self.temporal_factor = int(getattr(cfg, "scale_factor_temporal", None) or 4)
        self.spatial_factor = int(getattr(cfg, "scale_factor_spatial", None) or 8)
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32) if cfg.latents_mean else torch.zeros(self.channels)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32) if cfg.latents_std else torch.ones(self.channels)
        if mean.numel() != self.channels or std.numel() != self.channels:
            raise ValueError(f"VAE latents_mean/std have {mean.numel()}/{std.numel()} entries for z_dim={self.channels}")
        self.mean, self.std = mean.view(-1, 1, 1, 1), std.view(-1, 1, 1, 1)

    def latent_frames(self, frames: int) -> int:
        if (frames - 1) % self.temporal_factor != 0:
            raise ValueError(f"Wan's causal VAE needs 1 + {self.temporal_factor}k pixel frames; got {frames}")
        return 1 + (frames - 1) // self.temporal_factor

    def _param(self):
        return next(self.vae.parameters())

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        p = self._param()
        x = (video.permute(3, 0, 1, 2)[None] * 2.0 - 1.0).to(device=p.device, dtype=p.dtype)
        z = self.vae.encode(x).latent_dist.mean[0].float()
        return (z - self.mean.to(z.device)) / self.std.to(z.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = self._param()
        z = latents.float() * self.std.to(latents.device) + self.mean.to(latents.device)
        x = self.vae.decode(z[None].to(device=p.device, dtype=p.dtype)).sample[0].float()
        return ((x + 1.0) / 2.0).clamp(0, 1).permute(1, 2, 3, 0).contiguous()
