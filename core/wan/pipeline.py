# SPDX-License-Identifier: GPL-3.0-or-later
"""Text (+ reference frames) -> a V x T grid of frames with a fused 4D Wan model.

Latents are one long video per sample, [1, C, V*T', h, w] view-major (T' latent frames per view).
Sampling is rectified flow (Euler on Wan's shifted schedule) with classifier-free guidance. Reference
frames (a frozen-time row at t=0 and/or a fixed-view video of view 0) are encoded per view and
condition by clean-latent replacement at every step; a fine-tuned checkpoint can add the paper's
patch-embedding conditioning on top. Views are decoded one at a time to bound memory.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..extras import require
from .attention_processor import fused_wan, is_patched
from .conditioning import (cell_mask, concat_channels, concat_input, install_patch_conditioning, ray_channels,
                           reference_term, replace_clean, set_reference, token_timesteps)
from .flow import euler_step, shifted_sigmas, to_velocity
from .model_io import VideoModelConfig


@dataclass
class Generate4DConfig:
    views: int = 4
    frames: int = 8                 # pixel frames per view (Wan VAE: 1 + 4k)
    height: int = 64
    width: int = 64
    seed: int = 0
    steps: int = 40                 # the paper's 40; 4-8 already usable, tiny models use 4-8
    guidance: float = 5.0           # classifier-free guidance scale (1 = off)
    shift: float | None = None      # flow shift; None = the model config's
    t_max: int | None = None        # RoPE slots per view; None = the model config's
    backend: str = "auto"           # fused attention backend
    progress: bool = True


@dataclass
class Generate4DOutput:
    frames: torch.Tensor             # [V, T, H, W, 3] float in [0, 1]; given references verbatim
    latents: torch.Tensor            # [C, V*T', h, w] final latents
    reference_latents: torch.Tensor  # [C, V*T', h, w] encoded references (zeros where none)
    mask: torch.Tensor               # [V, T'] bool, conditioned cells


class PromptEncoder:
    """A UMT5 text encoder loaded once: prompt -> [max_length, dim] fp32 states (on the CPU), zero after
    the last real token (as Wan). On CUDA the encoder runs in bf16 (fp16 before Ampere)."""

    def __init__(self, text_encoder_path: str, tokenizer_path: str | None = None, device: torch.device | str = "cpu",
                 max_length: int = 512):
        transformers = require("transformers")
        AutoTokenizer, UMT5EncoderModel = transformers.AutoTokenizer, transformers.UMT5EncoderModel

        from ..precision import half_dtype

        self.device, self.max_length = torch.device(device), max_length
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or text_encoder_path)
        dtype = half_dtype(self.device)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        self.encoder = UMT5EncoderModel.from_pretrained(text_encoder_path, **kwargs).to(self.device).eval()

    def __call__(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer([prompt], padding="max_length", max_length=self.max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        with torch.no_grad():
            states = self.encoder(ids.input_ids.to(self.device),
                                  ids.attention_mask.to(self.device)).last_hidden_state[0].float().cpu()
        states[int(ids.attention_mask.sum()):] = 0
        return states


def encode_prompt(prompt: str, text_encoder_path: str, tokenizer_path: str | None = None,
                  max_length: int = 512, device: torch.device | str = "cpu") -> torch.Tensor:
    """UMT5 encoder states [max_length, dim] for one prompt (loads the encoder; for many prompts keep a
    PromptEncoder)."""
    return PromptEncoder(text_encoder_path, tokenizer_path, device, max_length)(prompt)


def _check_images(name: str, x: torch.Tensor | None, shape: tuple) -> torch.Tensor | None:
    if x is None:
        return None
    x = torch.as_tensor(x).float()
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must be shaped {shape} (float in [0, 1]); got {tuple(x.shape)}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name} values must lie in [0, 1]")
    return x


def encode_references(codec, cfg: Generate4DConfig, frozen_time: torch.Tensor | None,
                      fixed_view: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference latents [C, V*T', h, w], cell mask [V, T']), each view encoded on its own."""
    lt = codec.latent_frames(cfg.frames)
    h, w = cfg.height // codec.spatial_factor, cfg.width // codec.spatial_factor
    ref = torch.zeros(codec.channels, cfg.views * lt, h, w)
    mask = cell_mask(cfg.views, lt, frozen_time is not None, fixed_view is not None)
    if frozen_time is not None:
        for v in range(cfg.views):  # an image is a 1-frame video: with a causal VAE it is latent frame 0
            ref[:, v * lt: v * lt + 1] = codec.encode(frozen_time[v:v + 1])
    if fixed_view is not None:
        ref[:, 0:lt] = codec.encode(fixed_view)
    return ref, mask


