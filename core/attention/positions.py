# SPDX-License-Identifier: GPL-3.0-or-later
"""RoPE indices for the fused grid: (v, t, y, x) -> (v*T_max + t, y, x), the grid read as one long video."""
from __future__ import annotations

import torch


def fused_positions(views: int, frames: int, h: int, w: int, t_max: int) -> torch.Tensor:
    """LongTensor [V*T*h*w, 3] of (v*t_max + t, y, x), tokens ordered ((v*T + t)*h + y)*w + x."""
    for name, value in (("views", views), ("frames", frames), ("h", h), ("w", w), ("t_max", t_max)):
        if int(value) < 1:
            raise ValueError(f"fused_positions: {name} must be >= 1, got {value}")
    if frames > t_max:
        raise ValueError(f"fused_positions: frames={frames} exceeds t_max={t_max}; views would share time "
                         "indices. Raise t_max (the longest latent video the model handles).")
    v, t, y, x = torch.meshgrid(torch.arange(views), torch.arange(frames), torch.arange(h), torch.arange(w),
                                indexing="ij")
    return torch.stack([v * t_max + t, y, x], dim=-1).reshape(-1, 3)
