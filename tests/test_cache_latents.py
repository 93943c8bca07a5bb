# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d cache-latents`: a frames dataset encoded once (tiny random diffusers AutoencoderKLWan and a
tiny UMT5 with an in-memory tokenizer), sharded over two ranks as under torchrun, resumable, and read
by `train-video` without a VAE."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from diffusers import AutoencoderKLWan
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    root = tmp_path_factory.mktemp("cache_models")
    torch.manual_seed(3)
    AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                     temperal_downsample=[False, True, True], latents_mean=[0.1] * 4,
                     latents_std=[0.5] * 4).save_pretrained(root / "vae")
    words = ["<pad>", "</s>", "<unk>", "a", "red", "cone", "tube", "spinning", "bending"]
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(root / "text")
    UMT5EncoderModel(UMT5Config(vocab_size=len(words), d_model=16, num_layers=1, num_heads=2, d_kv=8,
                                d_ff=32)).save_pretrained(root / "text")
    return root


@pytest.fixture(scope="module")
def frames_dataset(tmp_path_factory):
    from fuse4d.core.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("frames")
    generate_dataset(root, 3, SyntheticConfig(views=2, frames=5, heldout_views=1, width=16, height=16))
    for i, folder in enumerate(sorted(root.iterdir())):
        (folder / "prompt.txt").write_text(["a red cone", "a tube bending", ""][i])
    return root


def test_sharded_cache_matches_the_vae_and_trains(models, frames_dataset, tmp_path, monkeypatch):
    from diffusers import AutoencoderKLWan

    from fuse4d.core.wan.cache_latents import cache_latents
    from fuse4d.core.wan.codecs import WanVAECodec
    from fuse4d.core.wan.data import FolderDataset, read_sample

    out = tmp_path / "cache"
    for rank in (0, 1):  # two torchrun ranks, each its own share
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        r = cache_latents(frames_dataset, out, str(models / "vae"), str(models / "text"), progress=False)
        assert r["samples"] == (2 if rank == 0 else 1) and r["written"] == r["samples"]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    again = cache_latents(frames_dataset, out, str(models / "vae"), None, progress=False)
    assert again["written"] == 0 and again["done_before"] == 3  # resumable: nothing redone
    codec = WanVAECodec(AutoencoderKLWan.from_pretrained(models / "vae").eval())
    first = sorted(frames_dataset.iterdir())[0]
    cached = read_sample(str(out / first.name))
    grid = read_sample(str(first))["frames"]
    expect = torch.cat([codec.encode(grid[v]) for v in range(2)], dim=1)
    assert cached["views"] == 2 and cached["latents"].shape == (4, 2 * 2, 2, 2)
    assert torch.allclose(cached["latents"], expect, atol=1e-5)
    assert cached["prompt"] == "a red cone" and cached["text_embeds"].shape == (512, 16)
    assert float(cached["text_embeds"][3:].abs().max()) == 0 and float(cached["text_embeds"][:3].abs().max()) > 0
    assert json.loads((out / first.name / "cameras.json").read_text())["frames"] == 5
    assert len(FolderDataset(str(out)).samples) == 3

    # train-video on the cache alone: no --vae needed (Wan codec, latents precomputed)
    from fuse4d.core.wan.keys import WanConfig
    from fuse4d.core.wan.model_io import VideoModelConfig
    from fuse4d.core.wan.trainer import TrainVideoConfig, train_video

    wan = WanConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=64, in_dim=4, out_dim=4, text_dim=16, freq_dim=32)
    cfg = TrainVideoConfig(out=str(tmp_path / "run"), model=VideoModelConfig(wan=wan, t_max=4, codec="wan-vae"),
                           data=str(out), views=2, frames=5, steps=2, warmup=0, save_every=2, threads=1,
                           progress=False, device="cpu")
    result = train_video(cfg)
    assert len(result["losses"]) == 2 and all(torch.isfinite(torch.tensor(result["losses"])))


def test_cache_under_a_real_torchrun_equals_one_process(models, frames_dataset, tmp_path):
    """Two real ranks (torchrun, separate processes, one output folder) write exactly the cache one
    process writes: each sample once, bit-identical."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from fuse4d.core.wan.cache_latents import cache_latents

    single = tmp_path / "single"
    cache_latents(frames_dataset, single, str(models / "vae"), str(models / "text"), progress=False)
    shared = tmp_path / "torchrun"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "fuse4d", "cache-latents", str(frames_dataset), "--out", str(shared),
                           "--vae", str(models / "vae"), "--text-encoder", str(models / "text"), "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "rank 0/2: 2 samples encoded" in done.stdout and "rank 1/2: 1 samples encoded" in done.stdout
    names = sorted(p.name for p in single.iterdir())
    assert sorted(p.name for p in shared.iterdir()) == names and len(names) == 3
    for name in names:
        for part in ("latents.safetensors", "text_embeds.safetensors"):
            a, b = load_file(single / name / part), load_file(shared / name / part)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
