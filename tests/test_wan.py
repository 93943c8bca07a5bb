# SPDX-License-Identifier: GPL-3.0-or-later
"""The Wan adapter: fused attention patch, key layouts, 4D sampling with references, the trainer."""
from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from fuse4d.core.attention import view_time_mask
from fuse4d.core.wan.attention_processor import fused_wan, patch_wan_transformer, unpatch
from fuse4d.core.wan.codecs import PixelCodec, WanVAECodec
from fuse4d.core.wan.keys import (WAN21_T2V_1_3B, WAN22_TI2V_5B, WAN_TINY, WanConfig, build_wan_transformer,
                                  detect_layout, load_wan_transformer, to_diffusers_state_dict,
                                  to_original_state_dict)
from fuse4d.core.wan.lora import add_lora, merge_lora
from fuse4d.core.wan.model_io import VideoModelConfig
from fuse4d.core.wan.pipeline import Generate4DConfig, generate_4d
from fuse4d.core.wan.trainer import smoke_config, train_video


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_wan_transformer(WAN_TINY).eval()


def _inputs(frames: int, seed: int = 1, h: int = 8, w: int = 6):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, WAN_TINY.in_dim, frames, h, w, generator=g), torch.tensor([700.0, 150.0]),
            torch.randn(2, 5, WAN_TINY.text_dim, generator=g))


def test_v1_patch_reproduces_base_model(tiny_model):
    x, t, e = _inputs(5)
    with torch.no_grad():
        base = tiny_model(x, t, e).sample
        with fused_wan(tiny_model, views=1, t_max=16):
            patched = tiny_model(x, t, e).sample
        after = tiny_model(x, t, e).sample
    assert (patched - base).abs().max() <= 1e-6
    assert torch.equal(after, base)  # unpatching restores the base model exactly


