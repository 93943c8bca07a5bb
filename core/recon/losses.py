# SPDX-License-Identifier: GPL-3.0-or-later
"""Rendering losses of the reconstructor: MSE of re-rendered views (+ LPIPS when its weights are
on this machine), and PSNR for evaluation."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..cameras import Cameras
from ..gaussians import Gaussians
from ..render import render

log = logging.getLogger("fuse4d.recon.train")


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (over all pixels and channels)."""
    mse = float(((pred.detach().clamp(0, 1) - target) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def render_views(gaussians: Gaussians, cameras: Cameras, background, scale: float = 1.0) -> torch.Tensor:
    """[C, H', W', 3] renders, optionally at a reduced resolution (Ks scaled) for cheaper losses."""
    if scale != 1.0:
        Ks = cameras.Ks.clone()
        Ks[:, :2] *= scale
        cameras = Cameras(cameras.viewmats, Ks, max(1, round(cameras.width * scale)),
                          max(1, round(cameras.height * scale)))
    return render(gaussians, cameras, background=background).rgb


def resize_targets(images: torch.Tensor, scale: float) -> torch.Tensor:
    """[..., H, W, 3] ground truth box-filtered to the render resolution."""
    if scale == 1.0:
        return images
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2)
    size = (max(1, round(images.shape[-3] * scale)), max(1, round(images.shape[-2] * scale)))
    x = torch.nn.functional.interpolate(x, size=size, mode="area")
    return x.permute(0, 2, 3, 1).reshape(*lead, *size, 3)


class LPIPSLoss:
    """LPIPS if the `lpips` package and its backbone weights are already on this machine (never
    downloaded during training); `available()` returns None otherwise."""

    @staticmethod
    def available(device) -> "torch.nn.Module | None":
        try:
            import lpips  # noqa: F401
        except ImportError:
            log.info("LPIPS: the lpips package is not installed; training with the MSE render loss only")
            return None
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        if not any(hub.glob("alexnet-*.pth")) and not any(hub.glob("vgg16-*.pth")):
            log.info("LPIPS: backbone weights not found under %s; training with the MSE render loss only", hub)
            return None
        import lpips

        net = "alex" if any(hub.glob("alexnet-*.pth")) else "vgg"
        model = lpips.LPIPS(net=net, verbose=False).to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def lpips_term(model, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean LPIPS of [C, H, W, 3] images in [0, 1] (lpips wants NCHW in [-1, 1])."""
    a = pred.permute(0, 3, 1, 2) * 2 - 1
    b = target.permute(0, 3, 1, 2) * 2 - 1
    return model(a, b).mean()
