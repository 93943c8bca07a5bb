# SPDX-License-Identifier: GPL-3.0-or-later
"""Image metrics of generated grids against ground truth, per frame on [..., H, W, 3] in [0, 1].

PSNR over all pixels and channels of a frame; SSIM with the usual 11x11 Gaussian window (sigma 1.5),
K1 = 0.01, K2 = 0.03, per channel on the valid (unpadded) region, averaged over channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr_frames(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] -> PSNR in dB per frame [...]."""
    mse = ((pred.clamp(0, 1).double() - target.double()) ** 2).mean(dim=(-3, -2, -1))
    return (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).float()


def _window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_frames(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] -> SSIM per frame [...] (frames must be at least 11 x 11)."""
    lead = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    x = pred.clamp(0, 1).double().reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    y = target.double().reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    win = _window()[None, None]

    def blur(z):
        return F.conv2d(z, win)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(-2, -1)).reshape(-1, c).mean(-1).reshape(lead).float()
