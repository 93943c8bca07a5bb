# SPDX-License-Identifier: GPL-3.0-or-later
"""Rectified flow as Wan uses it: x_s = (1 - s) x0 + s noise, the model predicts v = noise - x0,
timestep = 1000 s. Sampling integrates with Euler steps on a shifted sigma schedule.

What the network outputs (`prediction`, a model setting):
  "velocity"            v itself (Wan; every real checkpoint);
  "reference-residual"  x0 = base + output, with base each view's frozen-time reference (zeros where
                        none), so v = (x_s - x0) / s. With a zero-initialised output layer a model starts
                        as "the scene stays as given" and learns the motion as a residual: the tiny
                        from-scratch models, which have a few thousand steps to learn anything.
"""
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


PREDICTIONS = ("velocity", "reference-residual")


def predicted_x0(output: torch.Tensor, base: torch.Tensor, prediction: str) -> torch.Tensor:
    if prediction != "reference-residual":
        raise ValueError(f"x0 is predicted only by 'reference-residual' models, not {prediction!r}")
    return base + output


def to_velocity(output: torch.Tensor, x_s: torch.Tensor, s, base: torch.Tensor | None, prediction: str) -> torch.Tensor:
    """The velocity the sampler integrates, from the network output at noise level s (> 0)."""
    if prediction == "velocity":
        return output
    if prediction == "reference-residual":
        s = torch.as_tensor(s, dtype=x_s.dtype, device=x_s.device).reshape(-1, *([1] * (x_s.dim() - 1)))
        return (x_s - predicted_x0(output, base, prediction)) / s
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
