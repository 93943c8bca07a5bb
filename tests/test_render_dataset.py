# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d render-dataset`: planning (no Blender) and a real shard rendered by headless Blender from
procedural animated assets, its samples read by both trainers' data loaders."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fuse4d.core.render_dataset import RenderSettings, find_assets, plan_asset, shard_of
from fuse4d.core.render_dataset.plan import gltf_facts, name_caption, parse_shard, sidecar_caption
from fuse4d.core.render_dataset.shard import check_settings, report_name

TINY = RenderSettings(views=2, frames=5, heldout=1, width=32, height=32, arc_samples=1, frozen_samples=1,
                      samples=4, lighting="random", background="white")


def test_shards_partition_assets_and_plans_are_deterministic(tmp_path):
    names = [f"set{i % 3}/thing_{i}.glb" for i in range(40)]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an asset")
    found = find_assets(tmp_path)
    assert found == sorted(names)
    shards = [[a for a in found if shard_of(a, 4) == i] for i in range(4)]
    assert sorted(sum(shards, [])) == found and all(shards)  # disjoint, complete, none empty
    assert [shard_of(a, 4) for a in found] == [shard_of(a, 4) for a in found[::-1]][::-1]
    a, b = plan_asset(found[0], TINY), plan_asset(found[0], TINY)
    assert [p.views for p in a] == [p.views for p in b] and a[0].name == b[0].name
    assert [p.kind for p in a] == ["arc", "frozen"]
    other = plan_asset(found[0], RenderSettings(**{**TINY.__dict__, "seed": 1}))
    assert other[0].views != a[0].views
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("4/4")


def test_rig_cameras_look_at_the_object_from_the_drawn_radius():
    s = RenderSettings(views=4, heldout=2, radius=(2.0, 2.6), elevation=(0.0, 30.0), arc_deg=90.0)
    for plan in plan_asset("a.glb", s):
        for cam in plan.views + plan.heldout:
            w2c = torch.tensor(cam["viewmat"])
            centre = torch.linalg.inv(w2c)[:3, 3]
            assert 2.0 - 1e-4 <= float(centre.norm()) <= 2.6 + 1e-4
            origin = w2c @ torch.tensor([0.0, 0.0, 0.0, 1.0])  # the object's centre, straight ahead
            assert origin[2] > 0 and abs(origin[0]) < 1e-4 and abs(origin[1]) < 1e-4
        az = [float(torch.atan2(c[0], -c[2])) for c in
              (torch.linalg.inv(torch.tensor(v["viewmat"]))[:3, 3] for v in plan.views)]
        spans = np.degrees(np.diff(np.unwrap(az)))
        assert np.allclose(spans, 30.0, atol=1e-3)  # 4 views evenly on the 90 degree arc


def test_captions_sidecar_then_metadata_then_name(tmp_path):
    assert name_caption("fox_Walk-01.glb") == "an animated fox walk"
    assert name_caption("fox.glb", "Armature|RunCycle") == "an animated fox, run cycle"
    (tmp_path / "a.glb").write_bytes(b"")
    (tmp_path / "captions.json").write_text(json.dumps({"a.glb": "a red fox trotting"}))
    assert sidecar_caption(tmp_path, "a.glb") == "a red fox trotting"
    (tmp_path / "a.txt").write_text("a fox\n")
    assert sidecar_caption(tmp_path, "a.glb") == "a fox"
    gltf = {"asset": {"version": "2.0"}, "scenes": [{"extras": {"caption": "a dancing robot"}}],
            "images": [{"uri": "gone.png"}], "animations": [{}]}
    (tmp_path / "b.gltf").write_text(json.dumps(gltf))
    facts = gltf_facts(tmp_path / "b.gltf")
    assert facts == {"caption": "a dancing robot", "animations": 1, "missing_images": ["gone.png"]}


def test_a_dataset_keeps_its_render_settings(tmp_path):
    check_settings(tmp_path, TINY)
    check_settings(tmp_path, TINY)  # the same settings resume
    with pytest.raises(ValueError, match="other settings: views 2"):
        check_settings(tmp_path, RenderSettings(**{**TINY.__dict__, "views": 3}))


# ---------------------------------------------------------------- Blender

