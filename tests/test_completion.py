# SPDX-License-Identifier: GPL-3.0-or-later
"""The 4D completion benchmark: scenes with real motion, methods that cannot cheat, the shipped model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from fuse4d.core.motion_scenes import MotionSceneConfig, make_motion_scene, motion_statistics, moving_mask
from fuse4d.core.wan.completion import (CompletionBenchConfig, benchmark_scenes, check_layout, completion_cells,
                                        generate, paired, psnr_masked, run_benchmark, targets)
from fuse4d.core.wan.export_completion import CHECK, MOTION_VIDEO_DIR
from fuse4d.core.wan.keys import WanConfig, build_wan_transformer
from fuse4d.core.wan.model_io import VideoModelConfig
from fuse4d.core.wan.codecs import PixelCodec

SMALL = MotionSceneConfig(views=3, frames=4, size=32, heldout_views=1)


def test_motion_scenes_are_deterministic_and_really_move():
    a, b = make_motion_scene(7, SMALL), make_motion_scene(7, SMALL)
    assert torch.equal(a.images, b.images) and torch.equal(a.heldout_images, b.heldout_images)
    assert a.images.shape == (3, 4, 32, 32, 3) and a.heldout_images.shape == (1, 4, 32, 32, 3)
    assert 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0
    stats = motion_statistics([make_motion_scene(s, SMALL).images for s in range(4)])
    assert stats["moving_fraction"] > 0.08, stats  # objects cross a good part of the frame
    assert not torch.equal(make_motion_scene(8, SMALL).images, a.images)
    # the views of one scene see the same moment from different places
    assert (a.images[0, 0] - a.images[1, 0]).abs().mean() > 0.02


def test_random_rigs_differ_per_scene_and_fixed_rigs_do_not():
    fixed = [make_motion_scene(s, SMALL).cameras.viewmats for s in (1, 2)]
    rand = [make_motion_scene(s, MotionSceneConfig(**{**SMALL.__dict__, "rig": "random"})).cameras.viewmats
            for s in (1, 2)]
    assert torch.equal(fixed[0], fixed[1])
    assert not torch.allclose(rand[0], rand[1])
    with pytest.raises(ValueError, match="unknown rig"):
        make_motion_scene(1, MotionSceneConfig(rig="orbit"))


def test_moving_mask_and_masked_psnr():
    truth = torch.zeros(1, 2, 4, 4, 3)
    truth[0, 1, :2] = 1.0
    mask = moving_mask(truth)
    assert int(mask[0, 1].sum()) == 8 and int(mask[0, 0].sum()) == 0
    pred = truth.clone()
    pred[0, 1, 0] = 0.5
    assert psnr_masked(pred, truth, mask) == pytest.approx(10 * math.log10(1 / (0.25 * 4 / 8)))
    assert math.isnan(psnr_masked(pred, truth, torch.zeros_like(mask)))


def _tiny_model(size: int = 32):
    torch.manual_seed(0)
    wan = WanConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=64, in_dim=97, out_dim=48, text_dim=16, freq_dim=32)
    vcfg = VideoModelConfig(wan=wan, t_max=8, codec="pixel", pixel_factor=4, concat_reference=True,
                            prediction="reference-residual", per_token_timestep=True, flow_shift=2.0,
                            extra={"views": 3, "frames": 4, "size": size, "steps": 2})
    model = build_wan_transformer(wan).eval()
    with torch.no_grad():  # a random, non-trivial residual so that outputs depend on the inputs
        model.proj_out.weight.normal_(0, 0.02)
    return model, vcfg, PixelCodec(4)


def test_methods_read_only_what_they_are_given():
    """The control cannot cheat: nothing but the given cells reaches a method's output, and the time-only
    control's view v depends on nothing of the other views."""
    model, vcfg, codec = _tiny_model()
    cfg = CompletionBenchConfig(views=3, frames=4, size=32, steps=2, scenes=1)
    truth = benchmark_scenes(cfg)[0].images
    altered = truth.clone()
    altered[1:, 1:] = torch.rand_like(altered[1:, 1:])          # everything that is to be generated
    for method in ("completion", "frozen-time", "time-only", "static"):
        a = generate(method, model, vcfg, codec, truth, cfg, seed=3)
        b = generate(method, model, vcfg, codec, altered, cfg, seed=3)
        assert torch.equal(a, b), method
    out = generate("completion", model, vcfg, codec, truth, cfg, seed=3)
    assert torch.equal(out[0], truth[0]) and torch.equal(out[:, 0], truth[:, 0])  # given cells verbatim
    # time-only: view 1 does not see view 0's video (view attention is off); completion does
    other = truth.clone()
    other[0, 1:] = torch.rand_like(other[0, 1:])
    assert torch.equal(generate("time-only", model, vcfg, codec, truth, cfg, 3)[1],
                       generate("time-only", model, vcfg, codec, other, cfg, 3)[1])
    assert not torch.equal(generate("completion", model, vcfg, codec, truth, cfg, 3)[1],
                           generate("completion", model, vcfg, codec, other, cfg, 3)[1])