def generate_4d(model: torch.nn.Module, codec, config: Generate4DConfig, prompt_embeds: torch.Tensor | None = None,
                negative_embeds: torch.Tensor | None = None, frozen_time: torch.Tensor | None = None,
                fixed_view: torch.Tensor | None = None, video_config: VideoModelConfig | None = None,
                cameras=None) -> Generate4DOutput:
    """Sample a V x T grid. `model`: a diffusers WanTransformer3DModel (unpatched; patched here for the
    duration of the call). `codec`: PixelCodec or WanVAECodec. `prompt_embeds`: [L, text_dim] text
    states (see `encode_prompt`); None = empty text (zeros). `frozen_time`: [V, H, W, 3] images at t=0;
    `fixed_view`: [T, H, W, 3] video of view 0; both float in [0, 1]. `cameras`: the V views' Cameras,
    needed (only) by models with ray channels."""
    cfg = config
    vcfg = video_config or VideoModelConfig(wan=None)  # defaults only
    shift = vcfg.flow_shift if cfg.shift is None else cfg.shift
    t_max = vcfg.t_max if cfg.t_max is None else cfg.t_max
    sf = codec.spatial_factor
    ph, pw = model.config.patch_size[1:]
    if cfg.height % (sf * ph) or cfg.width % (sf * pw):
        raise ValueError(f"size {cfg.height}x{cfg.width} must be a multiple of {sf * ph}x{sf * pw} "
                         "(codec downsampling x patch size)")
    in_channels = (concat_channels(codec.channels, vcfg.position_channels, vcfg.view_change_channels,
                                   vcfg.grid_channels, vcfg.ray_bands)
                   if vcfg.concat_reference else codec.channels)
    if in_channels != model.config.in_channels:
        raise ValueError(f"codec has {codec.channels} latent channels ({in_channels} model inputs), the model "
                         f"expects {model.config.in_channels}")
    frozen_time = _check_images("frozen_time", frozen_time, (cfg.views, cfg.height, cfg.width, 3))
    fixed_view = _check_images("fixed_view", fixed_view, (cfg.frames, cfg.height, cfg.width, 3))
    lt = codec.latent_frames(cfg.frames)
    if lt > t_max:
        raise ValueError(f"{lt} latent frames per view exceed t_max={t_max}")
    rays = None
    if vcfg.concat_reference and vcfg.ray_bands:
        if cameras is None or len(cameras) != cfg.views:
            raise ValueError(f"this video model reads the cameras of the views (ray channels): give the "
                             f"{cfg.views} cameras" + ("" if cameras is None else f", not {len(cameras)}"))
        rays = ray_channels(cameras, cfg.height // sf, cfg.width // sf, vcfg.ray_bands, vcfg.ray_height)

    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    ref, mask = encode_references(codec, cfg, frozen_time, fixed_view)
    ref, mask = ref[None].to(device), mask.to(device)
    text_dim = model.config.text_dim
    cond = torch.zeros(1, text_dim) if prompt_embeds is None else torch.as_tensor(prompt_embeds).float()
    if cond.dim() == 2:
        cond = cond[None]
    if cond.shape[-1] != text_dim:
        raise ValueError(f"prompt_embeds have width {cond.shape[-1]}, the model expects text_dim={text_dim}")
    use_cfg = cfg.guidance != 1.0
    if use_cfg:
        neg = torch.zeros_like(cond) if negative_embeds is None else torch.as_tensor(negative_embeds).float()
        neg = neg[None] if neg.dim() == 2 else neg
        if neg.shape[1] != cond.shape[1]:  # pad/crop to one length so the two can share a batch
            pad = torch.zeros(1, cond.shape[1], text_dim)
            pad[:, :min(neg.shape[1], cond.shape[1])] = neg[:, :cond.shape[1]]
            neg = pad
        text = torch.cat([cond, neg]).to(device, dtype)
    else:
        text = cond.to(device, dtype)
    batch = text.shape[0]

    gen = torch.Generator().manual_seed(int(cfg.seed))
    x = torch.randn(ref.shape, generator=gen).to(device)
    sigmas = shifted_sigmas(cfg.steps, shift).tolist()
    tokens_per_frame = (x.shape[-2] // ph) * (x.shape[-1] // pw)
    has_ref = bool(mask.any())
    if vcfg.patch_embed_conditioning and has_ref:
        install_patch_conditioning(model)
    patch_ctx = (contextlib.nullcontext() if is_patched(model)
                 else fused_wan(model, cfg.views, t_max, cfg.backend, mode=vcfg.attention))
    try:
        with patch_ctx, torch.no_grad():
            layout = model._fuse4d_layout
            base = reference_term(ref, mask, broadcast=True) if vcfg.prediction != "velocity" else None
            layout.views = cfg.views
            if vcfg.patch_embed_conditioning and has_ref:
                set_reference(model, reference_term(ref, mask).to(dtype))
            for i in tqdm(range(cfg.steps), desc="4D sampling", disable=not cfg.progress):
                s, s_next = sigmas[i], sigmas[i + 1]
                x = replace_clean(x, ref, mask)
                t = torch.full((batch,), s * 1000.0, device=device)
                if vcfg.per_token_timestep and has_ref:
                    t = token_timesteps(mask, t, tokens_per_frame)
                inp = (concat_input(x, ref, mask, vcfg.position_channels, vcfg.view_change_channels,
                                     vcfg.grid_channels, rays)
                       if vcfg.concat_reference else x)
                out = model(inp.expand(batch, *inp.shape[1:]).to(dtype), t, text).sample.float()
                # batch row 0 = prompt, row 1 = negative/empty: v = v_neg + g (v_pos - v_neg)
                out = to_velocity(out, x.expand(out.shape[0], *x.shape[1:]), s, base, vcfg.prediction, vcfg.fold)
                velocity = out[1:] + cfg.guidance * (out[:1] - out[1:]) if use_cfg else out
                x = euler_step(x, velocity, s, s_next)
            x = replace_clean(x, ref, mask)
    finally:
        if vcfg.patch_embed_conditioning and has_ref:
            set_reference(model, None)

    frames = decode_grid(codec, x[0], cfg.views, progress=cfg.progress)
    if frozen_time is not None:  # references come back verbatim, as a user expects
        frames[:, 0] = frozen_time
    if fixed_view is not None:
        frames[0] = fixed_view
    return Generate4DOutput(frames=frames, latents=x[0].cpu(), reference_latents=ref[0].cpu(), mask=mask.cpu())


def decode_grid(codec, latents: torch.Tensor, views: int, progress: bool = True) -> torch.Tensor:
    """[C, V*T', h, w] -> [V, T, H, W, 3], one view per decode call (views are coded separately)."""
    lt = latents.shape[1] // views
    out = [codec.decode(latents[:, v * lt:(v + 1) * lt]).cpu()
           for v in tqdm(range(views), desc="decoding views", disable=not progress)]
    return torch.stack(out)
