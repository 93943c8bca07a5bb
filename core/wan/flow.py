# SPDX-License-Identifier: GPL-3.0-or-later
"""Rectified flow as Wan uses it: x_s = (1 - s) x0 + s noise, the model predicts v = noise - x0,
timestep = 1000 s. Sampling integrates with Euler steps on a shifted sigma schedule.

What the network outputs (`prediction`, a model setting):
  "velocity"            v itself (Wan; every real checkpoint);
  "reference-residual"  x0 = base + output, with base each view's frozen-time reference (zeros where
                        none), so v = (x_s - x0) / s. With a zero-initialised output layer a model starts
                        as "the scene stays as given" and learns the motion as a residual: the tiny
                        from-scratch models, which have a few thousand steps to learn anything.
  "reference-warp"      x0 = warp(base, flow) + residual: the output holds C residual channels and 2 of
                        flow, a backward displacement per latent pixel (in latent pixels) along which
                        each view's reference is sampled. Motion becomes moving what is there instead of
                        painting it anew, so a tiny model's objects move whole and stay sharp; zero
                        output is still "the scene stays as given". With the pixel codec the warp runs on
                        the unfolded pixels (`fold` = its factor), on a VAE's latents directly.
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


NOISE_LEVELS = ("logit-normal", "uniform", "shifted")


def sample_noise_levels(batch: int, mode: str = "logit-normal", generator: torch.Generator | None = None,
                        device=None, shift: float = 1.0, pure: float = 0.0) -> torch.Tensor:
    """Training noise levels in (0, 1]: logit-normal (SD3-style, favours the middle), uniform, or "shifted"
    (uniform through the sampler's shift, so training sees the levels sampling visits as often as it
    visits them). With probability `pure` a level is exactly 1: pure noise, where the first sampling step
    runs and a few-step sampler decides the motion (logit-normal almost never goes there)."""
    if mode == "logit-normal":
        s = torch.sigmoid(torch.randn(batch, generator=generator, device=device))
    elif mode == "uniform":
        s = torch.rand(batch, generator=generator, device=device).clamp(1e-4, 1 - 1e-4)
    elif mode == "shifted":
        u = torch.rand(batch, generator=generator, device=device).clamp(1e-4, 1 - 1e-4)
        s = shift * u / (1.0 + (shift - 1.0) * u)
    else:
        raise ValueError(f"unknown noise-level distribution {mode!r}; choose one of {NOISE_LEVELS}")
    if pure > 0:
        s = torch.where(torch.rand(batch, generator=generator, device=device) < pure, torch.ones_like(s), s)
    return s


def euler_step(x: torch.Tensor, velocity: torch.Tensor, s: float, s_next: float) -> torch.Tensor:
    return x + (s_next - s) * velocity


PREDICTIONS = ("velocity", "reference-residual", "reference-warp")
FLOW_CHANNELS = 2


def output_channels(channels: int, prediction: str) -> int:
    """Network output channels for `channels` latent channels."""
    return channels + FLOW_CHANNELS if prediction == "reference-warp" else channels


def warp(latents: torch.Tensor, flow: torch.Tensor, fold: int = 1) -> torch.Tensor:
    """Sample latents [B, C, F, h, w] at (x, y) + flow [B, 2, F, h, w] (latent pixels, x then y), bilinear,
    edges clamped. With `fold` > 1 the latents are pixels folded fold x fold into channels (PixelCodec):
    they are unfolded, warped with the flow upsampled to the pixels, and folded back."""
    import torch.nn.functional as F

    B, C, n, h, w = latents.shape
    img = latents.transpose(1, 2).reshape(B * n, C, h, w)
    fl = flow.transpose(1, 2).reshape(B * n, 2, h, w).to(img.dtype)
    if fold > 1:
        img = F.pixel_shuffle(img, fold)
        fl = F.interpolate(fl, scale_factor=fold, mode="bilinear", align_corners=False) * fold
    H, W = img.shape[-2:]
    ys = torch.linspace(-1 + 1 / H, 1 - 1 / H, H, dtype=img.dtype, device=img.device)
    xs = torch.linspace(-1 + 1 / W, 1 - 1 / W, W, dtype=img.dtype, device=img.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)                  # [H, W, 2]: x, y
    grid = grid + fl.permute(0, 2, 3, 1) * torch.tensor([2.0 / W, 2.0 / H], dtype=img.dtype, device=img.device)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if fold > 1:
        out = F.pixel_unshuffle(out, fold)
    return out.reshape(B, n, C, h, w).transpose(1, 2)


def predicted_x0(output: torch.Tensor, base: torch.Tensor, prediction: str, fold: int = 1) -> torch.Tensor:
    if prediction == "reference-residual":
        return base + output
    if prediction == "reference-warp":
        C = base.shape[1]
        return warp(base, output[:, C:C + FLOW_CHANNELS], fold) + output[:, :C]
    raise ValueError(f"x0 is predicted only by 'reference-residual' / 'reference-warp' models, not {prediction!r}")


def to_velocity(output: torch.Tensor, x_s: torch.Tensor, s, base: torch.Tensor | None, prediction: str,
                fold: int = 1) -> torch.Tensor:
    """The velocity the sampler integrates, from the network output at noise level s (> 0)."""
    if prediction == "velocity":
        return output
    if prediction in ("reference-residual", "reference-warp"):
        s = torch.as_tensor(s, dtype=x_s.dtype, device=x_s.device).reshape(-1, *([1] * (x_s.dim() - 1)))
        return (x_s - predicted_x0(output, base, prediction, fold)) / s
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