class _MaskedProcessor:
    """Independent ground truth: Wan's own projections and rotation, dense SDPA with the view-or-time mask."""

    def __init__(self, views, frames):
        self.views, self.frames = views, frames

    def __call__(self, attn, x, enc=None, mask=None, rope=None, **kw):
        q, k, v = (f(x).unflatten(2, (attn.heads, -1)) for f in (lambda y: attn.norm_q(attn.to_q(y)),
                                                                lambda y: attn.norm_k(attn.to_k(y)), attn.to_v))
        cos, sin = rope

        def rot(z):  # rotate pairs (z[2i], z[2i+1]) by the angle whose cos/sin are repeated per pair
            zc = torch.view_as_complex(z.double().unflatten(-1, (-1, 2)).contiguous())
            ang = torch.complex(cos[..., 0::2], sin[..., 0::2])
            return torch.view_as_real(zc * ang).flatten(-2).float()

        q, k = rot(q), rot(k)
        m = view_time_mask(self.views, self.frames, x.shape[1] // (self.views * self.frames))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=m)
        return attn.to_out[0](out.transpose(1, 2).flatten(2))


class _LongVideoRope(torch.nn.Module):
    """Positions by construction: RoPE of a V*T_max-frame video, keeping frames v*T_max + t."""

    def __init__(self, base, views, frames, t_max):
        super().__init__()
        self.base, self.views, self.frames, self.t_max = base, views, frames, t_max

    def forward(self, x):
        b, c, _, h, w = x.shape
        cos, sin = self.base(torch.zeros(b, c, self.views * self.t_max, h, w))
        s = (h // 2) * (w // 2)
        keep = torch.tensor([(v * self.t_max + t) * s + i for v in range(self.views) for t in range(self.frames)
                             for i in range(s)])
        return cos[:, keep], sin[:, keep]


@pytest.mark.parametrize("views,frames,backend", [(3, 2, "merge"), (2, 4, "reference"), (4, 1, "auto")])
def test_fused_grid_equals_masked_reference(tiny_model, views, frames, backend):
    t_max = 6
    x, t, e = _inputs(views * frames, seed=views)
    with torch.no_grad():
        with fused_wan(tiny_model, views, t_max, backend):
            fused = tiny_model(x, t, e).sample
        base_rope, procs = tiny_model.rope, [b.attn1.processor for b in tiny_model.blocks]
        try:
            tiny_model.rope = _LongVideoRope(base_rope, views, frames, t_max)
            for b in tiny_model.blocks:
                b.attn1.set_processor(_MaskedProcessor(views, frames))
            ref = tiny_model(x, t, e).sample
        finally:
            tiny_model.rope = base_rope
            for b, p in zip(tiny_model.blocks, procs):
                b.attn1.set_processor(p)
        plain = tiny_model(x, t, e).sample
    assert (fused - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (fused - plain).abs().max() > 1e-3  # the grid really changes the model


def test_key_layouts_load_to_identical_outputs(tiny_model, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    files = {"diffusers": sd, "original": to_original_state_dict(sd),
             "comfy": to_original_state_dict(sd, comfy_prefix=True)}
    assert "blocks.1.norm3.weight" in files["original"]  # the cross-attention norm in the original naming
    assert "blocks.0.self_attn.o.weight" in files["original"] and "head.modulation" in files["original"]
    x, t, e = _inputs(3)
    outs = {}
    for name, d in files.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(d, str(path))
        assert detect_layout(d) == ("diffusers" if name == "diffusers" else "original")
        model = load_wan_transformer(path, WAN_TINY)
        with torch.no_grad():
            outs[name] = model(x, t, e).sample
    with torch.no_grad():
        expected = tiny_model(x, t, e).sample
    for name, out in outs.items():
        assert torch.equal(out, expected), name
    with pytest.raises(ValueError, match="missing"):
        load_wan_transformer({k: v for k, v in sd.items() if "attn2" not in k}, WAN_TINY)


def _original_layout_shapes(c: WanConfig) -> dict[str, tuple]:
    """The original Wan release's parameter names and shapes, written from its architecture description."""
    d, p = c.dim, c.patch_size
    shapes = {"patch_embedding.weight": (d, c.in_dim, *p), "patch_embedding.bias": (d,),
              "text_embedding.0.weight": (d, c.text_dim), "text_embedding.0.bias": (d,),
              "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
              "time_embedding.0.weight": (d, c.freq_dim), "time_embedding.0.bias": (d,),
              "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
              "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,),
              "head.head.weight": (c.out_dim * math.prod(p), d), "head.head.bias": (c.out_dim * math.prod(p),),
              "head.modulation": (1, 2, d)}
    for i in range(c.num_layers):
        b = f"blocks.{i}."
        shapes[b + "modulation"] = (1, 6, d)
        for a in ("self_attn", "cross_attn"):
            for n in "qkvo":
                shapes[f"{b}{a}.{n}.weight"], shapes[f"{b}{a}.{n}.bias"] = (d, d), (d,)
            shapes[f"{b}{a}.norm_q.weight"] = shapes[f"{b}{a}.norm_k.weight"] = (d,)
        shapes[b + "norm3.weight"] = shapes[b + "norm3.bias"] = (d,)
        shapes[b + "ffn.0.weight"], shapes[b + "ffn.0.bias"] = (c.ffn_dim, d), (c.ffn_dim,)
        shapes[b + "ffn.2.weight"], shapes[b + "ffn.2.bias"] = (d, c.ffn_dim), (d,)
    return shapes


@pytest.mark.parametrize("config,billions", [(WAN21_T2V_1_3B, 1.42), (WAN22_TI2V_5B, 5.00)])
def test_full_configs_accept_mapped_original_keys_on_meta(config, billions):
    shapes = _original_layout_shapes(config)
    with torch.device("meta"):
        original = {"model.diffusion_model." + k: torch.empty(s) for k, s in shapes.items()}
    mapped = to_diffusers_state_dict(original)
    model = build_wan_transformer(config, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
    assert abs(sum(math.prod(s) for s in shapes.values()) / 1e9 - billions) < 0.01
    loaded = load_wan_transformer(original, config, device="meta")  # strict: every key used, shapes checked
    assert loaded.config.num_attention_heads == config.num_heads


def test_lora_starts_at_base_and_merges_exactly(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    x, t, e = _inputs(2)
    with torch.no_grad():
        base = model(x, t, e).sample
        names = add_lora(model, rank=2)
        assert names and all("lora_" in n and ".attn1." in n for n in names)
        assert torch.allclose(model(x, t, e).sample, base, atol=1e-6)
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.1)
        adapted = model(x, t, e).sample
        merge_lora(model)
        merged = model(x, t, e).sample
    assert (adapted - base).abs().max() > 1e-3
    assert torch.allclose(merged, adapted, atol=1e-5)
    assert set(model.state_dict()) == set(tiny_model.state_dict())


def _tiny_vae():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(3)
    return AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.1] * 4,
                            latents_std=[0.5] * 4).eval()


def test_frozen_time_row_conditions_first_time_step(tiny_model):
    codec = WanVAECodec(_tiny_vae())
    views, frames = 2, 5  # 5 pixel frames -> 2 latent frames per view (causal VAE)
    cfg = Generate4DConfig(views=views, frames=frames, height=32, width=32, steps=3, guidance=2.0, seed=4,
                           progress=False)
    row = torch.rand(views, 32, 32, 3, generator=torch.Generator().manual_seed(9))
    vc = VideoModelConfig(wan=WAN_TINY, t_max=4, patch_embed_conditioning=True)
    out = generate_4d(tiny_model, codec, cfg, prompt_embeds=torch.randn(3, WAN_TINY.text_dim), frozen_time=row,
                      video_config=vc)
    assert out.frames.shape == (views, frames, 32, 32, 3)
    assert torch.equal(out.frames[:, 0], row)  # the references come back verbatim
    lt = 2
    for v in range(views):
        encoded = codec.encode(row[v:v + 1])[:, 0]
        assert torch.equal(out.latents[:, v * lt], encoded)  # latent t=0 IS the clean encoded reference
        assert not torch.equal(out.latents[:, v * lt + 1], out.reference_latents[:, v * lt + 1])
    assert out.mask.tolist() == [[True, False], [True, False]]
    assert 0.0 <= float(out.frames.min()) and float(out.frames.max()) <= 1.0
    assert getattr(tiny_model, "_fuse4d_layout", None) is None  # unpatched after sampling


def test_fixed_view_video_and_guidance(tiny_model):
    model = build_wan_transformer(WanConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=32, in_dim=12, out_dim=12,
                                            text_dim=16, freq_dim=32)).eval()
    codec = PixelCodec(2)
    video = torch.rand(3, 16, 16, 3, generator=torch.Generator().manual_seed(2))
    cfg = Generate4DConfig(views=2, frames=3, height=16, width=16, steps=2, guidance=1.0, progress=False)
    a = generate_4d(model, codec, cfg, fixed_view=video)
    assert torch.equal(a.frames[0], video) and torch.equal(a.latents[:, :3], codec.encode(video))
    b = generate_4d(model, codec, cfg, fixed_view=video)
    assert torch.equal(a.frames, b.frames)  # seeded
    emb = torch.randn(4, 16)
    c = generate_4d(model, codec, Generate4DConfig(**{**cfg.__dict__, "guidance": 4.0}), prompt_embeds=emb,
                    fixed_view=video)
    assert not torch.equal(c.frames[1], a.frames[1])
    with pytest.raises(ValueError, match="fixed_view"):
        generate_4d(model, codec, cfg, fixed_view=video[:2])


def test_tiny_training_loss_falls_and_resumes(tmp_path):
    cfg = smoke_config(out=str(tmp_path / "run"), steps=150)
    cfg.progress = False
    losses = train_video(cfg)["losses"]
    assert len(losses) == 150
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    cfg.steps = 155
    resumed = train_video(cfg)
    assert len(resumed["losses"]) == 5  # continued from the step-150 checkpoint
    assert (tmp_path / "run" / "checkpoints" / "step_0000155" / "optimizer.safetensors").exists()
    from fuse4d.core.wan.model_io import load_video_model

    model, vcfg = load_video_model(tmp_path / "run" / "model")
    assert vcfg.patch_embed_conditioning and model.config.in_channels == 12


def test_self_attention_only_training_changes_only_attn1(tmp_path):
    from fuse4d.core.wan.model_io import load_video_model, save_video_model

    base_cfg = smoke_config(steps=1)
    torch.manual_seed(0)
    base = build_wan_transformer(base_cfg.model.wan)
    save_video_model(tmp_path / "base", base, base_cfg.model)
    cfg = smoke_config(out=str(tmp_path / "ft"), steps=3)
    cfg.progress, cfg.train, cfg.init = False, "attn", str(tmp_path / "base" / "model.safetensors")
    train_video(cfg)
    tuned, _ = load_video_model(tmp_path / "ft" / "model")
    a, b = base.state_dict(), tuned.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(".attn1.to_" in k for k in changed)


def test_cli_arguments_build_the_tiny_config():
    from fuse4d.core.cli import train_video as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    cfg = train_cli.config_from_args(parser.parse_args(["--config", "tiny", "--steps", "7", "--train", "lora"]))
    assert cfg.steps == 7 and cfg.train == "lora" and cfg.model.codec == "pixel"
    cfg = train_cli.config_from_args(parser.parse_args(["--config", "wan2.1-t2v-1.3b", "--data", "d"]))
    assert cfg.model.wan == WAN21_T2V_1_3B and cfg.train == "attn"


# ---------------------------------------------------------------- synthetic scene data

def test_scene_grids_are_deterministic_cached_and_augmented(tmp_path):
    from fuse4d.core.wan.data import SceneCache, SceneGrids, augment_grid, scene_config

    cfg = scene_config(2, 2, 16, gaussians_per_object=80, ground_gaussians=100)
    a = SceneCache(cfg, str(tmp_path)).get(3)["images"]
    files = list(tmp_path.rglob("seed_0000003.safetensors"))
    assert len(files) == 1 and a.shape == (2, 2, 16, 16, 3)
    assert torch.equal(SceneCache(cfg, str(tmp_path)).get(3)["images"], a)  # read back from disk
    assert torch.equal(SceneCache(cfg, None).get(3)["images"], a)  # same seed renders the same grid
    assert not torch.equal(SceneCache(cfg, None).get(4)["images"], a)
    assert (a[:, 1] - a[:, 0]).abs().max() > 0.05  # objects move
    assert torch.equal(augment_grid(a, True, False), a.flip(0))
    assert torch.equal(augment_grid(a, False, True), a.flip(0).flip(3))  # mirrored world, arc kept
    grids = SceneGrids(2, 2, 16, scenes=2, seed=1, cache_dir=str(tmp_path), reverse_views=1.0, mirror=0.0)
    grids.cache = SceneCache(cfg, str(tmp_path))
    sample = grids.next()
    assert sample["seed"] in (0, 1) and sample["frames"].shape == (2, 2, 16, 16, 3)


def test_metrics_and_static_baseline():
    from fuse4d.core.wan.evaluate import generated_cells, motion, score_grid, static_grid
    from fuse4d.core.wan.metrics import psnr_frames, ssim_frames

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, 3, generator=g)
    assert torch.all(psnr_frames(x, x) > 99) and torch.allclose(ssim_frames(x, x), torch.ones(2, 3))
    noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(psnr_frames(noisy, x), torch.full((2, 3), 20.4), atol=0.6)
    assert float(ssim_frames(noisy, x).max()) < 0.99
    cells = generated_cells(2, 3, "row+column")
    assert cells.tolist() == [[False, False, False], [False, True, True]]
    assert motion(static_grid(x), cells) == 0.0
    assert score_grid(x, x, cells)["psnr"] > 99


# ---------------------------------------------------------------- architecture baselines in the same model

def test_sequential_and_parallel_baselines_plug_into_the_same_wan(tiny_model, tmp_path):
    from fuse4d.core.attention import time_attention, view_attention
    from fuse4d.core.wan.attention_processor import add_sync_layers
    from fuse4d.core.wan.model_io import load_video_model, save_video_model

    views, frames = 2, 3
    x, t, e = _inputs(views * frames, seed=5)
    wan_keys = set(tiny_model.state_dict())
    outs = {}
    with torch.no_grad():
        for mode in ("fused", "sequential"):
            with fused_wan(tiny_model, views, 4, "merge", mode=mode):
                outs[mode] = tiny_model(x, t, e).sample
    assert (outs["fused"] - outs["sequential"]).abs().max() > 1e-4
    assert set(tiny_model.state_dict()) == wan_keys  # no new weights for sequential

    model = build_wan_transformer(WAN_TINY).eval()
    model.load_state_dict(tiny_model.state_dict())
    new = add_sync_layers(model)
    extra = sum(p.numel() for n, p in model.named_parameters() if n in new)
    assert extra == WAN_TINY.num_layers * (2 * WAN_TINY.dim ** 2 + WAN_TINY.dim)
    # at init the sync layer averages the two streams: compare against an explicit average processor
    q = torch.randn(1, 2, views * frames * 4, 16)
    sync = model.blocks[0].attn1.parallel_sync
    avg = (view_attention(q, q, q, views, frames) + time_attention(q, q, q, views, frames)) / 2
    assert torch.allclose(sync(q, q, q, views, frames), avg, atol=1e-6)
    with torch.no_grad(), fused_wan(model, views, 4, "merge", mode="parallel"):
        par = model(x, t, e).sample
    vcfg = VideoModelConfig(wan=WAN_TINY, t_max=4, attention="parallel")
    save_video_model(tmp_path / "par", model, vcfg)
    loaded, cfg = load_video_model(tmp_path / "par")
    assert cfg.attention == "parallel"
    with torch.no_grad(), fused_wan(loaded, views, 4, "merge", mode="parallel"):
        assert torch.equal(loaded(x, t, e).sample, par)
    with pytest.raises(ValueError, match="attention mode"):
        patch_wan_transformer(tiny_model, 2, 4, mode="diagonal")


def test_ema_and_cosine_schedule_export_and_resume(tmp_path):
    from dataclasses import replace

    from fuse4d.core.wan.model_io import load_video_model
    from fuse4d.core.wan.trainer import lr_factor

    cfg = replace(smoke_config(out=str(tmp_path / "run"), steps=12), ema=0.9, lr_schedule="cosine", warmup=2,
                  save_every=6, progress=False)
    assert lr_factor(cfg, 0) == 0.5 and lr_factor(cfg, 2) == 1.0 and abs(lr_factor(cfg, 12) - cfg.lr_min) < 1e-9
    train_video(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000012"
    assert (ckpt / "ema.safetensors").exists()
    from safetensors.torch import load_file

    ema, last = load_file(ckpt / "ema.safetensors"), load_file(ckpt / "trainable.safetensors")
    exported, _ = load_video_model(tmp_path / "run" / "model")
    sd = exported.state_dict()
    key = "blocks.0.attn1.to_q.weight"
    assert torch.equal(sd[key], ema[key]) and not torch.equal(ema[key], last[key])
    resumed = train_video(replace(cfg, steps=13))
    assert len(resumed["losses"]) == 1


def test_channel_conditioning_and_reference_residual_sampling():
    from fuse4d.core.wan.conditioning import cell_mask, concat_channels, concat_input, reference_term
    from fuse4d.core.wan.flow import to_velocity

    ref = torch.arange(1.0, 7.0).reshape(1, 1, 6, 1, 1)  # 2 views x 3 frames, one channel
    both = cell_mask(2, 3, True, True)
    assert reference_term(ref, both).flatten().tolist() == [1, 2, 3, 4, 0, 0]
    assert reference_term(ref, both, broadcast=True).flatten().tolist() == [1, 2, 3, 4, 4, 4]
    assert reference_term(ref, cell_mask(2, 3, False, True), broadcast=True).flatten().tolist() == [1, 2, 3, 0, 0, 0]
    x = torch.zeros(2, 1, 6, 1, 1)
    inp = concat_input(x, ref, both)
    assert inp.shape == (2, concat_channels(1), 6, 1, 1) and inp[:, 2].flatten().tolist() == [1, 1, 1, 1, 0, 0] * 2
    # reference-residual: a zero output means x0 = the broadcast reference, so Euler lands on it
    x_s, base = torch.randn(1, 1, 6, 1, 1), reference_term(ref, both, broadcast=True)
    v = to_velocity(torch.zeros_like(x_s), x_s, 0.5, base, "reference-residual")
    assert torch.allclose(x_s - 0.5 * v, base)

    wan = WanConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=32, in_dim=concat_channels(12), out_dim=12,
                    text_dim=16, freq_dim=32)
    model = build_wan_transformer(wan).eval()
    with torch.no_grad():
        model.proj_out.weight.zero_()
        model.proj_out.bias.zero_()
    vc = VideoModelConfig(wan=wan, t_max=4, concat_reference=True, prediction="reference-residual",
                          per_token_timestep=True)
    row = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(3))
    out = generate_4d(model, PixelCodec(2), Generate4DConfig(views=2, frames=3, height=16, width=16, steps=3,
                                                             guidance=1.0, progress=False),
                      frozen_time=row, video_config=vc)
    assert torch.equal(out.frames[:, 0], row)
    # an untrained residual model keeps the scene as given: every frame is its view's t = 0 frame
    assert torch.allclose(out.frames, row[:, None].expand_as(out.frames), atol=1.5 / 255)


