# SPDX-License-Identifier: GPL-3.0-or-later
"""DINOv2 ViT with register tokens, as VGGT's patch embed (keys aggregator.patch_embed.*).
Only the normalised patch tokens leave it."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import Block


class PatchProjection(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    def __init__(self, img_size: int, patch: int, dim: int, depth: int, heads: int, registers: int):
        super().__init__()
        self.patch = patch
        self.grid = img_size // patch
        self.num_registers = registers
        self.patch_embed = PatchProjection(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)  # unused at inference
        # VGGT builds DINOv2 with LayerScale init 1.0 and LayerNorm eps 1e-6
        self.blocks = nn.ModuleList([Block(dim, heads, 4.0, init_value=1.0, norm_eps=1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def position_table(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """pos_embed for an h x w patch grid: the stored square table resampled bicubically with
        antialiasing to exactly (h, w) (no DINOv2 +0.1 offset in VGGT); unchanged when it already fits."""
        if h * w == self.pos_embed.shape[1] - 1 and h == w:
            return self.pos_embed
        table = self.pos_embed.float()
        m = int(math.sqrt(table.shape[1] - 1))
        grid = table[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((table[:, :1], grid), dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] (ImageNet-normalised) -> patch tokens [N, h*w, dim]."""
        n, _, H, W = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        x = x + self.position_table(H // self.patch, W // self.patch, x.dtype)
        x = torch.cat((x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_registers:]
