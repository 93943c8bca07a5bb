# SPDX-License-Identifier: GPL-3.0-or-later
"""Token layout of a V x T grid of frames: index ((v*T + t)*S + s), shared by every backend."""
from __future__ import annotations

import torch


def check_layout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, views: int, frames: int) -> int:
    """Validate [B, heads, N, D] inputs for a views x frames grid; return tokens per frame S."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"fused attention expects q, k, v shaped [B, heads, N, D]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:3] != k.shape[:3] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"self-attention q, k, v must share [B, heads, N] (and D for q, k); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if int(views) < 1 or int(frames) < 1:
        raise ValueError(f"views and frames must be >= 1; got views={views}, frames={frames}")
    n = q.shape[2]
    if n % (views * frames) != 0 or n == 0:
        raise ValueError(f"sequence length {n} is not views*frames*tokens_per_frame for views={views}, "
                         f"frames={frames}")
    return n // (views * frames)


def view_time_mask(views: int, frames: int, tokens_per_frame: int, device=None) -> torch.Tensor:
    """Boolean [N, N] mask, True where key has the same view OR the same time as the query."""
    idx = torch.arange(views * frames * tokens_per_frame, device=device) // tokens_per_frame
    view, time = idx // frames, idx % frames
    return (view[:, None] == view[None, :]) | (time[:, None] == time[None, :])
