# SPDX-License-Identifier: GPL-3.0-or-later
"""gsplat's CUDA rasterizer behind our `render` (used automatically on CUDA when the gsplat extra is in)."""
from __future__ import annotations

import torch

from .. import extras
from ..cameras import Cameras
from ..gaussians import Gaussians


def available() -> bool:
    if not torch.cuda.is_available():
        return False  # gsplat has no CPU rasterizer: nothing is missed on the CPU
    if not extras.available("gsplat"):
        extras.note_fallback("gsplat", "rendering on CUDA with Fuse4D's PyTorch rasterizer instead (slower)")
        return False
    return True


def render_gsplat(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor):
    rasterization = extras.require("gsplat").rasterization
    colors, alphas, _ = rasterization(
        means=gaussians.means, quats=gaussians.quats, scales=gaussians.scales,
        opacities=gaussians.opacities, colors=gaussians.sh, sh_degree=gaussians.sh_degree,
        viewmats=cameras.viewmats, Ks=cameras.Ks, width=cameras.width, height=cameras.height,
        render_mode="RGB+ED", backgrounds=background.expand(len(cameras), 3),
    )
    return colors[..., :3], alphas, colors[..., 3:]
