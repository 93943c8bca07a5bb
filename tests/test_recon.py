# SPDX-License-Identifier: GPL-3.0-or-later
"""The VGGT-compatible 4D reconstructor: equivalence with the official VGGT (golden fixtures made by
the official code, docs/reconstruction.md), checkpoint loading, the paper's additions, the CLI."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fuse4d.core.recon import VGGT4D, WeightsError, convert, load_vggt_weights, parameter_group, tiny
from fuse4d.core.recon.gaussian_head import pixel_gaussians

FIXTURES = Path(__file__).parent / "fixtures" / "vggt_tiny"
WEIGHTS = FIXTURES / "weights.safetensors"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def model(**overrides) -> VGGT4D:
    m = VGGT4D(tiny(**overrides)).eval()
    load_vggt_weights(m, WEIGHTS)
    return m


@pytest.fixture(scope="module")
def fixtures():
    return load_file(str(FIXTURES / "inputs.safetensors")), load_file(str(FIXTURES / "outputs.safetensors"))


@pytest.mark.parametrize("tag", ["a", "b"])  # a: 42x56 (position table resampled), b: 56x56 (table as is)
def test_matches_official_vggt_golden_outputs(fixtures, tag):
    inputs, ref = fixtures
    m = model(enable_gaussian=False, temporal_attention=False)
    with torch.no_grad():
        out = m.forward_vggt(inputs[f"images_{tag}"])
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        expected = ref[f"{tag}.{key}"]
        assert out[key].shape == expected.shape, key
        assert expected.std() > 0
        assert rel_err(out[key], expected) <= 1e-4, key


def test_loading_reports_unused_and_added_keys(tmp_path):
    state = load_file(str(WEIGHTS))
    state["track_head.tracker.updateformer.time_blocks.0.attn.in_proj_weight"] = torch.zeros(3, 2)
    state["track_head.feature_extractor.norm.weight"] = torch.ones(2)
    path = tmp_path / "with_track.safetensors"
    save_file(state, str(path))
    m = VGGT4D(tiny())   # with temporal layers and a Gaussian head, which VGGT has not
    report = load_vggt_weights(m, path)
    assert report.unused == sorted(k for k in state if k.startswith("track_head."))
    assert any(k.startswith("aggregator.temporal_blocks.") for k in report.added_kept_init)
    assert any(k.startswith("gaussian_head.") for k in report.added_kept_init)
    assert torch.equal(m.aggregator.camera_token.detach(), state["aggregator.camera_token"].float())


def test_wrong_file_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    state = load_file(str(WEIGHTS))
    del state["depth_head.norm.weight"]
    state["decoder.bogus.weight"] = torch.zeros(1)
    state["camera_head.embed_pose.weight"] = torch.zeros(5, 9)
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError) as info:
        load_vggt_weights(VGGT4D(tiny()), path)
    text = str(info.value)
    assert "wrong.safetensors" in text
    assert "missing 1: depth_head.norm.weight" in text
    assert "unexpected 1: decoder.bogus.weight" in text
    assert "camera_head.embed_pose.weight file (5, 9) vs model (64, 9)" in text


def test_pickled_checkpoint_is_converted_once(tmp_path):
    state = {k: v.float() for k, v in load_file(str(WEIGHTS)).items()}
    pt = tmp_path / "model.pt"
    torch.save(state, pt)
    with pytest.raises(WeightsError, match="convert"):
        load_vggt_weights(VGGT4D(tiny()), pt)
    st = convert(pt, tmp_path / "model.safetensors")
    m = VGGT4D(tiny(enable_gaussian=False, temporal_attention=False))
    assert load_vggt_weights(m, st).loaded == len(state)


def _grid(V=3, T=2, H=42, W=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, V, T, 3, H, W, generator=g)


def test_zero_initialised_temporal_layers_reproduce_vggt_per_timestep():
    images = _grid()
    torch.manual_seed(0)   # the temporal layers are not in the file: their (non-LayerScale) init is random
    plain = model(enable_gaussian=False, temporal_attention=False)
    ours = model(temporal_attention=True, camera_token_replacement=False)
    with torch.no_grad():
        out = ours(images)
        for t in range(images.shape[2]):
            ref = plain.forward_vggt(images[:, :, t])
            for key in ("pose_enc", "depth", "depth_conf", "world_points"):
                assert rel_err(out[key][:, :, t], ref[key]) <= 1e-5, (key, t)
        # the equality is not vacuous: trained (non-zero) temporal layers mix time
        for block in ours.aggregator.temporal_blocks:
            block.ls1.gamma.fill_(0.5)
            block.ls2.gamma.fill_(0.5)
        changed = ours(images)
    assert rel_err(changed["pose_enc"], out["pose_enc"]) > 1e-2
    assert rel_err(changed["depth"], out["depth"]) > 1e-4


def test_camera_token_replacement_makes_cameras_static():
    images = _grid(V=2, T=3)
    torch.manual_seed(0)
    m = model(temporal_attention=True, camera_token_replacement=True)
    with torch.no_grad():
        for block in m.aggregator.temporal_blocks:
            block.ls1.gamma.fill_(0.3)
            block.ls2.gamma.fill_(0.3)
        on = m(images, heads=("camera",))["pose_enc"]
        m.cfg.camera_token_replacement = False
        off = m(images, heads=("camera",))["pose_enc"]
    for t in range(1, 3):
        assert torch.equal(on[:, :, t], on[:, :, 0])
    assert (off[:, :, 1] - off[:, :, 0]).abs().max() > 1e-4


def test_gaussians_per_timestep_shapes_and_analytic_mode():
    images = _grid(V=2, T=2)
    m = model()
    with torch.no_grad():
        out = m(images)
        head = m.gaussians(images, out)[0]
        analytic = m.gaussians(images, out, analytic=True)[0]
    assert out["gaussian_raw"].shape == (1, 2, 2, 42, 56, 14)
    assert len(head) == 2
    for g in head:
        assert g.means.shape == (2 * 42 * 56, 3) and g.sh.shape == (2 * 42 * 56, 1, 3)
        for field in (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh):
            assert torch.isfinite(field).all()
    # an untrained (zero-initialised) head gives exactly the analytic Gaussians
    assert torch.equal(head[0].means, analytic[0].means)
    torch.testing.assert_close(head[0].colors_dc, images[0, :, 0].permute(0, 2, 3, 1).reshape(-1, 3))
    cams = m.cameras(out, 56, 42)[0]
    assert len(cams) == 2 and len(cams[0]) == 2


def test_pixel_gaussians_project_back_to_their_pixels():
    from fuse4d.core.cameras import from_vggt_pose_encoding

    H, W = 6, 8
    enc = torch.tensor([[0.3, -0.2, 0.5, 0.1, 0.2, -0.1, 0.97, 0.9, 1.1]])
    depth = 1.0 + torch.rand(1, H, W)
    g = pixel_gaussians(torch.rand(1, H, W, 3), depth, enc)
    cam = from_vggt_pose_encoding(torch.cat([enc[:, :3], torch.nn.functional.normalize(enc[:, 3:7], dim=-1),
                                             enc[:, 7:]], -1), W, H)
    x = g.means @ cam.viewmats[0, :3, :3].T + cam.viewmats[0, :3, 3]
    uv = (x @ cam.Ks[0].T)[:, :2] / x[:, 2:]
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2).float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(x[:, 2], depth.reshape(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(g.scales[:, 0], depth.reshape(-1) * 2 / (cam.Ks[0, 0, 0] + cam.Ks[0, 1, 1]))


def test_parameter_groups():
    names = dict(VGGT4D(tiny()).named_parameters())
    groups = {parameter_group(n) for n in names}
    assert groups == {"backbone", "head", "temporal"}
    assert parameter_group("aggregator.temporal_blocks.0.attn.qkv.weight") == "temporal"
    assert parameter_group("gaussian_head.projects.0.weight") == "head"
    assert parameter_group("depth_head.projects.0.weight") == "backbone"


def _write_grid(folder: Path, V: int, T: int):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for v in range(V):
        for t in range(T):
            Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(folder / f"v{v:02d}_t{t:03d}.png")


def _cli_args(*argv):
    from fuse4d.core.cli import reconstruct as cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return cli, p.parse_args(list(argv))


def test_reconstruct_cli_writes_a_sequence(tmp_path):
    from fuse4d.core.io import read_sequence

    _write_grid(tmp_path / "frames", V=2, T=3)
    cli, args = _cli_args(str(tmp_path / "frames"), "--views", "2", "--out", str(tmp_path / "seq"),
                          "--config", "tiny", "--weights", str(WEIGHTS), "--width", "56")
    assert cli.run(args) == 0
    seq = read_sequence(tmp_path / "seq")
    assert len(seq.frames) == 3 and seq.views == 2 and len(seq.cameras) == 2
    assert len(seq.frames[0]) == 2 * 42 * 56           # 40x30 resized to width 56, height 42
    assert np.isfinite(seq.frames[2].means).all()
    assert seq.extra["mode"] == "analytic"             # VGGT weights have no Gaussian head


def test_reconstruct_cli_rejects_bad_input(tmp_path):
    _write_grid(tmp_path / "frames", V=2, T=2)
    cli, args = _cli_args(str(tmp_path / "frames"), "--views", "2", "--out", str(tmp_path / "seq"), "--config", "tiny")
    with pytest.raises(ValueError, match="--weights"):
        cli.run(args)
    cli, args = _cli_args(str(tmp_path / "frames"), "--views", "3", "--out", str(tmp_path / "seq"),
                          "--config", "tiny", "--random-init")
    with pytest.raises(ValueError, match="found 2 views"):
        cli.run(args)
    (tmp_path / "frames" / "v01_t001.png").unlink()
    cli, args = _cli_args(str(tmp_path / "frames"), "--views", "2", "--out", str(tmp_path / "seq"),
                          "--config", "tiny", "--random-init")
    with pytest.raises(ValueError, match="v01_t001"):
        cli.run(args)
    assert not (tmp_path / "seq").exists()


# --- trainer -----------------------------------------------------------------------------------

def _changed(a: dict, b: dict, group: str) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if parameter_group(k) == group)


def test_trainer_builds_vggt4d_with_the_ablation_switches():
    from fuse4d.core.recon.model_api import parameter_groups
    from fuse4d.core.recon.train import build_model, preset

    m = build_model(preset("smoke", temporal_attention=False, camera_token_replacement=False))
    assert isinstance(m, VGGT4D) and m.aggregator.temporal_blocks is None
    assert not m.cfg.camera_token_replacement
    groups = parameter_groups(build_model(preset("smoke")))
    assert {n.split(".")[0] for n, _ in groups["head"]} == {"gaussian_head"}
    assert all(n.startswith("aggregator.temporal_blocks.") for n, _ in groups["temporal"]) and groups["temporal"]
    # from scratch the camera head starts at identity pose and the prior FoV, the depth at the prior depth
    out = m(_grid(V=2, T=1, H=28, W=28), heads=("camera", "depth"))
    torch.testing.assert_close(out["pose_enc"][..., 6], torch.ones_like(out["pose_enc"][..., 6]), atol=0.05, rtol=0)
    torch.testing.assert_close(out["depth"].mean(), torch.tensor(3.2), atol=0.2, rtol=0)


def test_trainer_stages_resume_and_export(tmp_path):
    import json

    from safetensors import safe_open

    from fuse4d.core.recon import load_reconstructor
    from fuse4d.core.recon.train import build_model, preset, train
    from fuse4d.core.recon.train_report import export_trained

    cfg = preset("smoke", static_steps=2, dynamic_steps=2, ckpt_every=2, out=str(tmp_path / "run"))
    initial = build_model(cfg).state_dict()
    first = train(cfg, progress=False, max_steps=2)
    assert isinstance(first["model"], VGGT4D) and first["step"] == 2 and len(first["losses"]) == 2
    static = {k: v.clone() for k, v in first["model"].state_dict().items()}
    # static stage (tiny model: no pretrained backbone): backbone + head train, temporal layers wait
    assert _changed(static, initial, "backbone") and _changed(static, initial, "head")
    assert not _changed(static, initial, "temporal")
    second = train(cfg, progress=False)   # a new process would do the same: resume from ckpt_0000002
    assert second["step"] == 4 and second["losses"][:2] == first["losses"] and len(second["losses"]) == 4
    final = second["model"].state_dict()
    # dynamic stage: temporal layers + Gaussian head train, the backbone is frozen
    assert not _changed(final, static, "backbone")
    assert _changed(final, static, "temporal") and _changed(final, static, "head")

    record = export_trained(second["model"], cfg, tmp_path / "w.safetensors", second, scenes=1)
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["config"])["architecture"] == "VGGT4D"
    on_disk = json.loads((tmp_path / "w.json").read_text())
    assert on_disk["steps"] == 4 and on_disk["train_seconds"] > 0 and len(on_disk["loss"]["curve"]) == 4
    scores = on_disk["scores"]
    for key in ("trained", "trained_analytic", "untrained"):
        assert 0 < scores[key]["psnr_heldout"] < 60
    assert scores["trained"]["psnr_heldout"] != scores["untrained"]["psnr_heldout"]
    assert record["scores"] == scores
    loaded = load_reconstructor(tmp_path / "w.safetensors")
    assert not loaded.training
    assert all(torch.equal(v, final[k]) for k, v in loaded.state_dict().items())


# --- public API (ComfyUI nodes, demo) ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from fuse4d.core.recon import write_tiny_reconstructor

    return write_tiny_reconstructor(tmp_path_factory.mktemp("tiny") / "tiny.safetensors", seed=3)


def test_write_and_load_tiny_reconstructor(tiny_checkpoint, tmp_path):
    from fuse4d.core.recon import load_reconstructor, write_tiny_reconstructor

    m = load_reconstructor(tiny_checkpoint)
    assert isinstance(m, VGGT4D) and not m.training and m.cfg == tiny()
    assert m.gaussian_head is not None and m.aggregator.temporal_blocks is not None
    again = load_reconstructor(write_tiny_reconstructor(tmp_path / "again.safetensors", seed=3))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in m.state_dict().items())   # seeded


def test_load_reconstructor_rejects_other_files(tmp_path):
    from fuse4d.core.recon import load_reconstructor

    with pytest.raises(WeightsError, match="neither a Fuse4D reconstructor checkpoint"):
        load_reconstructor(WEIGHTS)            # a VGGT-format file, but not VGGT-1B and without a config
    save_file({"decoder.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="neither"):
        load_reconstructor(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_reconstructor(tmp_path / "junk.safetensors")
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(WeightsError, match="convert"):
        load_reconstructor(tmp_path / "model.pt")
    with pytest.raises(WeightsError, match="not found"):
        load_reconstructor(tmp_path / "absent.safetensors")
    # a Fuse4D checkpoint that lost tensors: the stored config no longer fits
    import json

    from fuse4d.core.recon.model_api import FORMAT, model_config

    state = load_file(str(WEIGHTS))
    save_file(state, str(tmp_path / "partial.safetensors"),
              metadata={"format": FORMAT, "config": json.dumps(model_config(VGGT4D(tiny())))})
    with pytest.raises(WeightsError, match=r"does not fit this model\n  missing \d+: aggregator\.temporal_blocks"):
        load_reconstructor(tmp_path / "partial.safetensors")


def test_vggt_1b_files_are_recognised_by_their_shapes(tmp_path):
    from fuse4d.core.recon import full
    from fuse4d.core.recon.checkpoint import VGGT_1B_SHAPES, file_config

    path = tmp_path / "model.safetensors"   # the header is all that is read: the shapes of a few keys
    save_file({k: torch.zeros(v, dtype=torch.float16) for k, v in VGGT_1B_SHAPES.items()}, str(path),
              metadata={"format": "pt"})
    cfg = file_config(path)
    assert cfg == full(enable_gaussian=False, temporal_attention=False)   # plain VGGT: analytic Gaussians


def test_reconstruct_grid_any_size_per_timestep(tiny_checkpoint):
    from fuse4d.core.recon import load_reconstructor, reconstruct_grid

    m = load_reconstructor(tiny_checkpoint)
    with torch.no_grad():   # a head that is not zero, so head and analytic modes differ
        m.gaussian_head.scratch.output_conv2[2].bias[3] = -1.0
    images = torch.rand(2, 3, 3, 30, 40, generator=torch.Generator().manual_seed(1))
    ticks = []
    frames, cams = reconstruct_grid(m, images, progress=lambda: ticks.append(1))
    assert len(ticks) == 3 and len(frames) == 3
    assert (cams.width, cams.height, len(cams)) == (56, 42, 2)   # width = img_size, height a patch multiple
    assert all(len(g) == 2 * 42 * 56 for g in frames)
    # per-timestep heads give what one pass over the whole grid gives
    from fuse4d.core.recon.frames import fit_to_patch

    x = fit_to_patch(images, 56, 14)[None]
    with torch.no_grad():
        whole = m.gaussians(x, m(x))[0]
    for g, ref in zip(frames, whole):
        torch.testing.assert_close(g.means, ref.means, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g.opacity_logits, ref.opacity_logits, atol=1e-5, rtol=1e-5)
    analytic, _ = reconstruct_grid(m, images, analytic=True)
    assert not torch.allclose(analytic[0].opacity_logits, frames[0].opacity_logits)
    torch.testing.assert_close(analytic[0].opacity_logits, torch.full_like(analytic[0].opacity_logits, 2.0))
    with pytest.raises(ValueError, match=r"\[V, T, 3, H, W\]"):
        reconstruct_grid(m, images[0])


def test_reconstruct_grid_without_a_head_is_analytic():
    from fuse4d.core.recon import reconstruct_grid

    m = model(enable_gaussian=False, temporal_attention=False).eval()
    frames, cams = reconstruct_grid(m, _grid(V=2, T=2, H=28, W=28)[0])
    assert len(frames) == 2 and cams.width == 56 and cams.height == 56   # resized to img_size
    torch.testing.assert_close(frames[1].opacity_logits, torch.full_like(frames[1].opacity_logits, 2.0))


def test_reconstruct_cli_reads_the_config_from_our_checkpoint(tmp_path, tiny_checkpoint):
    from fuse4d.core.io import read_sequence

    _write_grid(tmp_path / "frames", V=2, T=2)
    cli, args = _cli_args(str(tmp_path / "frames"), "--views", "2", "--out", str(tmp_path / "seq"),
                          "--weights", str(tiny_checkpoint))
    assert cli.run(args) == 0
    seq = read_sequence(tmp_path / "seq")
    assert seq.extra["mode"] == "gaussian_head" and seq.extra["model"] == "tiny"
    assert len(seq.frames) == 2 and len(seq.frames[0]) == 2 * 42 * 56
    # a VGGT-format file without a config needs --config (or VGGT-1B's shapes)
    cli, args = _cli_args(str(tmp_path / "frames"), "--views", "2", "--out", str(tmp_path / "seq2"),
                          "--weights", str(WEIGHTS))
    with pytest.raises(WeightsError, match="neither"):
        cli.run(args)


def test_synthetic_scenes_cached_on_disk_are_the_same(tmp_path):
    from fuse4d.core.recon.train import preset
    from fuse4d.core.recon.train_data import SyntheticSource

    synth = preset("smoke").synth
    made = SyntheticSource(synth, cache_dir=tmp_path, depth=True).get(5)
    assert len(list(tmp_path.glob("synth_*_00000005.safetensors"))) == 1
    again = SyntheticSource(synth, cache_dir=tmp_path, depth=True).get(5)   # read back, not made
    for a, b in ((made.images, again.images), (made.heldout_images, again.heldout_images), (made.depth, again.depth)):
        assert torch.equal(a, b)
    assert made.depth.shape == made.images.shape[:4] and (made.depth > 0).any()
    torch.testing.assert_close(again.cameras.viewmats[0], torch.eye(4))   # first-camera frame


def test_dynamic_stage_can_train_the_backbone_of_a_model_from_scratch():
    from fuse4d.core.recon.train import build_model, preset, trainable_parameters

    m = build_model(preset("smoke"))
    head_only = {id(p) for p in trainable_parameters(m, "dynamic", "all", "head")}
    everything = {id(p) for p in trainable_parameters(m, "dynamic", "all", "all")}
    backbone = {id(p) for n, p in m.named_parameters() if parameter_group(n) == "backbone"}
    assert not head_only & backbone and backbone <= everything
    with pytest.raises(ValueError, match="'head' or 'all'"):
        trainable_parameters(m, "dynamic", "all", "temporal")


def test_fit_to_patch_resizes_like_vggt_crop():
    from fuse4d.core.recon.frames import fit_to_patch

    assert fit_to_patch(torch.rand(2, 3, 288, 512), 518, 14).shape == (2, 3, 294, 518)
    tall = fit_to_patch(torch.rand(3, 600, 300), 56, 14)          # portrait: centre-cropped square
    assert tall.shape == (3, 56, 56) and 0 <= float(tall.min()) and float(tall.max()) <= 1
    same = torch.rand(1, 1, 3, 42, 56)
    assert fit_to_patch(same, 56, 14) is same


SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "recon_tiny.safetensors"


@pytest.mark.skipif(not SHIPPED.exists(), reason="weights/recon_tiny.safetensors not trained yet")
def test_shipped_tiny_reconstructor_beats_the_untrained_model_on_a_held_out_scene():
    import dataclasses
    import json

    from fuse4d.core.recon import load_reconstructor
    from fuse4d.core.recon.train import build_model, evaluate, preset
    from fuse4d.core.recon.train_data import EVAL_SEED_BASE, SyntheticSource

    assert SHIPPED.stat().st_size <= 10 * 2 ** 20
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert record["scores"]["trained"]["psnr_heldout"] > record["scores"]["untrained"]["psnr_heldout"] + 2
    m = load_reconstructor(SHIPPED)
    cfg = preset("tiny")
    synth = dataclasses.replace(cfg.synth, frames=2)   # a 2-timestep clip: half the scene-making time
    seed = EVAL_SEED_BASE + 7          # a held-out scene the record did not score either
    kwargs = dict(synth=synth, scenes=1, seed_base=seed, source=SyntheticSource(synth, cache_size=1))
    trained = evaluate(m, **kwargs)["psnr_heldout"]
    untrained = evaluate(build_model(cfg), **kwargs)["psnr_heldout"]
    assert trained > untrained + 1.5, (trained, untrained)


# --- out of memory in the heads ----------------------------------------------------------------

def _cuda_oom():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _cpu_oom():
    torch.empty(2 ** 50, dtype=torch.uint8)  # 1 PiB, beyond any address space: the CPU allocator's own error


def _heads_fail_above(monkeypatch, limit: int, fail, seen: list[int]):
    """Every dense-head chunk of more than `limit` frames runs out of memory (`fail` raises)."""
    from fuse4d.core.recon.dpt import DPTHead

    real = DPTHead._chunk

    def chunk(self, feats, H, W):
        seen.append(feats[0].shape[0])
        if feats[0].shape[0] > limit:
            fail()
        return real(self, feats, H, W)

    monkeypatch.setattr(DPTHead, "_chunk", chunk)


@pytest.mark.parametrize("fail", [_cuda_oom, _cpu_oom], ids=["cuda-error", "cpu-allocator"])
def test_out_of_memory_in_the_heads_retries_with_smaller_chunks_and_same_result(
        tiny_checkpoint, monkeypatch, caplog, fail):
    import logging

    from fuse4d.core.recon import load_reconstructor, reconstruct_grid

    m = load_reconstructor(tiny_checkpoint)
    assert m.cfg.dpt_frames_chunk >= 4
    images = _grid(V=4, T=2, H=28, W=42, seed=5)[0]
    ref_frames, ref_cams = reconstruct_grid(m, images)
    seen: list[int] = []
    _heads_fail_above(monkeypatch, 1, fail, seen)
    with caplog.at_level(logging.WARNING, logger="fuse4d.core.recon.oom"):
        frames, cams = reconstruct_grid(m, images)
    retries = [r.getMessage() for r in caplog.records if r.name == "fuse4d.core.recon.oom"]
    assert len(retries) == 2 and "2 frame(s) per chunk" in retries[0] and "1 frame(s) per chunk" in retries[1]
    assert seen[:2] == [4, 2] and set(seen[2:]) == {1}   # 4 -> 2 -> 1, then the next timestep starts at 1
    for got, ref in zip(frames, ref_frames):
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cams.viewmats, ref_cams.viewmats)


def test_out_of_memory_at_one_frame_per_chunk_is_one_clear_error_and_writes_nothing(
        tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from fuse4d.core.cli import main

    _write_grid(tmp_path / "frames", V=2, T=2)
    seen: list[int] = []
    _heads_fail_above(monkeypatch, 0, _cuda_oom, seen)
    out = tmp_path / "seq"
    assert main(["reconstruct", str(tmp_path / "frames"), "--views", "2", "--out", str(out),
                 "--weights", str(tiny_checkpoint)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]   # not the progress bar
    assert len(errors) == 1 and "--width" in errors[0]
    assert errors[0].startswith("fuse4d reconstruct: error: out of memory even with 1 frame per chunk at 56x42")
    assert seen == [2, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]   # no output, no temporary left
    # other errors are not taken for out of memory
    from fuse4d.core.recon.oom import run_with_oom_retry

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_oom_retry(lambda c: (_ for _ in ()).throw(RuntimeError("shape mismatch")), 4, "unused")


@pytest.mark.parametrize("fail", [_cuda_oom, _cpu_oom], ids=["cuda-error", "cpu-allocator"])
def test_out_of_memory_in_the_backbone_is_one_clear_error_and_writes_nothing(
        tmp_path, tiny_checkpoint, monkeypatch, capsys, fail):
    """The backbone's attention spans every frame, so it is not retried in chunks: out of memory there
    is the same one-line error at once, saying what to shrink."""
    from fuse4d.core.cli import main
    from fuse4d.core.recon import ReconstructionOutOfMemory, load_reconstructor, reconstruct_grid
    from fuse4d.core.recon.model import VGGT4D

    _write_grid(tmp_path / "frames", V=2, T=2)
    monkeypatch.setattr(VGGT4D, "encode", lambda self, grid, after_layer=None: fail())
    out = tmp_path / "seq"
    assert main(["reconstruct", str(tmp_path / "frames"), "--views", "2", "--out", str(out),
                 "--weights", str(tiny_checkpoint)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("fuse4d reconstruct: error: out of memory in the backbone at 56x42 (2 views x 2 "
                                "timesteps") and "--width" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]   # no output, no temporary left
    monkeypatch.setattr(VGGT4D, "encode", lambda self, grid, after_layer=None: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch") as caught:   # other errors pass through as they are
        reconstruct_grid(load_reconstructor(tiny_checkpoint), _grid(V=2, T=2, H=28, W=42, seed=1)[0])
    assert not isinstance(caught.value, ReconstructionOutOfMemory)


def test_a_check_between_backbone_layers_stops_the_pass_within_one_layer(tiny_checkpoint):
    """`check` runs after every backbone layer (ComfyUI passes its interrupt check): raising there ends
    the pass at once, and without it nothing changes."""
    from fuse4d.core.recon import load_reconstructor, reconstruct_grid

    m = load_reconstructor(tiny_checkpoint)
    images = _grid(V=2, T=2, H=28, W=42, seed=3)[0]
    ref_frames, _ = reconstruct_grid(m, images)
    run: list[int] = []
    hooks = [b.register_forward_hook(lambda mod, args, out, i=i: run.append(i)) for i, b in enumerate(m.aggregator.global_blocks)]
    calls = []

    def check():
        calls.append(len(run))
        if len(calls) == 2:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        reconstruct_grid(m, images, check=check)
    assert run == [0, 1] and calls == [1, 2] and m.cfg.depth > 2
    run.clear()
    frames, _ = reconstruct_grid(m, images, check=lambda: None)
    assert run == list(range(m.cfg.depth))
    for h in hooks:
        h.remove()
    torch.testing.assert_close(frames[1].means, ref_frames[1].means, rtol=0, atol=0)
