# SPDX-License-Identifier: GPL-3.0-or-later
"""Baselines of the paper's architecture study (Fig. 3), on the fused backends' [B, heads, N, D] layout.

- `view_attention`: each token attends to the same time step in every view (a freeze-time column).
- `time_attention`: each token attends to its own view at every time step (a fixed-view video).
- `sequential_attention`: view attention, then time attention applied to its result (q = k = v = the
  first result: the two stages as interleaved layers with identity projections between them). In a
  model the "interleave existing layers" variant alternates `view_attention` / `time_attention` per
  block with each block's own projections; this function is the attention-level analogue.
- `ParallelSyncAttention`: 4Real-Video (v1) two-stream + hard sync: view and time attention on the
  same input in parallel, fused by one linear layer x = W_v y_v + W_t y_t with W_v = W_t = I/2 at
  init (so before training it is the average of the two streams). v1 also modulates W by the noise
  level; that conditioning belongs to the block, not here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import check_layout


def time_attention(q, k, v, views: int, frames: int, scale: float | None = None) -> torch.Tensor:
    """Dense attention within each view over all its time steps."""
    s = check_layout(q, k, v, views, frames)
    B, H, N, _ = q.shape

    def fold(x):
        return x.reshape(B, H * views, frames * s, x.shape[-1])

    return F.scaled_dot_product_attention(fold(q), fold(k), fold(v), scale=scale).reshape(B, H, N, v.shape[-1])


def view_attention(q, k, v, views: int, frames: int, scale: float | None = None) -> torch.Tensor:
    """Dense attention within each time step over all views."""
    s = check_layout(q, k, v, views, frames)
    B, H, N, _ = q.shape

    def fold(x):  # [B, H, V, T, S, D] -> [B, H*T, V*S, D]
        x = x.reshape(B, H, views, frames, s, x.shape[-1]).transpose(2, 3)
        return x.reshape(B, H * frames, views * s, x.shape[-1])

    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), scale=scale)
    out = out.reshape(B, H, frames, views, s, v.shape[-1]).transpose(2, 3)
    return out.reshape(B, H, N, v.shape[-1])


def sequential_attention(q, k, v, views: int, frames: int, scale: float | None = None) -> torch.Tensor:
    """View attention, then time attention over its result (see the module docstring)."""
    y = view_attention(q, k, v, views, frames, scale)
    if y.shape[-1] != q.shape[-1]:
        raise ValueError("sequential_attention feeds the first result back as queries: v must have q's head dim")
    return time_attention(y, y, y, views, frames, scale)


class ParallelSyncAttention(nn.Module):
    """Two streams (view, time) on the same q, k, v fused by a sync linear layer initialised to [I/2, I/2]."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.sync = nn.Linear(2 * dim, dim)
        with torch.no_grad():
            eye = torch.eye(dim) / 2
            self.sync.weight.copy_(torch.cat([eye, eye], dim=1))
            self.sync.bias.zero_()

    def forward(self, q, k, v, views: int, frames: int, scale: float | None = None) -> torch.Tensor:
        B, H, N, D = v.shape
        if H * D != self.dim:
            raise ValueError(f"ParallelSyncAttention(dim={self.dim}) got heads*head_dim = {H}*{D} = {H * D}")
        streams = [view_attention(q, k, v, views, frames, scale), time_attention(q, k, v, views, frames, scale)]
        y = torch.cat([x.transpose(1, 2).reshape(B, N, H * D) for x in streams], dim=-1)
        return self.sync(y).reshape(B, N, H, D).transpose(1, 2)
