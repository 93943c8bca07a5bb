# SPDX-License-Identifier: GPL-3.0-or-later
"""The node pack inside a real, headless ComfyUI v0.3.75 server (CPU), driven over its HTTP API."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image, ImageSequence

from conftest_comfy import comfy_server, load_workflow, swap_tiny  # noqa: F401 (fixture)

EXPECTED_NODES = {
    "Fuse4DFusedViewTimeAttention", "Fuse4DEmpty4DLatent", "Fuse4DReferenceFrames", "Fuse4DDecode4DGrid",
    "Fuse4DGridSlice", "Fuse4DLoadReconstructor", "Fuse4DReconstruct4DGaussians", "Fuse4DSave4DSplats",
    "Fuse4DRender4D", "Fuse4DLoadSplat", "Fuse4DRenderFrozenTimeViews",
}


def saved_files(server, entry: dict) -> list:
    files = []
    for node_out in entry["outputs"].values():
        for item in node_out.get("images", []):
            files.append(server.output_dir / item["subfolder"] / item["filename"])
    return files


def frames_of(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB"), dtype=np.float32) for f in ImageSequence.Iterator(im)]


def assert_splats_saved(server, entry: dict, timesteps: int) -> None:
    splats = [o["fuse4d_splats"][0] for o in entry["outputs"].values() if "fuse4d_splats" in o]
    assert splats, "Save 4D Splats reported nothing to the UI"
    folder = server.output_dir / splats[0]["subfolder"]
    assert (folder / "manifest.json").exists()
    assert len(splats[0]["files"]) == timesteps
    assert all((folder / f).stat().st_size > 0 for f in splats[0]["files"])


def test_object_info_lists_every_node(comfy_server):
    info = comfy_server.object_info()
    assert EXPECTED_NODES <= set(info), EXPECTED_NODES - set(info)
    assert info["Fuse4DSave4DSplats"]["output_node"] is True
    assert "GAUSSIANS_4D" in info["Fuse4DReconstruct4DGaussians"]["output"]
    assert "CC BY-NC" in info["Fuse4DLoadReconstructor"]["description"]


def test_text_to_4d_workflow(comfy_server):
    prompt, pruned = swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"), comfy_server)
    entry = comfy_server.run(prompt)
    files = saved_files(comfy_server, entry)
    webps = [f for f in files if f.suffix == ".webp"]
    pngs = [f for f in files if f.suffix == ".png"]
    assert webps and all(f.exists() for f in files)
    assert len(pngs) == 4  # frozen time: one image per view
    video = frames_of(webps[0])
    assert len(video) == 5  # 5 pixel frames per view
    assert all(f.std() > 1.0 for f in video), "a decoded frame is constant"
    assert max(np.abs(a - b).mean() for a, b in zip(video, video[1:])) > 0.5, "decoded frames do not change"
    views = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in pngs]
    assert np.abs(views[0] - views[1]).mean() > 0.5
    if pruned:
        pytest.skip("generation ran; the reconstruction branch needs fuse4d.core.recon (load_reconstructor, reconstruct_grid, write_tiny_reconstructor), not in this tree yet")
    assert_splats_saved(comfy_server, entry, timesteps=5)


def test_animate_scene_workflow(comfy_server):
    from fuse4d.core.io import write_ply
    from fuse4d.core.scene import sample_scene

    write_ply(comfy_server.input_dir / "scene.ply", sample_scene(0).to_arrays())
    prompt, pruned = swap_tiny(load_workflow("animate_scene_wan22_ti2v_5b.json"), comfy_server)
    entry = comfy_server.run(prompt)
    webps = [f for f in saved_files(comfy_server, entry) if f.suffix == ".webp"]
    assert webps and all(f.exists() for f in webps)
    assert all(f.std() > 1.0 for f in frames_of(webps[0]))
    if pruned:
        pytest.skip("generation ran; the reconstruction branch needs fuse4d.core.recon (load_reconstructor, reconstruct_grid, write_tiny_reconstructor), not in this tree yet")
    assert_splats_saved(comfy_server, entry, timesteps=5)


def test_reconstruct_only_workflow(comfy_server):
    if "fuse4d" not in comfy_server.tiny:
        pytest.skip("needs fuse4d.core.recon (load_reconstructor, reconstruct_grid, write_tiny_reconstructor), not in this tree yet")
    from fuse4d.core.cameras import orbit_cameras
    from fuse4d.core.render import render
    from fuse4d.core.scene import sample_scene

    g = sample_scene(0)
    cams = orbit_cameras(4, 3.0, 15.0, 60.0, width=56, height=56)
    rgb = render(g, cams).rgb.clamp(0, 1).numpy()
    frames = [Image.fromarray((np.roll(rgb[v], t * 2, axis=1) * 255).astype(np.uint8)) for v in range(4)
              for t in range(4)]
    frames[0].save(comfy_server.input_dir / "grid_4x4.webp", save_all=True, append_images=frames[1:], lossless=True)
    entry = comfy_server.run(load_workflow("reconstruct_only.json"))
    assert_splats_saved(comfy_server, entry, timesteps=4)
    assert saved_files(comfy_server, entry)


def test_interrupt_stops_sampling_and_next_prompt_runs(comfy_server):
    prompt, _ = swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"), comfy_server, steps=400)
    for nid in [n for n, v in prompt.items() if v["class_type"] in ("Fuse4DLoadReconstructor",
                                                                      "Fuse4DReconstruct4DGaussians",
                                                                      "Fuse4DSave4DSplats")]:
        del prompt[nid]
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["seed"] = 1234  # not cached from the other test
    pid = comfy_server.queue(prompt)
    deadline = time.monotonic() + 60
    while not comfy_server.is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # well inside the 400 sampling steps
    comfy_server.interrupt()
    entry = comfy_server.wait(pid, timeout=60, allow_error=True)
    messages = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in messages, messages
    assert not any(o.get("images") for o in entry["outputs"].values())
    # The server serves the next prompt.
    small, _ = swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"), comfy_server, steps=1)
    small = {k: v for k, v in small.items() if v["class_type"] not in (
        "Fuse4DLoadReconstructor", "Fuse4DReconstruct4DGaussians", "Fuse4DSave4DSplats")}
    for node in small.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["seed"] = 99
    after = comfy_server.run(small, timeout=120)
    assert after["status"]["status_str"] == "success"


def test_bad_image_count_gives_clear_error(comfy_server):
    prompt = {
        "1": {"class_type": "Fuse4DLoadSplat", "inputs": {"splat": "scene.ply"}},
        "2": {"class_type": "Fuse4DRenderFrozenTimeViews", "inputs": {
            "splat": ["1", 0], "views": 3, "width": 32, "height": 32, "radius": 0.0, "elevation_deg": 10.0,
            "arc_deg": 40.0, "fov_deg": 50.0}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": comfy_server.tiny["vae"]}},
        "4": {"class_type": "Fuse4DEmpty4DLatent", "inputs": {"vae": ["3", 0], "width": 32, "height": 32,
                                                             "views": 2, "frames": 5, "batch_size": 1}},
        "5": {"class_type": "Fuse4DReferenceFrames", "inputs": {"vae": ["3", 0], "latent": ["4", 0],
                                                               "frozen_time": ["2", 0]}},
        "6": {"class_type": "Fuse4DDecode4DGrid", "inputs": {"vae": ["3", 0], "samples": ["5", 0], "views": 0}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bad"}},
    }
    if not (comfy_server.input_dir / "scene.ply").exists():
        from fuse4d.core.io import write_ply
        from fuse4d.core.scene import sample_scene

        write_ply(comfy_server.input_dir / "scene.ply", sample_scene(0).to_arrays())
    entry = comfy_server.wait(comfy_server.queue(prompt), allow_error=True)
    assert entry["status"]["status_str"] == "error"
    text = str(entry["status"]["messages"])
    assert "frozen_time holds 3 images" in text and "2 views" in text


def _moving_sequence(folder, timesteps: int = 3):
    from fuse4d.core.cameras import cameras_to_dicts, orbit_cameras
    from fuse4d.core.io import Sequence4D, write_sequence
    from fuse4d.core.scene import sample_scene

    g = sample_scene(0)
    centre = g.means.median(dim=0).values
    radius = float((g.means - centre).norm(dim=-1).quantile(0.9))
    frames = []
    for t in range(timesteps):
        moved = g.to_arrays()
        moved.means = moved.means + np.array([0.6 * radius * t, 0.0, 0.0], dtype=np.float32)
        frames.append(moved)
    cams = orbit_cameras(2, 3.0 * radius, 15.0, 30.0, target=centre.tolist(), width=256, height=192)
    write_sequence(folder, Sequence4D(frames=frames, fps=4.0, views=2, cameras=cameras_to_dicts(cams)))


def test_4d_player_in_headless_chromium(comfy_server):
    from comfy_browser import Browser, chromium_binary

    if chromium_binary() is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    _moving_sequence(comfy_server.input_dir / "player_seq")
    entry = comfy_server.run({
        "1": {"class_type": "Fuse4DLoad4DSplats", "inputs": {"sequence": "player_seq"}},
        "2": {"class_type": "Fuse4DSave4DSplats", "inputs": {"gaussians": ["1", 0], "filename_prefix": "player/seq",
                                                            "format": "ply sequence", "fps": 0.0}},
    })
    info = entry["outputs"]["2"]["fuse4d_splats"][0]
    assert len(info["files"]) == 3
    browser = Browser()
    try:
        browser.navigate(comfy_server.url + "/")
        browser.wait_for("window.Fuse4DPlayer && window.Fuse4DPlayer.createPlayer", timeout=150)
        browser.evaluate(f"""(async () => {{
            const div = document.createElement('div');
            div.style.cssText = 'position:fixed;left:0;top:0;z-index:100000;background:#000';
            document.body.appendChild(div);
            window.__fuse4d = await window.Fuse4DPlayer.createPlayer(div, {json.dumps(info)},
                                                                    {{width: 256, height: 192}});
            return window.__fuse4d.frames;
        }})()""", timeout=150)
        grab = "(() => { window.__fuse4d.render(); return window.__fuse4d.canvas.toDataURL('image/png'); })()"
        background = np.array([16, 16, 20], dtype=np.float32)

        def settled_picture():
            # Spark loads and sorts splats asynchronously: poll until the picture has content.
            deadline = time.monotonic() + 30
            while True:
                image = browser.data_url_image(grab)
                coverage = (np.abs(image - background).sum(-1) > 30).mean()
                if coverage > 0.02 or time.monotonic() > deadline:
                    return image, coverage

        first, covered = settled_picture()
        assert first.shape == (192, 256, 3)
        Image.fromarray(first.astype(np.uint8)).save(comfy_server.base / "player_t0.png")
        assert covered > 0.02 and first.std() > 5, f"player picture is blank (coverage {covered:.3f})"
        browser.evaluate("(() => { const s = window.__fuse4d.slider; s.value = '2';"
                         " s.dispatchEvent(new Event('input')); return s.value; })()")
        # Spark regenerates and sorts asynchronously: poll (bounded) for the new timestep's picture.
        deadline = time.monotonic() + 30
        while True:
            time.sleep(0.5)
            moved = browser.data_url_image(grab)
            change = np.abs(moved - first).mean()
            if change > 2.0 or time.monotonic() > deadline:
                break
        Image.fromarray(moved.astype(np.uint8)).save(comfy_server.base / "player_t2.png")
        assert change > 2.0, "moving the time slider did not change the picture"
        assert (np.abs(moved - background).sum(-1) > 30).mean() > 0.02, "the new timestep is blank"
    finally:
        browser.close()
