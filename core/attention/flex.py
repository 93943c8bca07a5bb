# SPDX-License-Identifier: GPL-3.0-or-later
"""FlexAttention backend: a block-sparse mask (same view OR same time) built from the layout.

The block mask is computed at block level from the V x T frame grid, never from N x N token pairs,
so building it needs O((N/128)^2) memory (a few MB at N = 64k) instead of dense N x N tensors.
Masks live in a small LRU cache per layout; the batch and head dimensions broadcast, so batch
size never changes the key. Selected automatically on CUDA. On the CPU, torch's compiled
FlexAttention runs the forward only (torch 2.13/2.14 raise NotImplementedError for the backward), so
we refuse early, with a clear message, whenever a gradient would be needed there; use
backend="merge" for CPU training.
"""
from __future__ import annotations

import functools
from collections import OrderedDict

import torch

from .layout import check_layout

BLOCK = 128        # FlexAttention's default block size
CACHE_SIZE = 16    # layouts kept (a sampler uses one; a trainer on mixed grids a few)
_MASKS: OrderedDict = OrderedDict()  # (V, T, S, padded length, device) -> BlockMask


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
def _compiled_flex(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention
    # CUDA: automatic dynamic shapes, so a second layout compiles one dynamic kernel instead of one per
    # layout (past dynamo's recompile limit flex would run eagerly, with full scores). CPU: static (the
    # configuration checked against the reference in the tests).
    return torch.compile(flex_attention, dynamic=False if device_type == "cpu" else None)


def padded_length(n: int, device: torch.device) -> int:
    """The sequence length flex runs on: whole blocks on the CPU (torch 2.14's compiled CPU kernel gives
    wrong values for a partial last block, a few % off), the true length on CUDA (handled there)."""
    return -(-n // BLOCK) * BLOCK if torch.device(device).type == "cpu" else n


def frame_blocks(views: int, frames: int, tokens_per_frame: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(any_allowed, all_allowed): bool [nb, nb] block masks of the view-OR-time pattern over `length`
    tokens (>= N; tokens past N are padding and allowed nowhere). Work and memory O(nb * F + F^2 + nb^2)
    with nb = ceil(length / BLOCK) blocks and F = V*T frames."""
    n = views * frames * tokens_per_frame
    nb = -(-length // BLOCK)
    f = views * frames
    frame = torch.arange(f)
    view, time = frame // frames, frame % frames
    disallowed = ((view[:, None] != view[None, :]) & (time[:, None] != time[None, :])).float()  # [F, F]
    # each block covers the contiguous frames first..last (real tokens only)
    starts = torch.arange(nb) * BLOCK
    ends = torch.clamp(starts + BLOCK, max=n) - 1
    real = starts < n
    first = torch.clamp(starts, max=n - 1) // tokens_per_frame
    last = ends // tokens_per_frame
    member = ((frame[None, :] >= first[:, None]) & (frame[None, :] <= last[:, None]) & real[:, None]).float()
    pairs = member.sum(1)                                           # frames per block
    bad = member @ disallowed @ member.T                           # disallowed frame pairs per block pair
    any_allowed = (pairs[:, None] * pairs[None, :]) > bad
    complete = (starts + BLOCK <= n)                                # no padding inside the block
    all_allowed = (bad == 0) & real[:, None] & real[None, :] & complete[:, None] & complete[None, :]
    return any_allowed, all_allowed


def _ordered(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[nb, nb] bool -> (counts [1, 1, nb], column indices [1, 1, nb, nb]) with the True columns first."""
    counts = dense.sum(-1, dtype=torch.int32)
    order = torch.argsort(dense.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return counts[None, None], order[None, None]


def view_time_block_mask(views: int, frames: int, tokens_per_frame: int, device: torch.device | str):
    """Cached BlockMask of the layout on `device` (see frame_blocks); LRU over CACHE_SIZE layouts."""
    device = torch.device(device)
    n = views * frames * tokens_per_frame
    length = padded_length(n, device)
    key = (views, frames, tokens_per_frame, length, str(device))
    if key in _MASKS:
        _MASKS.move_to_end(key)
        return _MASKS[key]
    from torch.nn.attention.flex_attention import BlockMask

    any_allowed, all_allowed = frame_blocks(views, frames, tokens_per_frame, length)
    partial = any_allowed & ~all_allowed
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(all_allowed)
    frame_len, view_len = tokens_per_frame, frames * tokens_per_frame

    def mask_mod(b, h, q_idx, kv_idx):  # only evaluated inside partial blocks
        same_view = (q_idx // view_len) == (kv_idx // view_len)
        same_time = ((q_idx // frame_len) % frames) == ((kv_idx // frame_len) % frames)
        return (same_view | same_time) & (kv_idx < n)

    mask = BlockMask.from_kv_blocks(kv_num.to(device), kv_idx.to(device), full_num.to(device), full_idx.to(device),
                                    BLOCK_SIZE=BLOCK, mask_mod=mask_mod, seq_lengths=(length, length))
    _MASKS[key] = mask
    while len(_MASKS) > CACHE_SIZE:
        _MASKS.popitem(last=False)
    return mask


def block_mask_bytes(mask) -> int:
    """Bytes held by a BlockMask's index tensors."""
    return sum(t.numel() * t.element_size() for t in mask.as_tuple(flatten=True) if torch.is_tensor(t))


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
    pad = padded_length(n, q.device) - n
    if pad:
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    out = _compiled_flex(q.device.type)(q, k, v, block_mask=block_mask, scale=scale)
    return out[:, :, :n] if pad else out
