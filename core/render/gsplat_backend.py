# SPDX-License-Identifier: GPL-3.0-or-later
"""gsplat's CUDA rasterizer behind our `render` (used automatically on CUDA)."""
from __future__ import annotations

import torch

from ..cameras import Cameras
from ..gaussians import Gaussians


def available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render_gsplat(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor):
    from gsplat import rasterization

    colors, alphas, _ = rasterization(
        means=gaussians.means, quats=gaussians.quats, scales=gaussians.scales,
        opacities=gaussians.opacities, colors=gaussians.sh, sh_degree=gaussians.sh_degree,
        viewmats=cameras.viewmats, Ks=cameras.Ks, width=cameras.width, height=cameras.height,
        render_mode="RGB+ED", backgrounds=background.expand(len(cameras), 3),
    )
    return colors[..., :3], alphas, colors[..., 3:]
