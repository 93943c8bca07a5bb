# SPDX-License-Identifier: GPL-3.0-or-later
"""Fused view-time attention: a token at (view v, time t) attends to every token of view v or time t.

q, k, v are [B, heads, N, D] with N = views*frames*tokens_per_frame ordered view-major, then time, then
space: index ((v*T + t)*S + s). Backends (all exact, tested against "reference"):
  "reference"  masked dense SDPA (O(N^2) memory; ground truth, small sizes);
  "merge"      two dense attentions over disjoint key sets merged by LSE, own backward (CPU and CUDA);
  "flex"       FlexAttention with a block mask built at block level and cached per layout (CUDA; CPU
               forward only);
  "auto"       flex on CUDA when available, merge otherwise; plain dense SDPA when V == 1 or T == 1. When
               flex fails to compile (a broken toolchain), "auto" logs the reason once and uses merge.
"""
from __future__ import annotations

import logging

import torch

from .baselines import ParallelSyncAttention, sequential_attention, time_attention, view_attention
from .flex import flex_attention_view_time, flex_available
from .layout import check_layout, view_time_mask
from .merge import merge_attention
from .positions import fused_positions
from .reference import dense_attention, reference_attention

BACKENDS = ("reference", "merge", "flex")
log = logging.getLogger(__name__)
_FLEX_FAILED: dict[str, str] = {}  # device -> why flex could not run there (auto then uses merge)

__all__ = ["fused_view_time_attention", "available_backends", "fused_positions", "view_time_mask",
           "reference_attention", "merge_attention", "flex_attention_view_time", "dense_attention",
           "sequential_attention", "view_attention", "time_attention", "ParallelSyncAttention", "BACKENDS"]


def available_backends(device: torch.device | str = "cpu") -> tuple[str, ...]:
    """Backends that run on `device` (on the CPU "flex" is forward-only)."""
    return tuple(b for b in BACKENDS if b != "flex" or flex_available(device))


def _auto_backend(device: torch.device) -> str:
    usable = device.type == "cuda" and flex_available(device) and str(device) not in _FLEX_FAILED
    return "flex" if usable else "merge"


def _flex_or_merge(q, k, v, views: int, frames: int, scale):
    try:
        return flex_attention_view_time(q, k, v, views, frames, scale=scale)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - compiler / toolchain failures of any kind
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        _FLEX_FAILED[str(q.device)] = reason
        log.warning("fused attention: FlexAttention failed on %s (%s); using the exact 'merge' backend from now on",
                    q.device, reason)
        return merge_attention(q, k, v, views, frames, scale=scale)


def fused_view_time_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, views: int, frames: int,
                              backend: str = "auto", scale: float | None = None) -> torch.Tensor:
    """Fused view-time attention of [B, heads, N, D] tensors; returns [B, heads, N, D]."""
    check_layout(q, k, v, views, frames)
    if backend == "auto":
        if views == 1 or frames == 1:  # the pattern is dense: every token shares the view or the time
            return dense_attention(q, k, v, scale=scale)
        backend = _auto_backend(q.device)
        if backend == "flex":
            return _flex_or_merge(q, k, v, views, frames, scale)
    if backend == "reference":
        return reference_attention(q, k, v, views, frames, scale=scale)
    if backend == "merge":
        return merge_attention(q, k, v, views, frames, scale=scale)
    if backend == "flex":
        return flex_attention_view_time(q, k, v, views, frames, scale=scale)
    raise ValueError(f"unknown fused attention backend {backend!r}; choose 'auto' or one of {BACKENDS}")
