# SPDX-License-Identifier: GPL-3.0-or-later
"""VGGT camera head (keys camera_head.*): the camera tokens of the last aggregator layer, attended
across the frames of one scene by a small trunk, refined over a few iterations with adaLN
conditioning on the previous estimate. Encoding: translation 3, quaternion xyzw 4, FoV (h, w) 2."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import Block, Mlp


class CameraHead(nn.Module):
    def __init__(self, dim: int, trunk_depth: int = 4, num_heads: int = 16, iterations: int = 4):
        super().__init__()
        self.iterations = iterations
        self.trunk = nn.Sequential(*[Block(dim, num_heads, 4, init_value=0.01) for _ in range(trunk_depth)])
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, 9))
        self.embed_pose = nn.Linear(9, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, 9)

    def forward(self, camera_tokens: torch.Tensor) -> list[torch.Tensor]:
        """camera_tokens [G, S, dim] (G independent scenes of S frames) -> list of [G, S, 9], one per iteration."""
        tokens = self.token_norm(camera_tokens)
        G, S, _ = tokens.shape
        raw = None
        out = []
        for _ in range(self.iterations):
            if raw is not None:
                raw = raw.detach()  # each iteration refines a stopped-gradient estimate, as VGGT trains
            cond = self.embed_pose(self.empty_pose_tokens.expand(G, S, -1) if raw is None else raw)
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            for block in self.trunk:
                x = block(x)
            delta = self.pose_branch(self.trunk_norm(x))
            raw = delta if raw is None else raw + delta
            out.append(torch.cat([raw[..., :7], F.relu(raw[..., 7:])], dim=-1))
        return out
