# SPDX-License-Identifier: GPL-3.0-or-later
"""Transformer pieces of VGGT with its parameter names: pre-norm block, attention with optional
QK-norm and 2D rotary embedding, LayerScale, MLP."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Rope2D(nn.Module):
    """2D RoPE: the first half of each head is rotated by the token's row, the second half by its
    column, with the rotate-half convention and frequencies base^(-2i/d) (d = head_dim / 2)."""

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = base
        self._cache: dict = {}
        self.positions: int | None = None  # bound on positions, set by the caller (saves a host sync per call)

    def _tables(self, dim: int, n: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dim, n, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
            angles = torch.outer(torch.arange(n, device=device, dtype=inv_freq.dtype), inv_freq).to(dtype)
            angles = torch.cat((angles, angles), dim=-1)
            self._cache[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return self._cache[key]

    @staticmethod
    def _rotate_1d(x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        c, s = F.embedding(pos, cos)[:, None], F.embedding(pos, sin)[:, None]
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * c + rotated * s

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, heads, N, D], pos [B, N, 2] integer (row, col), all below `self.positions` when set."""
        dim = x.shape[-1] // 2
        n = self.positions if self.positions is not None else int(pos.max()) + 1
        cos, sin = self._tables(dim, n, x.device, x.dtype)
        y_part, x_part = x.chunk(2, dim=-1)
        return torch.cat((self._rotate_1d(y_part, pos[..., 0], cos, sin),
                          self._rotate_1d(x_part, pos[..., 1], cos, sin)), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope: Rope2D | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, init_value: float = 0.01,
                 qk_norm: bool = False, rope: Rope2D | None = None, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_value)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos))
        return x + self.ls2(self.mlp(self.norm2(x)))
