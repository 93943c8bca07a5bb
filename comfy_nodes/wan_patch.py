# SPDX-License-Identifier: GPL-3.0-or-later
"""Turn ComfyUI's native Wan (2.1 / 2.2) into a V x T fused view-time model by patching a clone.

Three pieces, all on a `ModelPatcher.clone()` so the input MODEL is never touched:
1. a DIFFUSION_MODEL wrapper that reads the latent [B, C, V*T, H, W], learns T = frames / V and puts
   the layout (and, when T_max > T, the (v*T_max + t) RoPE frequencies) into transformer_options;
2. an `optimized_attention_override` that runs fused view-time attention for Wan self-attention and
   passes everything it declines (cross-attention: q/k of different lengths, masks, dense layouts)
   to the override that was there before, or to ComfyUI's own attention;
3. a block patch ("dit", ("double_block", i)) that swaps the blocks' `pe` for the fused positions.

With the reference conditioning of a Fuse4D-trained model (from its exported settings), two more:
4. a SAMPLER_SAMPLE wrapper that puts the sampler's clean latent (the known frames that 4D Reference
   Frames encoded, already in the model's latent space) and its noise mask into transformer_options,
   the way ComfyUI itself hands `sample_sigmas` down;
5. the DIFFUSION_MODEL wrapper then gives the network the input and timesteps the Fuse4D trainer gave it
   (core.wan.conditioning.ReferenceConditioning): clean references on known cells, the patch-embedding
   term, the channel-concat inputs in place of the zeros ComfyUI concatenates, per-frame timesteps.
"""
from __future__ import annotations

import logging

import torch

import comfy.patcher_extension
import comfy.utils

STATE_KEY = "fuse4d_fused"
WRAPPER_KEY = "fuse4d_fused_view_time"
REFERENCES_KEY = "fuse4d_references"
_SAMPLE_ARGS = ("model_wrap", "sigmas", "extra_args", "callback", "noise", "latent_image", "denoise_mask",
                "disable_pbar")
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


def reference_sampler_wrapper(executor, *args, **kwargs):
    """SAMPLER_SAMPLE wrapper: the sampler's latent_image (clean known latents, model space) and
    denoise_mask travel to the diffusion model in transformer_options[REFERENCES_KEY]."""
    args = list(args)

    def arg(i):
        return args[i] if len(args) > i else kwargs.get(_SAMPLE_ARGS[i])

    extra_args = arg(2)
    if isinstance(extra_args, dict):
        extra_args = dict(extra_args)
        model_options = dict(extra_args.get("model_options") or {})
        options = dict(model_options.get("transformer_options") or {})
        options[REFERENCES_KEY] = {"latent": arg(5), "mask": arg(6)}
        model_options["transformer_options"] = options
        extra_args["model_options"] = model_options
        if len(args) > 2:
            args[2] = extra_args
        else:
            kwargs["extra_args"] = extra_args
    return executor(*args, **kwargs)


def condition_input(dm, conditioning, x, timestep, options: dict, views: int):
    """The Fuse4D model input and timesteps for the Wan input `x` [B, in_dim, V*T, h, w] (noisy latents,
    then the zeros ComfyUI concatenates for extra input channels) and ComfyUI's `timestep` ([B], or
    [B, frames] where WAN22 made per-frame timesteps from the mask)."""
    from ..core.wan.conditioning import cells_from_noise_mask

    channels = dm.out_dim
    refs = options.get(REFERENCES_KEY) or {}
    latent, noise_mask = refs.get("latent"), refs.get("mask")
    frames = x.shape[2] // views
    if latent is None or noise_mask is None:  # nothing known (text to 4D)
        mask = torch.zeros(views, frames, dtype=torch.bool, device=x.device)
        reference = x.new_zeros(1, channels, *x.shape[2:])
    else:
        mask = cells_from_noise_mask(noise_mask, views).to(x.device)
        reference = comfy.utils.repeat_to_batch_size(latent, x.shape[0]).to(x.device)
        if reference.shape[1:] != (channels, *x.shape[2:]):
            raise ValueError(f"Fuse4D: the sampler's latent {tuple(latent.shape)} does not match the model input "
                             f"{tuple(x.shape)}")
    model_input = conditioning.model_input(x[:, :channels], reference, mask)
    if model_input.shape[1] != x.shape[1]:  # checked when the patch was made; a guard for odd callers
        raise ValueError(f"Fuse4D: the model takes {x.shape[1]} input channels; the conditioning makes "
                         f"{model_input.shape[1]}")
    # ComfyUI's WAN22 gives known frames timestep 0 and the others the sampler's; the trainer's is per
    # `conditioning.per_token_timestep`, from the sampler's timestep (the largest)
    t = timestep if timestep.ndim == 1 else timestep.reshape(timestep.shape[0], -1).amax(dim=1)
    return model_input.to(x.dtype), conditioning.timesteps(t, mask)


def make_layout_wrapper(views: int, t_max: int, backend: str, conditioning=None):
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
        if conditioning is not None:
            timestep = args[1] if len(args) >= 2 else kwargs["timestep"]
            x, timestep = condition_input(dm, conditioning, x, timestep, options, views)
            args[0] = x
            if len(args) >= 2:
                args[1] = timestep
            else:
                kwargs["timestep"] = timestep
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


def check_conditioning(dm, conditioning) -> None:
    """The settings' conditioning must fit the loaded network's input channels."""
    takes, channels = int(dm.patch_embedding.weight.shape[1]), int(dm.out_dim)
    wants = conditioning.in_channels(channels)
    if takes != wants:
        raise ValueError(f"Fuse4D: the settings file describes a model with {wants} input channels for "
                         f"{channels} latent channels; this MODEL takes {takes}: pick the settings of the "
                         f"model that is loaded")


def patch_fused_view_time(model, views: int, t_max: int = 0, backend: str = "auto", conditioning=None):
    """Return a patched clone of a Wan MODEL. `views` V >= 1; `t_max` 0 means T (no gap between views).
    `conditioning`: the model's core ReferenceConditioning (from its exported settings), or None to leave
    ComfyUI's own handling of known frames (a base Wan)."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown fused attention backend {backend!r}; choose from {BACKENDS}")
    dm = wan_diffusion_model(model)
    if conditioning is not None:
        check_conditioning(dm, conditioning)
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    previous = options.get("optimized_attention_override")
    if getattr(previous, "fuse4d_previous", False) is not False:
        logging.warning("Fuse4D: the MODEL already has fused view-time attention; replacing it")
        previous = previous.fuse4d_previous
    options["optimized_attention_override"] = make_attention_override(previous)
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 make_layout_wrapper(int(views), int(t_max), backend, conditioning))
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY)
    if conditioning is not None:
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY,
                                     reference_sampler_wrapper)
    existing = options.get("patches_replace", {}).get("dit", {})
    for i in range(len(dm.blocks)):
        prev = existing.get(("double_block", i))
        prev = getattr(prev, "fuse4d_previous", prev)
        patch = make_block_patch(prev)
        patch.fuse4d_previous = prev
        patched.set_model_patch_replace(patch, "dit", "double_block", i)
    return patched
