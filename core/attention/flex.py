# SPDX-License-Identifier: GPL-3.0-or-later
"""FlexAttention backend: a block-sparse mask_mod (same view OR same time), compiled once per layout.

Selected automatically on CUDA. On the CPU, torch's compiled FlexAttention runs the forward only
(torch 2.13/2.14 raise NotImplementedError for the backward), so we refuse early, with a clear
message, whenever a gradient would be needed there; use backend="merge" for CPU training.
"""
from __future__ import annotations

import functools

import torch

from .layout import check_layout

_LAYOUTS: dict[tuple, object] = {}  # (V, T, S, device) -> BlockMask
_BLOCK = 128  # FlexAttention's default block size


def flex_available(device: torch.device | str = "cpu") -> bool:
    """FlexAttention importable and a compiler for `device` present (Triton on CUDA, a C++ compiler on CPU)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return torch.cuda.is_available()
    if device.type == "cpu":
        import shutil
        return any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    return False


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def _padded_length(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def view_time_block_mask(views: int, frames: int, tokens_per_frame: int, device: torch.device):
    """Cached BlockMask for the layout (built once per (V, T, S, device)), over the sequence padded to
    whole blocks: the compiled CPU kernel of torch 2.14 gives wrong values for a partial last block
    (a few % off), so padding keys are masked out instead."""
    key = (views, frames, tokens_per_frame, str(device))
    if key not in _LAYOUTS:
        from torch.nn.attention.flex_attention import create_block_mask
        frame_len, view_len = tokens_per_frame, frames * tokens_per_frame
        n = views * view_len

        def mask_mod(b, h, q_idx, kv_idx):
            same_view = (q_idx // view_len) == (kv_idx // view_len)
            same_time = ((q_idx // frame_len) % frames) == ((kv_idx // frame_len) % frames)
            return (same_view | same_time) & (kv_idx < n)

        padded = _padded_length(n)
        _LAYOUTS[key] = create_block_mask(mask_mod, None, None, padded, padded, device=device)
    return _LAYOUTS[key]


def flex_attention_view_time(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, views: int, frames: int,
                             scale: float | None = None) -> torch.Tensor:
    s = check_layout(q, k, v, views, frames)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if q.device.type == "cpu" and needs_grad:
        raise RuntimeError("fused attention backend 'flex': FlexAttention has no backward on the CPU in this "
                           "torch; use backend='merge' (exact, differentiable) or run under torch.no_grad()")
    if not flex_available(q.device):
        raise RuntimeError(f"fused attention backend 'flex' is not available on {q.device} "
                           "(needs torch FlexAttention plus Triton on CUDA or a C++ compiler on the CPU)")
    block_mask = view_time_block_mask(views, frames, s, q.device)
    n = q.shape[2]
    pad = _padded_length(n) - n
    if pad:
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    return _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale)[:, :, :n]
