# SPDX-License-Identifier: GPL-3.0-or-later
"""Rectified flow as Wan uses it: x_s = (1 - s) x0 + s noise, the model predicts v = noise - x0,
timestep = 1000 s. Sampling integrates with Euler steps on a shifted sigma schedule."""
from __future__ import annotations

import torch


def shifted_sigmas(steps: int, shift: float = 5.0, device=None) -> torch.Tensor:
    """steps + 1 noise levels from 1 to 0, warped by Wan's shift s' = shift s / (1 + (shift - 1) s)."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)
    return (shift * s / (1.0 + (shift - 1.0) * s)).float()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x_s for per-sample noise levels s [B]."""
    s = s.view(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - s) * x0 + s * noise


def sample_noise_levels(batch: int, mode: str = "logit-normal", generator: torch.Generator | None = None,
                        device=None) -> torch.Tensor:
    """Training noise levels in (0, 1): logit-normal (SD3-style, favours the middle) or uniform."""
    if mode == "logit-normal":
        return torch.sigmoid(torch.randn(batch, generator=generator, device=device))
    if mode == "uniform":
        return torch.rand(batch, generator=generator, device=device).clamp(1e-4, 1 - 1e-4)
    raise ValueError(f"unknown noise-level distribution {mode!r}; choose 'logit-normal' or 'uniform'")


def euler_step(x: torch.Tensor, velocity: torch.Tensor, s: float, s_next: float) -> torch.Tensor:
    return x + (s_next - s) * velocity