def test_benchmark_reports_baselines_pairs_and_targets():
    model, vcfg, codec = _tiny_model()
    cfg = CompletionBenchConfig(views=3, frames=4, size=32, steps=2, scenes=2)
    result = run_benchmark(model, vcfg, codec, cfg)
    assert set(result["means"]) == {"completion", "frozen-time", "time-only", "static"}
    assert result["means"]["static"]["motion"] == 0.0
    assert result["paired"]["completion - static"]["psnr"]["n"] == 2
    scored = {name: t["met"] for name, t in targets(result).items()}
    assert len(scored) == 4
    assert completion_cells(3, 4).sum() == 2 * 3
    d = paired([{"a": {"x": 3.0}, "b": {"x": 1.0}}, {"a": {"x": 5.0}, "b": {"x": 1.0}}], "a", "b", "x")
    assert d["mean"] == 3.0 and d["se"] == pytest.approx(1.0)


def test_impossible_layouts_fail_with_one_clear_error():
    with pytest.raises(ValueError, match="not trained for this layout: views 5"):
        check_layout(CompletionBenchConfig(views=5), {"views": 4, "frames": 8, "size": 64})
    with pytest.raises(ValueError, match="unknown methods"):
        check_layout(CompletionBenchConfig(methods=("oracle",)), {})
    model, vcfg, codec = _tiny_model()                              # trained for 3 views x 4 frames at 32
    with pytest.raises(ValueError, match="not trained for this layout: views 4"):
        run_benchmark(model, vcfg, codec, CompletionBenchConfig(views=4, frames=4, size=32, scenes=1))


@pytest.mark.skipif(not (MOTION_VIDEO_DIR / "record.json").exists(), reason="weights/video_motion not shipped yet")
def test_shipped_completion_model_reproduces_its_record():
    """Re-score the shipped model on the record's two held-out scenes from its weights: the completion
    numbers match the record, and the time-only control stays below the fused model."""
    from fuse4d.core.wan.export_completion import score_check
    from fuse4d.core.wan.tiny import load_tiny_video_model

    record = json.loads((MOTION_VIDEO_DIR / "record.json").read_text())
    assert record["check"]["scenes"] == CHECK["scenes"]
    model, vcfg, codec = load_tiny_video_model(MOTION_VIDEO_DIR)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scores = score_check(model, vcfg, codec)
    finally:
        torch.set_num_threads(threads)
    for method, recorded in record["check"]["scores"].items():
        for key in ("psnr", "psnr_moving"):
            assert scores[method][key] == pytest.approx(recorded[key], abs=0.05), (method, key)
    # where things move, the fused model (view 0's video reaches the other views) beats the control that
    # samples each view alone, and the static copy; over all pixels the gap to the control is within noise
    # on two scenes (the record's 12-scene means: docs/results.md)
    assert scores["completion"]["psnr_moving"] > scores["time-only"]["psnr_moving"]
    assert scores["completion"]["psnr_moving"] > scores["static"]["psnr_moving"]
    assert scores["completion"]["psnr"] > scores["frozen-time"]["psnr"]


def test_position_channels_tell_where_a_token_sits():
    from fuse4d.core.wan.conditioning import cell_mask, concat_channels, concat_input

    x = torch.zeros(1, 3, 4, 2, 3)
    inp = concat_input(x, torch.zeros_like(x), cell_mask(2, 2, True, False), position=True)
    assert inp.shape[1] == concat_channels(3, position=True) == 9
    xs, ys = inp[0, -2], inp[0, -1]
    assert torch.equal(xs[0, 0], torch.tensor([-1.0, 0.0, 1.0])) and torch.equal(ys[0, :, 0], torch.tensor([-1.0, 1.0]))
    assert torch.equal(xs[0], xs[3]) and torch.equal(ys[1], ys[2])   # the same in every frame and view


