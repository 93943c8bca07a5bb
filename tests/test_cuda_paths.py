# SPDX-License-Identifier: GPL-3.0-or-later
"""The CUDA paths' choices, checked on the CPU: training precision and devices, dtype-preserving loading,
fp32 RoPE positions, half-precision choice by GPU capability, reconstructor memory and in-place work."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fuse4d.core import precision


def _capability(major):
    return lambda device=None: (major, 0)


@pytest.mark.parametrize("major, want", [(7, torch.float16), (8, torch.bfloat16), (9, torch.bfloat16)])
def test_half_dtype_follows_gpu_capability(monkeypatch, major, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", _capability(major))
    assert precision.half_dtype("cuda") == want
    assert precision.half_dtype("cpu") is None and precision.inference_dtype("cpu") == torch.float32


@pytest.mark.parametrize("major, want", [(7, torch.float16), (8, torch.bfloat16)])
def test_reconstructor_autocasts_by_capability(monkeypatch, major, want):
    from fuse4d.core.recon import VGGT4D, tiny

    monkeypatch.setattr(torch.cuda, "get_device_capability", _capability(major))
    ctx = VGGT4D(tiny())._autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == want


# ----------------------------------------------------------------------------- trainer

def test_local_rank_picks_the_device(monkeypatch):
    from fuse4d.core.wan import trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trainer.training_device("auto", 3) == torch.device("cuda", 3)
    assert trainer.training_device("cuda", 2) == torch.device("cuda", 2)
    assert trainer.training_device("cuda:1", 2) == torch.device("cuda", 1)
    assert trainer.training_device("cpu", 2) == torch.device("cpu")
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg = trainer.TrainVideoConfig(device="cuda")
    assert trainer._init_distributed(cfg)[2] == torch.device("cuda", 5) and chosen == [torch.device("cuda", 5)]


def test_training_precision_choice(monkeypatch):
    from fuse4d.core.wan.trainer import TrainVideoConfig, autocast_dtype

    assert autocast_dtype(TrainVideoConfig(), torch.device("cpu")) is None
    assert autocast_dtype(TrainVideoConfig(precision="bf16"), torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", _capability(8))
    assert autocast_dtype(TrainVideoConfig(), torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", _capability(7))
    assert autocast_dtype(TrainVideoConfig(), torch.device("cuda")) is None  # fp16 training would need loss scaling
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(TrainVideoConfig(precision="fp8"), torch.device("cpu"))


def test_bf16_autocast_and_checkpointing_train_like_fp32(tmp_path, monkeypatch):
    """4 steps of the smoke model: checkpointing alone changes nothing (same fp32 arithmetic, recomputed);
    bf16 autocast + checkpointing gives the fp32 losses to 1% (measured: ~2e-4 relative)."""
    import torch.utils.checkpoint as ckpt

    from fuse4d.core.wan.trainer import smoke_config, train_video

    recomputed = []
    original = ckpt.checkpoint
    monkeypatch.setattr(ckpt, "checkpoint", lambda *a, **k: recomputed.append(1) or original(*a, **k))

    def run(name, **kw):
        cfg = replace(smoke_config(out=str(tmp_path / name), steps=4), progress=False, save_every=100, **kw)
        return train_video(cfg)

    fp32 = run("fp32", precision="fp32")
    assert fp32["precision"] == "fp32" and not fp32["checkpointing"] and not recomputed
    ck = run("ck", precision="fp32", checkpointing=True)
    assert ck["checkpointing"] and len(recomputed) == 4 * 2  # 4 steps x 2 blocks
    torch.testing.assert_close(torch.tensor(ck["losses"]), torch.tensor(fp32["losses"]), rtol=1e-5, atol=0)
    bf16 = run("bf16", precision="bf16", checkpointing=True)
    assert bf16["precision"] == "bf16"
    torch.testing.assert_close(torch.tensor(bf16["losses"]), torch.tensor(fp32["losses"]), rtol=1e-2, atol=0)


def test_fsdp2_mixed_precision_in_a_group_of_one(tmp_path):
    """FSDP2 with the bf16 policy (gloo, world size 1: the code path of a multi-GPU run) trains like
    autocast alone and exports a loadable model."""
    from fuse4d.core.wan.model_io import load_video_model
    from fuse4d.core.wan.trainer import smoke_config, train_video

    def run(name, dist):
        cfg = replace(smoke_config(out=str(tmp_path / name), steps=3), progress=False, precision="bf16",
                      checkpointing=True, dist=dist)
        return train_video(cfg)

    plain = run("plain", "ddp")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        sharded = run("fsdp2", "fsdp2")
    finally:
        torch.distributed.destroy_process_group()
    torch.testing.assert_close(torch.tensor(sharded["losses"]), torch.tensor(plain["losses"]), rtol=1e-2, atol=0)
    model, _ = load_video_model(sharded["model_dir"])
    assert next(model.parameters()).dtype == torch.float32


def test_text_encoder_loads_once_and_each_prompt_encodes_once(monkeypatch):
    from fuse4d.core.wan import pipeline, trainer

    made, encoded = [], []

    class FakeEncoder:
        def __init__(self, path, device="cpu"):
            made.append((path, device))

        def __call__(self, prompt):
            encoded.append(prompt)
            return torch.full((3, 16), float(len(prompt)))

    monkeypatch.setattr(pipeline, "PromptEncoder", FakeEncoder)
    states = trainer._TextStates(trainer.TrainVideoConfig(text_encoder="umt5"), 16, torch.device("cpu"))
    for prompt in ("a cat", "a dog jumps", "a cat", "a dog jumps", "a cat"):
        assert float(states({"prompt": prompt})[0, 0]) == len(prompt)
    assert made == [("umt5", torch.device("cpu"))] and encoded == ["a cat", "a dog jumps"]


# ----------------------------------------------------------------------------- weights in their dtype

def test_mixed_dtype_file_loads_in_its_stored_dtypes(tmp_path):
    from safetensors.torch import save_file

    from fuse4d.core.wan.keys import WAN_TINY, build_wan_transformer, load_wan_transformer, to_original_state_dict

    sd = {k: v.clone() for k, v in build_wan_transformer(WAN_TINY).state_dict().items()}
    first = next(iter(sd))
    for i, k in enumerate(sd):  # the first tensor fp32, the rest alternating bf16 / fp16 / fp32
        sd[k] = sd[k].to((torch.float32, torch.bfloat16, torch.float16)[i % 3] if k != first else torch.float32)
    if hasattr(torch, "float8_e4m3fn"):
        fp8 = next(k for k in sd if k.endswith("ffn.net.0.proj.weight"))
        sd[fp8] = sd[fp8].to(torch.float8_e4m3fn)
    path = tmp_path / "mixed.safetensors"
    save_file(to_original_state_dict(sd), str(path))
    model = load_wan_transformer(path, WAN_TINY)
    got = model.state_dict()
    for k, v in sd.items():
        want = torch.bfloat16 if v.dtype == getattr(torch, "float8_e4m3fn", None) else v.dtype
        assert got[k].dtype == want, k
        torch.testing.assert_close(got[k].float(), v.float())
    assert load_wan_transformer(path, WAN_TINY, dtype=torch.float32).proj_out.weight.dtype == torch.float32


def test_video_model_samples_in_half_precision_on_cuda(tmp_path, monkeypatch):
    from fuse4d.core.wan import model_io
    from fuse4d.core.wan.keys import WAN_TINY, build_wan_transformer

    folder = tmp_path / "m"
    model_io.save_video_model(folder, build_wan_transformer(WAN_TINY), model_io.VideoModelConfig(wan=WAN_TINY))
    assert next(model_io.load_video_model(folder)[0].parameters()).dtype == torch.float32  # CPU: as stored
    monkeypatch.setattr(precision, "half_dtype", lambda device: torch.bfloat16)  # what a CUDA device gets
    assert next(model_io.load_video_model(folder)[0].parameters()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- RoPE positions

def test_bf16_would_collapse_fused_positions():
    from fuse4d.core.attention import fused_positions

    t = fused_positions(4, 84, 1, 1, 84)[:, 0]
    assert t.float().unique().numel() == 336 and t.to(torch.bfloat16).unique().numel() < 300


def test_diffusers_rope_exact_at_4_views_tmax_84_in_a_bf16_model():
    """The fused rotary tables of a model cast to bf16 equal the fp32 tables at the exact positions."""
    from fuse4d.core.attention import fused_positions
    from fuse4d.core.wan.attention_processor import patch_wan_transformer
    from fuse4d.core.wan.keys import WAN_TINY, build_wan_transformer

    model = build_wan_transformer(WAN_TINY)
    base = model.rope
    ref_cos, ref_sin = base.freqs_cos.clone(), base.freqs_sin.clone()
    model = model.to(torch.bfloat16)
    assert model.rope.freqs_cos.dtype == torch.bfloat16  # what .to() does to the base tables
    patch_wan_transformer(model, views=4, t_max=84)
    x = torch.zeros(1, WAN_TINY.in_dim, 4 * 84, 2, 2, dtype=torch.bfloat16)
    cos, sin = model.rope(x)
    assert cos.dtype == torch.float32
    pos = fused_positions(4, 84, 1, 1, 84)
    sizes = [base.t_dim, base.h_dim, base.w_dim]
    want = torch.cat([ref_cos.split(sizes, dim=1)[i][pos[:, i]] for i in range(3)], dim=-1)
    assert torch.equal(cos[0, :, 0], want)
    assert torch.equal(sin[0, :, 0, :sizes[0]], ref_sin[:336, :sizes[0]])


# ----------------------------------------------------------------------------- reconstructor

def test_camera_token_replacement_in_place_equals_copy():
    from fuse4d.core.recon import replace_camera_tokens

    x = torch.randn(2, 3, 4, 5, 6)
    want = torch.cat([x[:, :1, :, :1].expand(-1, 3, -1, -1, -1), x[:, :, :, 1:]], dim=3)
    ptr = x.data_ptr()
    got = replace_camera_tokens(x)
    assert torch.equal(got, want) and got.data_ptr() == ptr  # no copy of the layer
    g = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    out = replace_camera_tokens(g)
    out.sum().backward()
    assert g.grad[:, 1:, :, 0].abs().sum() == 0 and float(g.grad[:, 0, :, 0].mean()) == 3.0


def test_rope2d_with_known_bound_equals_reading_it(monkeypatch):
    from fuse4d.core.recon.layers import Rope2D

    x = torch.randn(2, 3, 10, 16)
    pos = torch.randint(0, 6, (2, 10, 2))
    want = Rope2D()(x, pos)
    rope = Rope2D()
    rope.positions = 9  # any bound above the largest position
    monkeypatch.setattr(torch.Tensor, "max", lambda *a, **k: pytest.fail("reads the positions back"))
    assert torch.equal(rope(x, pos), want)


def test_dpt_uv_embedding_is_vggts():
    from fuse4d.core.recon.dpt import uv_embedding

    h, w, c, aspect = 5, 7, 16, 7 / 5
    emb = uv_embedding(h, w, c, aspect, torch.float32, "cpu")
    diag = (aspect ** 2 + 1) ** 0.5
    xs = torch.linspace(-aspect / diag * (w - 1) / w, aspect / diag * (w - 1) / w, w)
    ys = torch.linspace(-1 / diag * (h - 1) / h, 1 / diag * (h - 1) / h, h)
    u, v = torch.meshgrid(xs, ys, indexing="xy")
    omega = 1.0 / 100.0 ** (torch.arange(c // 4, dtype=torch.float64) / (c // 4))

    def sincos(t):
        a = t.reshape(-1, 1).double() * omega
        return torch.cat([a.sin(), a.cos()], 1).float()

    want = torch.cat([sincos(u), sincos(v)], -1).view(h, w, c).permute(2, 0, 1)
    assert torch.equal(emb, want)


def test_reconstructor_memory_estimate_scales_with_the_grid():
    from fuse4d.core.recon import VGGT4D, full, inference_memory

    with torch.device("meta"):
        model = VGGT4D(full())
    small = inference_memory(model, 4, 1, 518, 518)
    big = inference_memory(model, 16, 16, 518, 518)
    assert 1e9 < small < 8e9 and 20e9 < big < 200e9  # 16 views x 16 timesteps at 518^2: tens of GB
    assert inference_memory(model, 16, 8, 518, 518) < big
