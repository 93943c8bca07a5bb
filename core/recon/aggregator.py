# SPDX-License-Identifier: GPL-3.0-or-later
"""VGGT's alternating-attention aggregator over a V x T grid of frames.

Tokens live as [B, T, V, P, C] (P = 1 camera + registers + patches per frame):
  frame attention    within each frame          (B*T*V sequences of P tokens)
  global attention   across the V views of one timestep (B*T sequences of V*P tokens)
  temporal attention across the T timesteps of one view  (B*V sequences of T*P tokens), zero-initialised
so attention memory grows linearly in V*T (the paper's model attends globally over all V*T frames).
With T = 1 (or temporal layers off) each timestep is exactly VGGT on its V views.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .config import VGGTConfig
from .dinov2 import DinoV2
from .layers import Block, Rope2D

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def special_tokens(table: torch.Tensor, B: int, T: int, V: int) -> torch.Tensor:
    """table [1, 2, X, C] -> [B*T*V, X, C]: entry 0 for view 0 of every timestep, entry 1 for the rest."""
    first = table[:, 0:1].expand(B * T, 1, *table.shape[2:])
    others = table[:, 1:2].expand(B * T, V - 1, *table.shape[2:])
    return torch.cat([first, others], dim=1).reshape(B * T * V, *table.shape[2:])


def token_positions(n: int, h: int, w: int, specials: int, device) -> torch.Tensor:
    """RoPE (row, col) per token: patches at their grid cell + 1, special tokens at 0 (unrotated)."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    patch = torch.stack([rows, cols], dim=-1) + 1
    pos = torch.cat([torch.zeros(specials, 2, dtype=patch.dtype, device=device), patch], dim=0)
    return pos[None].expand(n, -1, -1)


class Aggregator(nn.Module):
    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        self.patch_embed = DinoV2(cfg.img_size, cfg.patch_size, cfg.dino_dim, cfg.dino_depth, cfg.dino_heads,
                                  cfg.num_register_tokens)
        self.rope = Rope2D(cfg.rope_freq) if cfg.rope_freq > 0 else None

        def block(init: float) -> Block:
            return Block(c, cfg.num_heads, cfg.mlp_ratio, init_value=init, qk_norm=True, rope=self.rope)

        self.frame_blocks = nn.ModuleList([block(0.01) for _ in range(cfg.depth)])
        self.global_blocks = nn.ModuleList([block(0.01) for _ in range(cfg.depth)])
        # temporal layers: same hyper-parameters as the global blocks; LayerScale 0 => identity at start
        self.temporal_blocks = (nn.ModuleList([block(0.0) for _ in range(cfg.depth)])
                                if cfg.temporal_attention else None)
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, cfg.num_register_tokens, c) * 1e-6)
        self.patch_start_idx = 1 + cfg.num_register_tokens
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.gradient_checkpointing = False

    def _run(self, block: nn.Module, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            return checkpoint(block, x, pos, use_reentrant=False)
        return block(x, pos=pos)

    def forward(self, images: torch.Tensor, keep: list[int] | None = None,
                after_layer: Callable[[], object] | None = None) -> list[torch.Tensor | None]:
        """images [B, T, V, 3, H, W] in [0, 1] -> per layer [B, T, V, P, 2C] (frame | global-or-temporal
        output); layers not in `keep` are None (default: keep all). `after_layer()` runs after each
        layer (it may raise: an interrupt lands within one layer of the pass)."""
        B, T, V, _, H, W = images.shape
        p = self.cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        h, w = H // p, W // p
        x = (images.reshape(B * T * V, 3, H, W) - self._mean) / self._std
        patches = self.patch_embed(x)
        tokens = torch.cat([special_tokens(self.camera_token, B, T, V),
                            special_tokens(self.register_token, B, T, V), patches], dim=1)
        n_tok, c = tokens.shape[1], tokens.shape[2]
        pos = token_positions(B * T * V, h, w, self.patch_start_idx, images.device)
        if self.rope is not None:  # positions run 0 .. max(h, w): known here, no need to read them back
            self.rope.positions = max(h, w) + 1
        keep_set = set(range(self.cfg.depth)) if keep is None else set(keep)
        outputs: list[torch.Tensor | None] = []
        for i in range(self.cfg.depth):
            tokens = self._run(self.frame_blocks[i], tokens.reshape(B * T * V, n_tok, c), pos)
            frame_out = tokens.reshape(B, T, V, n_tok, c)
            tokens = self._run(self.global_blocks[i], tokens.reshape(B * T, V * n_tok, c),
                               pos.reshape(B * T, V * n_tok, 2))
            tokens = tokens.reshape(B, T, V, n_tok, c)
            if self.temporal_blocks is not None:
                per_view = tokens.transpose(1, 2).reshape(B * V, T * n_tok, c)
                per_view = self._run(self.temporal_blocks[i], per_view,
                                     pos.reshape(B, T, V, n_tok, 2).transpose(1, 2).reshape(B * V, T * n_tok, 2))
                tokens = per_view.reshape(B, V, T, n_tok, c).transpose(1, 2)
            outputs.append(torch.cat([frame_out, tokens], dim=-1) if i in keep_set else None)
            tokens = tokens.contiguous()
            if after_layer is not None:
                after_layer()
        return outputs
