# SPDX-License-Identifier: GPL-3.0-or-later
"""Turn a diffusers WanTransformer3DModel into a 4D (V x T grid) model with no new weights.

The batch holds one grid per sample, laid out as one long video of V*T latent frames, view-major:
latents [B, C, V*T, H, W]. Two things change, both inside the model:
  * RoPE: frame index v*T + t becomes v*T_max + t (the grid read as one long video with gaps), and
  * self-attention: every token attends only to tokens of its own view or its own time.
Cross-attention to text is left alone. `patch_wan_transformer` swaps the rotary module and the
self-attention processors; `unpatch` restores the originals exactly.

Baselines of the architecture study plug into the same model and the same weights (`mode`):
  "fused"       the paper's: one attention over same-view OR same-time tokens;
  "sequential"  interleave the existing layers: even blocks attend within a time step across views,
                odd blocks within a view across time (the paper's equal-parameter "interleave" variant);
  "parallel"    4Real-Video v1's two streams: view attention and time attention on the same q, k, v,
                fused per block by a sync linear layer ([I/2, I/2] at init). The sync layers are the only
                new weights (`add_sync_layers`; state-dict keys blocks.N.attn1.parallel_sync.sync.*);
  "time"        the control: every block attends within its own view only (views never see each other).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn

from ..attention import (ParallelSyncAttention, fused_positions, fused_view_time_attention, time_attention,
                         view_attention)

MODES = ("fused", "sequential", "parallel", "time")
SYNC_NAME = "parallel_sync"


@dataclass
class GridLayout:
    """Shared between the rotary wrapper (which learns the frame count) and the processors."""
    views: int
    t_max: int
    backend: str = "auto"
    mode: str = "fused"        # "fused" | "sequential" | "parallel" (see the module docstring)
    frames: int | None = None  # latent frames per view, set on every forward by FusedWanRope
    patched: dict = field(default_factory=dict)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved-pair rotary embedding on [B, N, heads, D] (same arithmetic as diffusers)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


class FusedWanRope(nn.Module):
    """Replaces `model.rope`: gathers Wan's (t, h, w) frequency tables at (v*T_max + t, y, x)."""

    def __init__(self, base: nn.Module, layout: GridLayout):
        super().__init__()
        self.base = base
        self.layout = layout

    def _tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The base's fp32 frequency tables; rebuilt in fp32 once if the model was cast to half precision
        (integer positions index them exactly; the values keep fp32 accuracy)."""
        cos, sin = self.base.freqs_cos, self.base.freqs_sin
        if cos.dtype in (torch.float32, torch.float64):
            return cos, sin
        if getattr(self, "_fp32", None) is None or self._fp32[0].device != torch.device(device):
            fresh = type(self.base)(self.base.attention_head_dim, self.base.patch_size, self.base.max_seq_len)
            self._fp32 = (fresh.freqs_cos.float().to(device), fresh.freqs_sin.float().to(device))
        return self._fp32

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.base.patch_size
        f, h, w = num_frames // p_t, height // p_h, width // p_w
        views = self.layout.views
        if f % views != 0:
            raise ValueError(f"fused Wan: {f} latent frames cannot be split into {views} views; lay latents "
                             f"out as [B, C, views*frames, H, W] (view-major)")
        frames = f // views
        self.layout.frames = frames
        if views * self.layout.t_max > self.base.max_seq_len:
            raise ValueError(f"fused Wan: views*t_max = {views * self.layout.t_max} exceeds the rotary table "
                             f"length {self.base.max_seq_len}; lower t_max")
        pos = fused_positions(views, frames, h, w, self.layout.t_max).to(hidden_states.device)
        sizes = [self.base.t_dim, self.base.h_dim, self.base.w_dim]
        freqs_cos, freqs_sin = self._tables(hidden_states.device)
        cos_parts = freqs_cos.split(sizes, dim=1)
        sin_parts = freqs_sin.split(sizes, dim=1)
        cos = torch.cat([cos_parts[i][pos[:, i]] for i in range(3)], dim=-1)
        sin = torch.cat([sin_parts[i][pos[:, i]] for i in range(3)], dim=-1)
        return cos[None, :, None, :], sin[None, :, None, :]


class FusedWanAttnProcessor:
    """Self-attention with the fused view-time pattern; anything else goes to the original processor."""

    def __init__(self, original, layout: GridLayout, index: int = 0):
        self.original = original
        self.layout = layout
        self.index = index  # block number: the sequential baseline alternates by it

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, rotary_emb=None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or self.layout.frames is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kwargs)
        if getattr(attn, "fused_projections", False):
            q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))  # [B, N, heads, D]
        if rotary_emb is not None:
            q, k = _rotate(q, *rotary_emb), _rotate(k, *rotary_emb)
        out = self._attend(attn, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def _attend(self, attn, q, k, v):
        views, frames, mode = self.layout.views, self.layout.frames, self.layout.mode
        if mode == "fused":
            return fused_view_time_attention(q, k, v, views, frames, backend=self.layout.backend)
        if mode == "sequential":
            fn = view_attention if self.index % 2 == 0 else time_attention
            return fn(q, k, v, views, frames)
        if mode == "time":
            return time_attention(q, k, v, views, frames)
        if mode == "parallel":
            sync = getattr(attn, SYNC_NAME, None)
            if sync is None:
                raise RuntimeError("mode 'parallel' needs the sync layers: call add_sync_layers(model) first")
            return sync(q, k, v, views, frames)
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {MODES}")


def add_sync_layers(model: nn.Module) -> list[str]:
    """Give every block's self-attention a ParallelSyncAttention (idempotent); returns the new parameter
    names. Only the "parallel" baseline uses them."""
    names = []
    for i, block in enumerate(model.blocks):
        attn = block.attn1
        if not hasattr(attn, SYNC_NAME):
            ref = next(attn.parameters())
            setattr(attn, SYNC_NAME, ParallelSyncAttention(attn.inner_dim).to(device=ref.device, dtype=ref.dtype))
        names += [f"blocks.{i}.attn1.{SYNC_NAME}.{n}" for n, _ in getattr(attn, SYNC_NAME).named_parameters()]
    return names


def patch_wan_transformer(model: nn.Module, views: int, t_max: int, backend: str = "auto",
                          mode: str = "fused") -> GridLayout:
    """Make `model` (a diffusers WanTransformer3DModel) attend over a views x frames grid, in place.

    Returns the shared layout; change `layout.views` between calls to reuse the patch. Call `unpatch`
    (or use `fused_wan`) to restore the base model exactly.
    """
    if getattr(model, "_fuse4d_layout", None) is not None:
        raise RuntimeError("this Wan transformer is already patched; unpatch it first")
    if int(views) < 1 or int(t_max) < 1:
        raise ValueError(f"views and t_max must be >= 1, got views={views}, t_max={t_max}")
    if mode not in MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {MODES}")
    if mode == "parallel":
        add_sync_layers(model)
    layout = GridLayout(views=int(views), t_max=int(t_max), backend=backend, mode=mode)
    layout.patched["rope"] = model.rope
    model.rope = FusedWanRope(model.rope, layout)
    for i, block in enumerate(model.blocks):
        layout.patched[i] = block.attn1.processor
        block.attn1.set_processor(FusedWanAttnProcessor(block.attn1.processor, layout, i))
    model._fuse4d_layout = layout
    return layout


def unpatch(model: nn.Module) -> None:
    """Undo `patch_wan_transformer` (a no-op on an unpatched model)."""
    layout = getattr(model, "_fuse4d_layout", None)
    if layout is None:
        return
    model.rope = layout.patched["rope"]
    for i, block in enumerate(model.blocks):
        block.attn1.set_processor(layout.patched[i])
    model._fuse4d_layout = None


def is_patched(model: nn.Module) -> bool:
    return getattr(model, "_fuse4d_layout", None) is not None


@contextlib.contextmanager
def fused_wan(model: nn.Module, views: int, t_max: int, backend: str = "auto",
              mode: str = "fused") -> Iterator[GridLayout]:
    """Context manager: the model is a fused 4D model inside the block, the base model after."""
    layout = patch_wan_transformer(model, views, t_max, backend, mode)
    try:
        yield layout
    finally:
        unpatch(model)