def test_reference_conditioning_for_hosts_matches_the_sampler():
    """ReferenceConditioning (what the ComfyUI pack feeds): the patch-embedding term added to the input
    gives the model's output with ConditionedPatchEmbedding (linear embedding), channel inputs are
    concat_input's, per-frame timesteps are token_timesteps' per frame; noise masks -> cell masks."""
    from fuse4d.core.wan.conditioning import (ReferenceConditioning, cell_mask, cells_from_noise_mask, concat_input,
                                              install_patch_conditioning, reference_term, replace_clean,
                                              set_reference, token_timesteps)

    gen = torch.Generator().manual_seed(0)
    wan = WanConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=32, in_dim=4, out_dim=4, text_dim=16, freq_dim=32)
    model = build_wan_transformer(wan).eval()
    mask = cell_mask(2, 3, True, True)
    x, ref = torch.randn(2, 4, 6, 4, 4, generator=gen), torch.randn(1, 4, 6, 4, 4, generator=gen)
    text, t = torch.randn(2, 5, 16, generator=gen), torch.tensor([700.0, 700.0])
    cond = ReferenceConditioning(patch_embed=True, per_token_timestep=True)
    with torch.no_grad():
        host = model(cond.model_input(x, ref, mask), cond.timesteps(t, mask).repeat_interleave(4, dim=1), text).sample
        install_patch_conditioning(model)
        set_reference(model, reference_term(ref, mask))
        ours = model(replace_clean(x, ref, mask), token_timesteps(mask, t, 4), text).sample
        set_reference(model, None)
        plain = model(replace_clean(x, ref, mask), token_timesteps(mask, t, 4), text).sample
    assert float((host - ours).abs().max()) < 1e-5 * float(ours.abs().max())
    assert float((plain - ours).abs().max()) > 1e-2 * float(ours.abs().max())  # the term matters
    assert cond.timesteps(t, mask)[0].tolist() == [0, 0, 0, 0, 700, 700]
    assert torch.equal(cond.timesteps(t, torch.zeros_like(mask)), t)
    concat = ReferenceConditioning(concat=True, position=True, view_change=True, grid=True)
    assert concat.in_channels(4) == 2 * 4 + 1 + 2 + 4 + 2
    assert torch.equal(concat.model_input(x, ref, mask), concat_input(replace_clean(x, ref, mask), ref, mask, True,
                                                                     True, True))
    assert ReferenceConditioning.from_dict(concat.to_dict()) == concat
    # ComfyUI-style noise masks (1 = generate, 0 = known), per latent pixel and channel
    noise_mask = torch.ones(2, 4, 6, 4, 4)
    noise_mask[:, :, [0, 1, 2, 3]] = 0
    assert torch.equal(cells_from_noise_mask(noise_mask, 2), mask)
    noise_mask[:, :, 4, 0, 0] = 0.5
    with pytest.raises(ValueError, match="latent frame 4 .view 1. is known only in part"):
        cells_from_noise_mask(noise_mask, 2)
    noise_mask[:, :, 4] = 1
    noise_mask[1, :, 3] = 1
    with pytest.raises(ValueError, match="masks differ"):
        cells_from_noise_mask(noise_mask, 2)
    with pytest.raises(ValueError, match="not a multiple of views=4"):
        cells_from_noise_mask(noise_mask, 4)


