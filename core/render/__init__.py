# SPDX-License-Identifier: GPL-3.0-or-later
"""One `render` for every device: gsplat on CUDA (when its kernels load), our PyTorch rasterizer elsewhere."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cameras import Cameras
from ..gaussians import Gaussians
from ..sh import sh_to_rgb
from . import gsplat_backend
from .projection import covariances, project
from .torch_raster import rasterize

BACKENDS = ("auto", "torch", "gsplat")


@dataclass
class RenderOutput:
    rgb: torch.Tensor    # [C, H, W, 3]
    alpha: torch.Tensor  # [C, H, W, 1]
    depth: torch.Tensor  # [C, H, W, 1], expected depth (sum w z / alpha), as gsplat's "ED"


def pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_backend.available() else "torch"
    if backend == "gsplat" and not (device.type == "cuda" and gsplat_backend.available()):
        raise ValueError(f"the gsplat backend needs CUDA and gsplat's kernels ({gsplat_backend.unavailable_reason()}); "
                         "use backend='torch'")
    return backend


def render(gaussians: Gaussians, cameras: Cameras, background=(0.0, 0.0, 0.0), backend: str = "auto") -> RenderOutput:
    """Render `gaussians` from every camera: RGB, alpha and expected depth."""
    device = gaussians.means.device
    cameras = cameras.to(device=device, dtype=gaussians.means.dtype)
    bg = torch.as_tensor(background, dtype=gaussians.means.dtype, device=device)
    if pick_backend(backend, device) == "gsplat":
        try:
            return RenderOutput(*render_gsplat_safe(gaussians, cameras, bg))
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - chosen automatically: fall back instead of failing the job
            if backend != "auto":
                raise
            gsplat_backend.mark_failed(error)
    covars = covariances(gaussians.quats, gaussians.scales)
    opacities = gaussians.opacities
    outputs = []
    for viewmat, K in zip(cameras.viewmats, cameras.Ks):
        proj = project(gaussians.means, covars, viewmat, K, cameras.width, cameras.height, opacities)
        center = -viewmat[:3, :3].T @ viewmat[:3, 3]
        dirs = torch.nn.functional.normalize(gaussians.means - center, dim=-1)
        colors = sh_to_rgb(gaussians.sh, dirs)
        outputs.append(rasterize(proj, colors, opacities, cameras.width, cameras.height, bg))
    rgb, alpha, depth = (torch.stack(x) for x in zip(*outputs))
    return RenderOutput(rgb, alpha, depth)


def render_gsplat_safe(gaussians: Gaussians, cameras: Cameras, bg: torch.Tensor):
    return gsplat_backend.render_gsplat(gaussians, cameras, bg)