def test_fixed_view_change_channels_carry_only_the_given_video():
    from fuse4d.core.wan.conditioning import cell_mask, concat_channels, concat_input, fixed_view_change

    ref = torch.rand(1, 3, 2 * 3, 2, 2)                              # 2 views x 3 frames
    both, row = cell_mask(2, 3, True, True), cell_mask(2, 3, True, False)
    change = fixed_view_change(ref, both).unflatten(2, (2, 3))
    col = ref.unflatten(2, (2, 3))[:, :, 0]
    for v in range(2):
        assert torch.allclose(change[:, :, v], col - col[:, :, :1])
    assert not fixed_view_change(ref, row).any()                     # no video given: nothing to carry
    inp = concat_input(torch.zeros_like(ref), ref, both, position=True, view_change=True)
    assert inp.shape[1] == concat_channels(3, position=True, view_change=True) == 12


def test_grid_channels_tell_a_token_its_view_and_time():
    from fuse4d.core.wan.conditioning import cell_mask, concat_channels, concat_input

    x = torch.zeros(1, 3, 3 * 2, 2, 2)                               # 3 views x 2 frames, view-major
    inp = concat_input(x, torch.zeros_like(x), cell_mask(3, 2, True, True), position=True, grid=True)
    assert inp.shape[1] == concat_channels(3, position=True, grid=True) == 11
    views, times = inp[0, -2, :, 0, 0], inp[0, -1, :, 0, 0]
    assert views.tolist() == [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0]         # the same across a view's frames
    assert times.tolist() == [-1.0, 1.0] * 3                         # the same across views at one time
    assert torch.equal(inp[0, -2:, :, 0, 0], inp[0, -2:, :, 1, 1])   # the same at every pixel


def test_motion_weight_marks_only_what_moves():
    from fuse4d.core.wan.trainer import moving_latents

    x0 = torch.zeros(1, 2, 2 * 3, 2, 2)                              # 2 views x 3 frames
    x0[0, 1, 4, 1, 0] = 0.5                                          # view 1, t = 1: one latent pixel changed
    x0[0, 0, 0] = 0.3                                                # view 0's t = 0 differs from its later frames
    moving = moving_latents(x0, views=2)[0, 0]
    assert moving[4, 1, 0] == 1 and moving[4].sum() == 1 and moving[3].sum() == 0 and moving[5].sum() == 0
    assert moving[0].sum() == 0 and moving[1].sum() == 4 and moving[2].sum() == 4


def test_ray_channels_match_where_views_see_one_place():
    """Two views' latent pixels whose rays meet the plane at one point get (nearly) the same features;
    other pixels of that view do not; sky rays are read at a fixed far distance (finite)."""
    from fuse4d.core.motion_scenes import scene_cameras
    from fuse4d.core.wan.conditioning import concat_channels, ray_channels

    cams = scene_cameras(0, MotionSceneConfig(size=64))
    rays = ray_channels(cams, 64, 64, 3, 0.35)                        # full resolution: exact pixels
    assert rays.shape == (4, 12, 64, 64) and torch.isfinite(rays).all()
    assert concat_channels(48, ray_bands=3) == 97 + 12
    point = torch.tensor([0.3, -0.35, -0.2, 1.0])                    # on the plane, in front of the rig
    feats = []
    for k in range(4):
        uv = cams.Ks[k] @ (cams.viewmats[k] @ point)[:3]
        u, v = (uv[:2] / uv[2]).tolist()
        feats.append(rays[k, :, int(v), int(u)])
    for k in range(1, 4):
        assert (feats[k] - feats[0]).abs().max() < 0.35              # one place (pixel rounding at 1/64)
    assert (rays[0, :, 5, 5] - feats[0]).abs().max() > 0.5              # another place


def test_ray_channel_models_need_cameras():
    from fuse4d.core.wan.conditioning import concat_channels
    from fuse4d.core.wan.pipeline import Generate4DConfig, generate_4d

    wan = WanConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=64, in_dim=concat_channels(48, ray_bands=1), out_dim=48,
                    text_dim=16, freq_dim=32)
    vcfg = VideoModelConfig(wan=wan, t_max=8, codec="pixel", pixel_factor=4, concat_reference=True, ray_bands=1,
                            prediction="reference-residual")
    model = build_wan_transformer(wan).eval()
    row = torch.rand(2, 32, 32, 3)
    g = Generate4DConfig(views=2, frames=2, height=32, width=32, steps=1, progress=False)
    with pytest.raises(ValueError, match="cameras of the views"):
        generate_4d(model, PixelCodec(4), g, frozen_time=row, video_config=vcfg)
    from fuse4d.core.motion_scenes import scene_cameras
    cams = scene_cameras(0, MotionSceneConfig(views=2, size=32))
    assert generate_4d(model, PixelCodec(4), g, frozen_time=row, video_config=vcfg, cameras=cams).frames.shape == (2, 2, 32, 32, 3)