def test_reference_warp_moves_the_reference_and_starts_static():
    """"reference-warp": x0 = the broadcast reference sampled along the predicted flow + a residual. A zero
    output is the static copy; a flow of one latent pixel with the pixel codec shifts the unfolded image
    by `fold` pixels; the pyramid loss still sees a displacement that misses at full resolution."""
    import torch.nn.functional as F

    from fuse4d.core.wan.flow import output_channels, predicted_x0, to_velocity, warp
    from fuse4d.core.wan.trainer import weighted_mse

    base = torch.rand(1, 12, 3, 4, 4, generator=torch.Generator().manual_seed(1))   # 3 frames, fold 2
    assert output_channels(12, "reference-warp") == 14 and output_channels(12, "reference-residual") == 12
    zero = torch.zeros(1, 14, 3, 4, 4)
    assert torch.equal(predicted_x0(zero, base, "reference-warp", fold=2), base)
    flow = torch.zeros(1, 2, 3, 4, 4)
    flow[:, 1] = 1.0                                                  # sample one latent pixel further down
    shifted = F.pixel_shuffle(warp(base, flow, fold=2).transpose(1, 2)[0], 2)   # [3 frames, 3, 8, 8]
    image = F.pixel_shuffle(base.transpose(1, 2)[0], 2)
    assert torch.allclose(shifted[:, :, :-2], image[:, :, 2:])        # 2 pixels up, the last rows clamped
    assert torch.allclose(shifted[:, :, -2:], image[:, :, -1:].expand(-1, -1, 2, -1))
    out = torch.cat([torch.full((1, 12, 3, 4, 4), 0.25), flow], 1)
    x_s = torch.randn(1, 12, 3, 4, 4)
    v = to_velocity(out, x_s, 0.5, base, "reference-warp", fold=2)
    assert torch.allclose(x_s - 0.5 * v, warp(base, flow, fold=2) + 0.25, atol=1e-6)
    # a blob displaced by more than its size: the same full-resolution loss at 2 and 6 pixels off,
    # while the pooled levels rank the nearer one better
    truth = torch.zeros(1, 1, 1, 16, 16)
    truth[..., 4:6, 4:6] = 1.0
    near, far = truth.roll(2, -1), truth.roll(6, -1)
    one = torch.ones(1, 1, 1, 1, 1)
    assert weighted_mse(near - truth, one) == weighted_mse(far - truth, one)
    assert weighted_mse(near - truth, one, pyramid=3) < weighted_mse(far - truth, one, pyramid=3)


