# SPDX-License-Identifier: GPL-3.0-or-later
"""Turn ComfyUI's native Wan (2.1 / 2.2) into a V x T fused view-time model by patching a clone.

Three pieces, all on a `ModelPatcher.clone()` so the input MODEL is never touched:
1. a DIFFUSION_MODEL wrapper that reads the latent [B, C, V*T, H, W], learns T = frames / V and puts
   the layout (and, when T_max > T, the (v*T_max + t) RoPE frequencies) into transformer_options;
2. an `optimized_attention_override` that runs fused view-time attention for Wan self-attention and
   passes everything it declines (cross-attention: q/k of different lengths, masks, dense layouts)
   to the override that was there before, or to ComfyUI's own attention;
3. a block patch ("dit", ("double_block", i)) that swaps the blocks' `pe` for the fused positions.
"""
from __future__ import annotations

import logging

import torch

import comfy.patcher_extension

STATE_KEY = "fuse4d_fused"
WRAPPER_KEY = "fuse4d_fused_view_time"
BACKENDS = ("auto", "merge", "reference", "flex")


def wan_diffusion_model(model):
    """The native Wan backbone inside a MODEL, or a clear error."""
    holder = getattr(model, "model", None)
    inner = getattr(holder, "diffusion_model", None)
    try:
        from comfy.ldm.wan.model import WanModel
    except ImportError:  # pragma: no cover - every supported ComfyUI has Wan
        WanModel = None
    if inner is None or WanModel is None or not isinstance(inner, WanModel):
        got = next(x for x in (inner, holder, model) if x is not None)
        raise ValueError(f"Fuse4D Fused View-Time Attention needs a native Wan 2.1 / 2.2 MODEL "
                         f"(comfy.ldm.wan.model.WanModel, loaded by UNETLoader / Load Diffusion Model); "
                         f"got {type(got).__name__}")
    if not hasattr(model, "clone") or not hasattr(model, "model_options"):
        raise ValueError("Fuse4D Fused View-Time Attention needs a MODEL (a ComfyUI ModelPatcher)")
    return inner


def _self_attention_layout(q, k, skip_reshape: bool, state: dict) -> bool:
    seq_q = q.shape[2] if skip_reshape else q.shape[1]
    seq_k = k.shape[2] if skip_reshape else k.shape[1]
    return seq_q == seq_k == state["tokens"]


def make_attention_override(previous):
    """An override for `optimized_attention`; `previous` is the override already installed (or None)."""

    def decline(func, args, kwargs):
        if previous is not None:
            return previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def fused_override(func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        state = options.get(STATE_KEY)
        q, k, v = args[:3]
        skip_reshape = bool(kwargs.get("skip_reshape", False))
        if (state is None or state["views"] == 1 or state["frames"] == 1 or kwargs.get("mask") is not None
                or not _self_attention_layout(q, k, skip_reshape, state)):
            # Cross-attention, masked attention, or a layout where every token sees every token.
            return decline(func, args, kwargs)
        from ..core.attention import fused_view_time_attention

        heads = kwargs["heads"]
        if skip_reshape:
            qh, kh, vh = q, k, v
        else:
            b, n, inner = q.shape
            d = inner // heads
            qh, kh, vh = (t.view(b, n, heads, d).transpose(1, 2) for t in (q, k, v))
        out = fused_view_time_attention(qh, kh, vh, state["views"], state["frames"], backend=state["backend"])
        if kwargs.get("skip_output_reshape", False):
            return out
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)

    fused_override.fuse4d_previous = previous
    return fused_override


def fused_rope_ids(views: int, frames: int, t_max: int, h_tokens: int, w_tokens: int, device) -> torch.Tensor:
    """[1, N, 3] fp32 positions (v*T_max + t, y, x): exact integers up to 2^24 (in the model's bf16 they
    would collapse past 256, e.g. 4 views x T_max 84 = 336 slots onto 297 values)."""
    from ..core.attention import fused_positions

    return fused_positions(views, frames, h_tokens, w_tokens, t_max).to(device=device, dtype=torch.float32)[None]


def fused_rope(diffusion_model, views: int, frames: int, t_max: int, h_tokens: int, w_tokens: int,
               device) -> torch.Tensor:
    """RoPE frequencies for tokens at (v*T_max + t, y, x), same format as WanModel.rope_encode."""
    ids = fused_rope_ids(views, frames, t_max, h_tokens, w_tokens, device)
    return diffusion_model.rope_embedder(ids).movedim(1, 2)


def make_layout_wrapper(views: int, t_max: int, backend: str):
    def layout_wrapper(executor, *args, **kwargs):
        args = list(args)
        if len(args) >= 6:
            options = args[5]
        else:
            options = kwargs.get("transformer_options", {})
        x = args[0]
        time_concat = args[4] if len(args) >= 5 else kwargs.get("time_dim_concat")
        dm = executor.class_obj
        if x.ndim != 5 or time_concat is not None:
            return executor(*args, **kwargs)
        length = x.shape[2]
        if length % views != 0:
            raise ValueError(f"Fuse4D: the latent has {length} frames, not a multiple of views={views}; "
                             f"make it with 'Empty 4D Latent' (V x T latent frames, view-major)")
        frames = length // views
        pt, ph, pw = dm.patch_size
        h_tok = -(-x.shape[3] // ph)
        w_tok = -(-x.shape[4] // pw)
        tmax = max(int(t_max), frames) if t_max > 0 else frames
        if tmax < frames:
            raise ValueError(f"Fuse4D: T_max={t_max} is smaller than the {frames} latent frames per view")
        state = {"views": views, "frames": frames // pt, "tokens": length // pt * h_tok * w_tok,
                 "backend": backend, "pe": None}
        if views > 1:  # our fp32 positions even when T_max = T (ComfyUI builds them in the latent's dtype)
            state["pe"] = fused_rope(dm, views, frames, tmax, h_tok, w_tok, x.device)
        options = dict(options)
        options[STATE_KEY] = state
        if len(args) >= 6:
            args[5] = options
        else:
            kwargs["transformer_options"] = options
        return executor(*args, **kwargs)

    return layout_wrapper


def make_block_patch(previous):
    def block_patch(args, extra):
        state = args.get("transformer_options", {}).get(STATE_KEY)
        if state is not None and state.get("pe") is not None:
            args = dict(args)
            args["pe"] = state["pe"]
        if previous is not None:
            return previous(args, extra)
        return extra["original_block"](args)

    return block_patch


def patch_fused_view_time(model, views: int, t_max: int = 0, backend: str = "auto"):
    """Return a patched clone of a Wan MODEL. `views` V >= 1; `t_max` 0 means T (no gap between views)."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown fused attention backend {backend!r}; choose from {BACKENDS}")
    dm = wan_diffusion_model(model)
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    previous = options.get("optimized_attention_override")
    if getattr(previous, "fuse4d_previous", False) is not False:
        logging.warning("Fuse4D: the MODEL already has fused view-time attention; replacing it")
        previous = previous.fuse4d_previous
    options["optimized_attention_override"] = make_attention_override(previous)
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 make_layout_wrapper(int(views), int(t_max), backend))
    existing = options.get("patches_replace", {}).get("dit", {})
    for i in range(len(dm.blocks)):
        prev = existing.get(("double_block", i))
        prev = getattr(prev, "fuse4d_previous", prev)
        patch = make_block_patch(prev)
        patch.fuse4d_previous = prev
        patched.set_model_patch_replace(patch, "dit", "double_block", i)
    return patched
