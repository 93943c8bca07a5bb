# SPDX-License-Identifier: GPL-3.0-or-later
"""Ground truth: dense SDPA with the boolean view-OR-time mask. O(N^2) memory; small sizes only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import check_layout, view_time_mask


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, views: int, frames: int,
                        scale: float | None = None) -> torch.Tensor:
    s = check_layout(q, k, v, views, frames)
    mask = view_time_mask(views, frames, s, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Unmasked SDPA: what the fused pattern reduces to when views == 1 or frames == 1."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)