# ---------------------------------------------------------------- the shipped tiny model

def test_shipped_tiny_model_loads_and_reproduces_its_record():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as recorded; on a shared machine 2 threads can be 10x slower
    try:
        _check_shipped_tiny_model()
    finally:
        torch.set_num_threads(threads)


def _check_shipped_tiny_model():
    import json

    from fuse4d.core.wan.evaluate import evaluate_video_model
    from fuse4d.core.wan.export_tiny import check_config, check_scenes
    from fuse4d.core.wan.tiny import TINY_VIDEO_DIR, animate_frozen_time, load_tiny_video_model

    record = json.loads((TINY_VIDEO_DIR / "record.json").read_text())
    assert (TINY_VIDEO_DIR / "model.safetensors").stat().st_size <= 15 * 2 ** 20
    model, config, codec = load_tiny_video_model()
    # the record predates later config fields; their defaults describe it
    assert config.attention == "fused" and VideoModelConfig.from_dict(record["model_config"]) == config
    # 2 held-out scenes (their ground truth ships beside the weights), 4 sampling steps, frozen-time row
    got = evaluate_video_model(model, config, codec, check_config(config.extra), scenes=check_scenes(TINY_VIDEO_DIR))
    want = record["check"]
    assert abs(got["psnr"] - want["psnr"]) < 0.05 and abs(got["ssim"] - want["ssim"]) < 0.002, (got, want)
    assert got["motion"] > 0.3 * got["true_motion"]  # it animates: generated frames differ over time
    untrained = record["heldout"]["metrics"]["row"]["untrained"]
    assert got["psnr"] > untrained["psnr"] + 5.0 and record["heldout"]["metrics"]["row"]["trained"]["psnr"] > \
        untrained["psnr"] + 5.0
    # the demo's entry point: any-size row in, a grid at the model's size out, the row kept at t = 0
    row = torch.rand(config.extra["views"], 20, 20, 3, generator=torch.Generator().manual_seed(1))
    out = animate_frozen_time(model, config, codec, row, steps=2, progress=False)
    n = config.extra["size"]
    assert out.frames.shape == (config.extra["views"], config.extra["frames"], n, n, 3)
