# SPDX-License-Identifier: GPL-3.0-or-later
"""gsplat's CUDA rasterizer behind our `render` (used automatically on CUDA when its kernels load).

The PyPI gsplat builds its CUDA extension on first use: without a matching nvcc there is none, with
one the first import compiles for minutes. So availability is checked once per process, by loading
the kernels and rasterising one Gaussian; the outcome is announced in one line and everything else
renders with our PyTorch rasterizer."""
from __future__ import annotations

import importlib.util
import logging

import torch

from .. import extras
from ..cameras import Cameras
from ..gaussians import Gaussians

log = logging.getLogger(__name__)
_STATE: dict = {}  # "ok": bool, "reason": why not


def available() -> bool:
    """CUDA present and gsplat's kernels loaded and ran (checked once)."""
    if not torch.cuda.is_available():
        return False  # gsplat has no CPU rasterizer: nothing is missed on the CPU
    if not extras.available("gsplat"):
        extras.note_fallback("gsplat", "rendering on CUDA with Fuse4D's PyTorch rasterizer instead (slower)")
        _STATE["reason"] = "the gsplat extra is not installed"
        return False
    if "ok" not in _STATE:
        _STATE["ok"] = _kernels_load()
    return _STATE["ok"]


def unavailable_reason() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    available()
    return _STATE.get("reason", "")


def mark_failed(error: Exception) -> None:
    """gsplat raised while rendering: use the PyTorch rasterizer from now on (one notice)."""
    _disable(f"gsplat failed while rendering ({_first_line(error)})")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _disable(reason: str) -> bool:
    _STATE.update(ok=False, reason=reason)
    log.warning("%s; rendering with Fuse4D's PyTorch rasterizer", reason)
    return False


def _kernels_load() -> bool:
    if importlib.util.find_spec("gsplat") is None:
        _STATE["reason"] = "gsplat is not installed"
        return False  # the normal CPU-first install: nothing to announce
    try:
        if importlib.util.find_spec("gsplat.csrc") is None:  # no prebuilt wheel: gsplat compiles now
            log.warning("gsplat: loading its CUDA kernels (the first use builds them, which can take minutes)")
        from gsplat.cuda._backend import _C
        if _C is None:
            raise RuntimeError("its CUDA extension is missing (no prebuilt kernels and no CUDA toolkit to build them)")
        _smoke_test()
    except Exception as error:  # noqa: BLE001 - a broken extension fails in many ways
        return _disable(f"gsplat's CUDA kernels are unavailable: {_first_line(error)}")
    return True


def _smoke_test() -> None:
    """Rasterise one Gaussian on the GPU (a kernel that loads but cannot run fails here, not mid-job)."""
    from gsplat import rasterization

    dev = torch.device("cuda")
    eye = torch.eye(4, device=dev)[None]
    K = torch.tensor([[[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]]], device=dev)
    rasterization(means=torch.tensor([[0.0, 0, 2]], device=dev), quats=torch.tensor([[1.0, 0, 0, 0]], device=dev),
                  scales=torch.full((1, 3), 0.1, device=dev), opacities=torch.ones(1, device=dev),
                  colors=torch.ones(1, 3, device=dev), viewmats=eye, Ks=K, width=8, height=8)
    torch.cuda.synchronize()


def render_gsplat(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor):
    rasterization = extras.require("gsplat").rasterization
    colors, alphas, _ = rasterization(
        means=gaussians.means, quats=gaussians.quats, scales=gaussians.scales,
        opacities=gaussians.opacities, colors=gaussians.sh, sh_degree=gaussians.sh_degree,
        viewmats=cameras.viewmats, Ks=cameras.Ks, width=cameras.width, height=cameras.height,
        render_mode="RGB+ED", backgrounds=background.expand(len(cameras), 3),
    )
    return colors[..., :3], alphas, colors[..., 3:]
