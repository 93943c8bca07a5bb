# SPDX-License-Identifier: GPL-3.0-or-later
"""The animate pipeline (core/jobs/animate.py), `fuse4d animate-scene` and `fuse4d demo`."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from fuse4d.core.jobs import animate
from fuse4d.core.cameras import cameras_to_dicts
from fuse4d.core.cli import main as cli
from fuse4d.core.gaussians import Gaussians
from fuse4d.core.io import read_sequence, write_job
from fuse4d.core.synthetic import SyntheticConfig, rig_cameras


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    """A tiny random video model folder and a tiny random reconstructor (fast, untrained)."""
    from fuse4d.core.recon import write_tiny_reconstructor
    from fuse4d.core.wan.keys import WanConfig, build_wan_transformer
    from fuse4d.core.wan.model_io import VideoModelConfig, save_video_model

    root = tmp_path_factory.mktemp("models")
    wan = WanConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=64, in_dim=12, out_dim=12, text_dim=16, freq_dim=16)
    torch.manual_seed(0)
    save_video_model(root / "video", build_wan_transformer(wan),
                     VideoModelConfig(wan=wan, t_max=8, codec="pixel", pixel_factor=2, extra={"size": 32}))
    write_tiny_reconstructor(root / "recon.safetensors", seed=0)
    return root / "video", root / "recon.safetensors"


def test_reconstruction_is_brought_into_the_cameras_world(monkeypatch, random_models):
    """The reconstructor answers in its first camera's frame at its own scale; the pipeline maps its
    Gaussians into the world of the cameras the views came from (similarity from camera centres)."""
    known, _ = rig_cameras(SyntheticConfig(views=4, width=32, height=32))
    # The reconstructor's frame: x_pred = 0.5 * R x + t with R, t of known camera 0.
    R, t, s = known.viewmats[0, :3, :3], known.viewmats[0, :3, 3], 0.5
    world_pts = torch.randn(50, 3)
    pred_pts = s * world_pts @ R.T + t
    pred_viewmats = torch.zeros(4, 4, 4)
    for v in range(4):  # the same cameras seen from the predicted frame
        rot = known.viewmats[v, :3, :3] @ R.T
        centre = s * known.centers[v] @ R.T + t
        pred_viewmats[v, :3, :3], pred_viewmats[v, :3, 3], pred_viewmats[v, 3, 3] = rot, -rot @ centre, 1.0
    pred_cams = type(known)(pred_viewmats, known.Ks.clone(), 32, 32)
    g = Gaussians(pred_pts, torch.tensor([[1.0, 0, 0, 0]]).expand(50, 4), torch.full((50, 3), -3.0),
                  torch.zeros(50), torch.zeros(50, 1, 3))
    monkeypatch.setattr("fuse4d.core.recon.reconstruct_grid", lambda model, images, progress=None: ([g, g], pred_cams))
    models = animate.load_models(*random_models)
    frames, cams, align = animate.reconstruct(models, torch.rand(4, 2, 32, 32, 3), known)
    np.testing.assert_allclose(frames[0].means.numpy(), world_pts.numpy(), atol=1e-3)
    assert math.isclose(float(np.cbrt(np.linalg.det(align[:3, :3]))), 2.0, rel_tol=1e-3)
    np.testing.assert_allclose(frames[1].log_scales.numpy(), -3.0 + math.log(2.0), atol=1e-4)


def test_animate_views_checks_its_input(random_models):
    models = animate.load_models(*random_models)
    with pytest.raises(ValueError, match="views must be"):
        animate.animate_views(models, torch.rand(4, 32, 32))
    cams, _ = rig_cameras(SyntheticConfig(views=3, width=32, height=32))
    with pytest.raises(ValueError, match="4 views but 3 cameras"):
        animate.animate_views(models, torch.rand(4, 32, 32, 3), cams)


def test_animate_views_hands_the_cameras_to_a_model_that_reads_them():
    """The shipped completion model has ray channels: animate-scene gives it the views' cameras (at
    its working size), and without cameras it fails with one clear line."""
    models = animate.load_models(animate.WEIGHTS / "video_motion")
    views = torch.rand(4, 48, 40, 3)  # not the working size: resized, and the cameras with them
    cams, _ = rig_cameras(SyntheticConfig(views=4, width=40, height=48, arc_deg=90.0))
    wide, _ = rig_cameras(SyntheticConfig(views=4, width=40, height=48, arc_deg=30.0))
    settings = animate.AnimateSettings(frames=8)
    size = models.video_size
    grid = animate.animate_views(models, views, cams, settings).grid
    assert grid.shape == (4, 8, size, size, 3) and torch.isfinite(grid).all()
    other = animate.generate_grid(models, animate.resize_images(views, size, size), settings, wide.resized(size, size))
    assert not torch.equal(grid[1:, 1:], other[1:, 1:])  # the cameras reach the model
    with pytest.raises(ValueError, match="reads the cameras of the views"):
        animate.animate_views(models, views, None, settings)


def write_demo_job(folder, views=3, size=40, frames=4):
    from fuse4d.core.images import save_png
    from fuse4d.core.render import render
    from fuse4d.core.scene import sample_scene

    cams, _ = rig_cameras(SyntheticConfig(views=views, width=size, height=size, arc_deg=60.0))
    with torch.no_grad():
        images = render(sample_scene(0), cams, background=(0.55, 0.65, 0.8)).rgb.clamp(0, 1)
    items = cameras_to_dicts(cams)
    for v, item in enumerate(items):
        item["image"] = f"views/view_{v:03d}.png"
        save_png(folder / item["image"], images[v])
    write_job(folder, items, frames=frames, fps=6.0, prompt="")
    return cams


def test_animate_scene_cli_answers_a_job_in_its_world(tmp_path, random_models, capsys):
    cams = write_demo_job(tmp_path / "job")
    video, recon = random_models
    rc = cli(["animate-scene", "--job", str(tmp_path / "job"), "--out", str(tmp_path / "job" / "result"),
              "--steps", "2", "--video-model", str(video), "--recon", str(recon)])
    assert rc == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress ")]
    fractions = [float(line.split()[1]) for line in lines]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    seq = read_sequence(tmp_path / "job" / "result")
    assert len(seq) == 4 and seq.fps == 6.0 and seq.views == 3
    np.testing.assert_allclose(np.array(seq.cameras[1]["viewmat"]), cams.viewmats[1].numpy(), atol=1e-5)


def test_animate_scene_cli_rejects_a_bad_job(tmp_path, capsys):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cameras.json").write_text(json.dumps({"format": "something else"}))
    assert cli(["animate-scene", "--job", str(tmp_path / "job"), "--out", str(tmp_path / "out")]) == 2
    assert "not a fuse4d-job file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_demo_rejects_a_scene_that_is_not_a_4d_sample(tmp_path, capsys):
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "v00_t000.png").write_bytes(b"not a png")
    assert cli(["demo", "--out", str(tmp_path / "out"), "--scene", str(tmp_path / "scene")]) == 2
    err = capsys.readouterr().err
    assert "not a 4D dataset sample" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB"), dtype=np.float32) for f in ImageSequence.Iterator(im)]


def test_demo_with_the_shipped_models_writes_everything(tmp_path):
    """The README's main job: every output, moving content, and a trained reconstructor that beats an
    untrained one at held-out cameras, reproducing the numbers recorded in weights/demo_metrics.json."""
    out = tmp_path / "demo"
    assert cli(["demo", "--out", str(out)]) == 0
    for name in ("preview.gif", "contact_sheet.png", "heldout.png", "metrics.json", "sequence/manifest.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    seq = read_sequence(out / "sequence")
    assert len(seq) == metrics["frames"] and len(seq.cameras) == metrics["views"]
    frames = gif_frames(out / "preview.gif")
    half = frames[0].shape[1] // 2
    assert max(np.abs(a[:, :half] - b[:, :half]).mean() for a, b in zip(frames, frames[1:])) > 1.0, \
        "the fixed-view preview does not move"
    assert metrics["psnr_heldout_t0"] > metrics["psnr_heldout_t0_untrained_reconstructor"] + 3.0
    recorded = json.loads((animate.WEIGHTS / "demo_metrics.json").read_text())
    for key in ("psnr_heldout_t0", "psnr_heldout_t0_untrained_reconstructor", "psnr_input_views",
                "motion_mean_abs_frame_difference"):
        assert metrics[key] == pytest.approx(recorded[key], rel=0.02, abs=0.05), key
    # the completion: view 0's video + the row in, the other views generated beside truth and static copy
    for name in ("completion/preview.gif", "completion/contact_sheet.png", "completion/sequence/manifest.json"):
        assert (out / name).exists(), name
    done = metrics["completion"]
    assert len(read_sequence(out / "completion" / "sequence")) == done["frames"]
    assert len(gif_frames(out / "completion" / "preview.gif")) == done["frames"]
    assert done["generated"]["psnr_moving"] > done["static_copy"]["psnr_moving"]
    for method in ("generated", "static_copy", "time_only_control"):
        for key in ("psnr", "psnr_moving"):
            assert done[method][key] == pytest.approx(recorded["completion"][method][key], abs=0.05), (method, key)