@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    pytest.importorskip("bpy", reason="Blender as a Python module (pip install bpy==4.5.*) is not installed")
    from fuse4d.core.render_dataset import make_test_assets

    root = tmp_path_factory.mktemp("render_dataset")
    made = make_test_assets(root / "assets", 4, seed=0, bad=True)
    assert sorted(p.suffix for p in made) == [".blend", ".blend", ".fbx", ".glb", ".glb", ".glb", ".gltf"]
    out = root / "ds"
    cmd = [sys.executable, "-m", "fuse4d", "render-dataset", str(root / "assets"), "--out", str(out),
           "--views", "2", "--frames", "5", "--heldout", "1", "--size", "32x32", "--arc-samples", "1",
           "--frozen-samples", "1", "--render-samples", "4", "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = [subprocess.run(cmd + ["--shard", f"{i}/2"], capture_output=True, text=True, env=env) for i in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    reports = [json.loads((out / report_name(i, 2)).read_text()) for i in range(2)]
    return {"root": root, "out": out, "cmd": cmd, "env": env, "runs": runs, "reports": reports}


def _samples(out):
    return sorted(p for p in out.iterdir() if (p / "cameras.json").is_file())


def test_shards_render_every_good_asset_once_and_skip_bad_ones(rendered):
    out, reports, runs = rendered["out"], rendered["reports"], rendered["runs"]
    assert sum(r["assets"] for r in reports) == 7
    skipped = {s["asset"]: s["reason"] for r in reports for s in r["skipped_assets"]}
    assert set(skipped) == {"static_box.blend", "huge_box.glb", "untextured.gltf"}
    assert skipped["static_box.blend"].startswith("no animation")
    assert skipped["huge_box.glb"].startswith("absurd scale")
    assert skipped["untextured.gltf"] == "missing textures: untextured_mat_tex.png"
    stderr = runs[0].stderr + runs[1].stderr
    assert "skipped huge_box.glb: absurd scale" in stderr  # one clear line per bad asset
    assert not any(r["failed_samples"] for r in reports)
    samples = _samples(out)
    assert len(samples) == 8 == sum(r["samples_written"] for r in reports)
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
    for folder in samples:
        meta = json.loads((folder / "cameras.json").read_text())
        assert meta["frames"] == 5 and len(meta["views"]) == 2 and len(meta["heldout"]) == 1
        assert (folder / "prompt.txt").read_text() == meta["prompt"] != ""
        if meta["kind"] == "frozen":
            assert len(set(meta["source_frames"])) == 1
        else:
            assert np.all(np.diff(meta["source_frames"]) > 0)
    prompts = {json.loads((f / "cameras.json").read_text())["asset"]: (f / "prompt.txt").read_text() for f in samples}
    assert prompts["cone_asset000.glb"] == "a textured cone moving, spinning and squashing"  # glTF extras
    assert prompts["tube_asset003.fbx"] == "an animated tube asset"  # FBX: from the name


def test_depth_unprojects_into_the_normalised_object(rendered):
    """Cameras, depth and normalisation agree: every depth pixel of every view lands inside the unit
    cube the asset was scaled into, and the views see the object's frame from different sides."""
    from safetensors.torch import load_file

    for folder in _samples(rendered["out"]):
        meta = json.loads((folder / "cameras.json").read_text())
        depth = load_file(str(folder / "depth.safetensors"))["depth"]
        assert depth.shape == (2, 5, 32, 32)
        for v, cam in enumerate(meta["views"]):
            K, c2w = torch.tensor(cam["K"]), torch.linalg.inv(torch.tensor(cam["viewmat"]))
            for t in range(5):
                ys, xs = torch.nonzero(depth[v, t] > 0, as_tuple=True)
                assert len(ys) > 5, f"{folder.name}: view {v} time {t} sees nothing"
                z = depth[v, t][ys, xs]
                pc = torch.stack([(xs + 0.5 - K[0, 2]) / K[0, 0] * z, (ys + 0.5 - K[1, 2]) / K[1, 1] * z, z,
                                  torch.ones_like(z)])
                world = (c2w @ pc)[:3]
                assert float(world.abs().max()) <= 0.5 + 0.05


def test_samples_load_in_both_trainers(rendered):
    from fuse4d.core.recon.train_data import FolderSource
    from fuse4d.core.wan.data import FolderDataset

    out = rendered["out"]
    video = FolderDataset(str(out))
    assert len(video.samples) == 8
    item = video.next()
    assert item["frames"].shape == (2, 5, 32, 32, 3) and item["prompt"]
    frames = item["frames"]
    assert float(frames.std()) > 0.02 and float(frames.max()) > 0.9  # a white background and an object
    recon = FolderSource(out)
    assert len(recon) == 8
    sample = recon.get(0)
    assert sample.images.shape == (2, 5, 32, 32, 3) and sample.heldout_images.shape == (1, 5, 32, 32, 3)
    assert torch.allclose(sample.cameras.viewmats[0], torch.eye(4), atol=1e-5)
    assert sample.depth.shape == (2, 5, 32, 32) and sample.background == (1.0, 1.0, 1.0)


def test_a_rerun_resumes_without_redoing_finished_samples(rendered):
    import shutil

    out = rendered["out"]
    victim = _samples(out)[0]
    shard = shard_of(json.loads((victim / "cameras.json").read_text())["asset"], 2)
    stamps = {p: p.stat().st_mtime_ns for p in _samples(out) if p != victim}
    shutil.rmtree(victim)
    r = subprocess.run(rendered["cmd"] + ["--shard", f"{shard}/2"], capture_output=True, text=True,
                       env=rendered["env"])
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / report_name(shard, 2)).read_text())
    assert report["samples_written"] == 1
    assert report["samples_done_before"] == report["samples_planned"] - 1 - 2 * len(report["skipped_assets"])
    assert victim.is_dir() and all(p.stat().st_mtime_ns == m for p, m in stamps.items())
    bad = subprocess.run(rendered["cmd"] + ["--views", "3"], capture_output=True, text=True, env=rendered["env"])
    assert bad.returncode == 2 and "other settings: views 2 (now 3)" in bad.stderr
