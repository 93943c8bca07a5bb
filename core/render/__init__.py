# SPDX-License-Identifier: GPL-3.0-or-later
"""One `render` for every device: gsplat on CUDA (when its kernels load), our PyTorch rasterizer elsewhere."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import extras
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
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("the gsplat backend needs CUDA; use backend='torch' on the CPU")
    if backend == "gsplat" and not extras.available("gsplat"):
        raise ValueError(extras.missing_message("gsplat"))
    if backend == "gsplat" and not gsplat_backend.available():
        raise ValueError(f"the gsplat backend needs gsplat's CUDA kernels ({gsplat_backend.unavailable_reason()}); "
                         "use backend='torch'")
    return backend


def render(gaussians: Gaussians, cameras: Cameras, background=(0.0, 0.0, 0.0), backend: str = "auto") -> RenderOutput:
    """Render `gaussians` from every camera: RGB, alpha and expected depth. NaN/inf Gaussians or
    cameras raise a ValueError saying where (they would render as silent garbage)."""
    problem = gaussians.nonfinite() or cameras_problem(cameras)
    if problem:
        raise ValueError(f"cannot render: {problem}")
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


def cameras_problem(cameras: Cameras) -> str | None:
    """Non-finite or degenerate cameras (a singular rotation, a non-positive focal length)."""
    with torch.no_grad():
        finite = torch.isfinite(cameras.viewmats).flatten(1).all(1) & torch.isfinite(cameras.Ks).flatten(1).all(1)
        if not finite.all():
            return f"{int((~finite).sum())} of {len(cameras)} cameras hold NaN or infinite values " \
                   f"(first: {int(torch.nonzero(~finite)[0])})"
        det = torch.linalg.det(cameras.viewmats[:, :3, :3].double()).abs()
        focal = (cameras.Ks[:, 0, 0] > 0) & (cameras.Ks[:, 1, 1] > 0)
        bad = (det <= 1e-12) | ~focal.to(det.device)
        if bad.any():
            return f"{int(bad.sum())} of {len(cameras)} cameras are degenerate (singular rotation or " \
                   f"non-positive focal length; first: {int(torch.nonzero(bad)[0])})"
    return None


def render_gsplat_safe(gaussians: Gaussians, cameras: Cameras, bg: torch.Tensor):
    return gsplat_backend.render_gsplat(gaussians, cameras, bg)
