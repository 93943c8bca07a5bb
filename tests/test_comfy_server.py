# SPDX-License-Identifier: GPL-3.0-or-later
"""The node pack inside a real, headless ComfyUI v0.3.75 server (CPU), driven over its HTTP API."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from conftest_comfy import (WORKFLOWS, bad_image_count_prompt, comfy_server, load_workflow,  # noqa: F401
                            run_base_model, small_scene, swap_tiny, write_scene_ply)

EXPECTED_NODES = {
    "Fuse4DFusedViewTimeAttention", "Fuse4DEmpty4DLatent", "Fuse4DReferenceFrames", "Fuse4DDecode4DGrid",
    "Fuse4DGridSlice", "Fuse4DLoadReconstructor", "Fuse4DReconstruct4DGaussians", "Fuse4DSave4DSplats",
    "Fuse4DRender4D", "Fuse4DLoadSplat", "Fuse4DRenderFrozenTimeViews", "Fuse4DLoad4DSplats", "Fuse4DSplatFrame",
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


def assert_splats_saved(server, entry: dict, timesteps: int, views: int) -> Path:
    """Save 4D Splats wrote a readable sequence: manifest, one non-empty PLY per timestep, V cameras."""
    from fuse4d.core.io import read_sequence

    splats = [o["fuse4d_splats"][0] for o in entry["outputs"].values() if "fuse4d_splats" in o]
    assert splats, "Save 4D Splats reported nothing to the UI"
    folder = server.output_dir / splats[0]["subfolder"]
    assert len(splats[0]["files"]) == timesteps
    seq = read_sequence(folder)
    assert len(seq.frames) == timesteps and seq.views == views and len(seq.cameras) == views
    for frame in seq.frames:
        assert len(frame) > 0 and np.isfinite(frame.means).all() and np.isfinite(frame.sh).all()
    return folder


def test_object_info_lists_every_node(comfy_server):
    info = comfy_server.object_info()
    assert EXPECTED_NODES <= set(info), EXPECTED_NODES - set(info)
    assert info["Fuse4DSave4DSplats"]["output_node"] is True
    assert "GAUSSIANS_4D" in info["Fuse4DReconstruct4DGaussians"]["output"]
    recon = info["Fuse4DLoadReconstructor"]
    assert "CC BY-NC 4.0" in recon["description"] and "VGGT-1B-Commercial" in recon["description"]
    # registered with folder_paths: the combo lists files of models/fuse4d (and models/vggt)
    kind, spec = recon["input"]["required"]["weights"][:2]
    options = spec["options"] if kind == "COMBO" else kind
    assert f"fuse4d/{comfy_server.tiny['fuse4d']}" in options
    # the example workflows are offered in ComfyUI's Templates browser
    templates = comfy_server.get_json("/workflow_templates")
    assert sorted(templates.get("fuse4d", [])) == sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def test_text_to_4d_workflow(comfy_server):
    prompt = swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"), comfy_server)
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
    assert_splats_saved(comfy_server, entry, timesteps=5, views=4)
    licence = [o["text"] for o in entry["outputs"].values() if "text" in o]
    assert licence and "Fuse4D checkpoint" in licence[0][0]


def test_animate_scene_workflow(comfy_server):
    write_scene_ply(comfy_server.input_dir / "scene.ply")
    prompt = swap_tiny(load_workflow("animate_scene_wan22_ti2v_5b.json"), comfy_server)
    entry = comfy_server.run(prompt)
    webps = [f for f in saved_files(comfy_server, entry) if f.suffix == ".webp"]
    assert len(webps) == 2 and all(f.exists() for f in webps)  # the fixed-view video and the orbit
    video = frames_of(next(f for f in webps if "view0" in f.name))
    assert len(video) == 5 and all(f.std() > 1.0 for f in video), "a decoded frame is constant"
    # The orbit of (random tiny) reconstructed Gaussians: edge-on views of a depth sheet may be
    # nearly empty, but the video shows the scene and moves.
    orbit = frames_of(next(f for f in webps if "orbit" in f.name))
    assert len(orbit) == 5 and max(f.std() for f in orbit) > 1.0, "the orbit video is blank"
    assert np.abs(orbit[0] - orbit[-1]).mean() > 0.5, "the orbit does not move"
    folder = assert_splats_saved(comfy_server, entry, timesteps=5, views=4)
    # Aligned with the capture: the saved cameras are the ones the capture was rendered from (64 x 48,
    # not the reconstructor's working size), and the Gaussians lie in front of them.
    from fuse4d.core.io import read_sequence

    seq = read_sequence(folder)
    assert {(c["width"], c["height"]) for c in seq.cameras} == {(64, 48)}
    assert len(seq.extra["alignment"]) == 4
    viewmat = np.asarray(seq.cameras[0]["viewmat"], dtype=np.float64)
    depth = (seq.frames[0].means @ viewmat[:3, :3].T + viewmat[:3, 3])[:, 2]
    assert (depth > 0).mean() > 0.9, "the animated Gaussians are not in front of the capture's camera"


def test_reconstruct_only_workflow(comfy_server):
    from fuse4d.core.cameras import orbit_cameras
    from fuse4d.core.render import render
    g = small_scene()
    cams = orbit_cameras(4, 3.0, 15.0, 60.0, width=56, height=56)
    rgb = render(g, cams).rgb.clamp(0, 1).numpy()
    frames = [Image.fromarray((np.roll(rgb[v], t * 2, axis=1) * 255).astype(np.uint8)) for v in range(4)
              for t in range(4)]
    frames[0].save(comfy_server.input_dir / "grid_4x4.webp", save_all=True, append_images=frames[1:], lossless=True)
    entry = comfy_server.run(swap_tiny(load_workflow("reconstruct_only.json"), comfy_server))
    folder = assert_splats_saved(comfy_server, entry, timesteps=4, views=4)
    # the sequence is what ComfyUI's /view serves to the 4D player
    assert (folder / "manifest.json").exists()
    rendered = [f for f in saved_files(comfy_server, entry) if f.suffix == ".png"]
    assert len(rendered) == 4  # frozen time t=0 re-rendered from the 4 reconstructed cameras
    assert all(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32).std() > 1.0 for f in rendered)


# Where the text-to-4D graph is interrupted: (node id, Save 4D Splats format). The gate holds the
# node after its first step (a sampling step, a decoded view, a reconstructed or saved timestep).
INTERRUPT_POINTS = {
    "sampling": ("9", "ply sequence"),
    "decoding": ("10", "ply sequence"),
    "reconstruction": ("16", "ply sequence"),
    "saving ply": ("17", "ply sequence"),
    "saving spz": ("17", "spz"),
}


def output_entries(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def interrupt_at_gate(server, prompt: dict, node_id: str, after: int = 1, timeout: float = 240) -> dict:
    """Queue `prompt`, hold `node_id` after its step `after` (tests/comfy_test_nodes/gate.py), POST
    /interrupt while it is held, and return the prompt's history entry."""
    from comfy_test_nodes.gate import ARM_FILE

    prompt_id = uuid.uuid4().hex
    reached = server.base / "temp" / f"gate_{prompt_id}"
    arm = server.base / "temp" / ARM_FILE
    arm.parent.mkdir(parents=True, exist_ok=True)
    arm.with_suffix(".tmp").write_text(json.dumps({"prompt_id": prompt_id, "node_id": node_id, "after": after,
                                                   "reached": reached.name}))
    arm.with_suffix(".tmp").replace(arm)  # the gate never reads half a file
    try:
        server.queue(prompt, prompt_id=prompt_id)
        deadline = time.monotonic() + timeout
        while not reached.exists():
            entry = server.history(prompt_id)
            assert not (entry and entry["status"].get("completed") is not None), \
                f"the prompt ended before node {node_id} reached step {after}: {entry['status']}"
            assert time.monotonic() < deadline, f"node {node_id} did not reach step {after} in {timeout} s"
            time.sleep(0.05)
        server.interrupt(prompt_id)
        return server.wait(prompt_id, timeout=120, allow_error=True)
    finally:
        arm.unlink(missing_ok=True)


@pytest.mark.parametrize("stage", list(INTERRUPT_POINTS))
def test_interrupt_inside_a_node_leaves_no_partial_output_and_the_base_model_as_before(comfy_server, stage):
    """An interrupt landing inside sampling, the pack's decoding, reconstruction or saving: the prompt
    stops in that node, nothing half-written is left in the output folder, and the next prompt (the
    plain Wan graph, no Fuse4D node) samples exactly what it sampled before any Fuse4D run, from a
    model carrying the same options, wrappers, patches and weights."""
    node_id, fmt = INTERRUPT_POINTS[stage]
    slug = stage.replace(" ", "_")
    prompt = swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"), comfy_server)
    prompt["9"]["inputs"]["seed"] = 500 + list(INTERRUPT_POINTS).index(stage)  # nothing cached: every node runs
    prompt["17"]["inputs"]["format"] = fmt
    for node in prompt.values():
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = f"interrupt_{slug}/" + node["inputs"]["filename_prefix"].split("/")[-1]
    before = output_entries(comfy_server.output_dir)

    entry = interrupt_at_gate(comfy_server, prompt, node_id)
    stopped = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_interrupted"]
    assert stopped and stopped[0]["node_id"] == node_id, entry["status"]["messages"]
    assert node_id not in stopped[0]["executed"]

    new = output_entries(comfy_server.output_dir) - before
    assert not [p for p in new if any(part.startswith(".") or "partial" in part for part in p.parts)], new
    assert not [p for p in new if p.suffix in (".ply", ".spz", ".json") or "splats" in p.name], new
    if stage in ("sampling", "decoding"):
        assert not new, new  # every save node is downstream
    for path in (comfy_server.output_dir / p for p in new if (comfy_server.output_dir / p).is_file()):
        assert path.suffix in (".png", ".webp"), path
        with Image.open(path) as image:  # an image an earlier node saved is whole
            image.load()

    after = run_base_model(comfy_server, prefix=f"interrupt_{slug}/base")
    assert after["sampled"], "the sampler's output came from the cache: nothing was compared"
    assert after["state"] == comfy_server.baseline["state"], "the base MODEL differs from before any Fuse4D run"
    assert torch.equal(after["latent"], comfy_server.baseline["latent"]), \
        "the unpatched run after the interrupt is not bit-identical to the base model's first run"


def test_bad_image_count_gives_clear_error(comfy_server):
    prompt = bad_image_count_prompt(comfy_server, "bad")
    write_scene_ply(comfy_server.input_dir / "scene.ply")
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


def _player_prompt() -> dict:
    return {
        "1": {"class_type": "Fuse4DLoad4DSplats", "inputs": {"sequence": "player_seq"}},
        "2": {"class_type": "Fuse4DSave4DSplats", "inputs": {"gaussians": ["1", 0], "filename_prefix": "player/seq",
                                                            "format": "ply sequence", "fps": 0.0}},
    }


PLAYER_NODE = "window.comfyAPI.app.app.graph.getNodeById(2)"
BACKGROUND = np.array([16, 16, 20], dtype=np.float32)  # the player's clear colour


def _coverage(image: np.ndarray) -> float:
    return float((np.abs(image - BACKGROUND).sum(-1) > 30).mean())


def test_4d_player_in_headless_chromium(comfy_server):
    """The real ComfyUI frontend: the UI-format example workflows open and queue what the API-format
    ones say; then load a workflow, queue it from the page, and the Save 4D Splats node shows the
    player; a screenshot of it is not blank, and a click on the time slider changes it.

    The frontend is ComfyUI's pinned comfyui-frontend-package; to run against another one, set
    FUSE4D_COMFY_FRONTEND_ROOT to its static folder (e.g. ``comfyui_frontend_package/static`` of an
    unpacked wheel: ``pip download comfyui-frontend-package==1.45.20 --no-deps``, ComfyUI 0.27.0's pin);
    the server is then started with ``--front-end-root``."""
    from comfy_browser import Browser, ensure_chromium, open_comfy, ui_to_prompt

    ensure_chromium()  # Debian's chromium, installed at test time when missing (as root)
    _moving_sequence(comfy_server.input_dir / "player_seq")
    # No first-run template dialog over the canvas.
    settings = comfy_server.base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    browser = Browser()
    shots = comfy_server.base
    try:
        open_comfy(browser, comfy_server.url)
        # The UI-format example workflows (what the Templates browser opens) are the API-format ones.
        for api_path in sorted(WORKFLOWS.glob("*.json")):
            api = json.loads(api_path.read_text())
            ui = json.loads((WORKFLOWS.parent / api_path.name).read_text())
            queued = ui_to_prompt(browser, ui, api_path.name)
            assert sorted(queued) == sorted(api), f"{api_path.name}: other nodes in the UI workflow"
            for nid, node in api.items():
                assert (queued[nid]["class_type"], queued[nid]["inputs"]) == (node["class_type"], node["inputs"]), \
                    f"{api_path.name}: node {nid} ({node['class_type']}) differs between the UI and API files"
        browser.evaluate(f"""(async () => {{
            const app = window.comfyAPI.app.app;
            await app.loadApiJson({json.dumps(_player_prompt())}, "fuse4d_player_test.json");
            const node = {PLAYER_NODE};
            node.pos = [360, 40];
            app.canvas.ds.scale = 1;
            app.canvas.ds.offset = [0, 0];
            app.canvas.setDirty(true, true);
            await app.queuePrompt(0, 1);
            return true;
        }})()""", timeout=60)
        browser.wait_for(f"(() => {{ const n = {PLAYER_NODE}; return n && (n.fuse4dPlayer || n.fuse4dError); }})()",
                         timeout=150)
        error = browser.evaluate(f"{PLAYER_NODE}.fuse4dError")
        assert not error, f"the player failed in the node: {error}"
        info = browser.evaluate(f"{PLAYER_NODE}.fuse4dInfo")
        assert len(info["files"]) == 3 and all((comfy_server.output_dir / info["subfolder"] / f).stat().st_size
                                                for f in info["files"])
        assert browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.frames") == 3

        def rect(expr: str) -> dict:
            return browser.evaluate(f"(() => {{ const r = {expr}.getBoundingClientRect();"
                                    " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")

        def settled(previous: np.ndarray | None, timeout: float = 40) -> np.ndarray:
            # Spark loads and sorts splats asynchronously: poll (bounded) until the picture has
            # content and, after a change of time, differs from the previous one.
            deadline = time.monotonic() + timeout
            while True:
                box = rect(f"{PLAYER_NODE}.fuse4dPlayer.canvas")
                image = browser.screenshot(box)
                ok = _coverage(image) > 0.02 and (previous is None or (previous.shape == image.shape and
                                                                        np.abs(image - previous).mean() > 2.0))
                if ok or time.monotonic() > deadline:
                    return image
                time.sleep(0.5)

        box = rect(f"{PLAYER_NODE}.fuse4dPlayer.canvas")
        assert box["width"] > 100 and box["height"] > 80, f"the player is not visible in the node: {box}"
        first = settled(None)
        Image.fromarray(first.astype(np.uint8)).save(shots / "player_t0.png")
        Image.fromarray(browser.screenshot().astype(np.uint8)).save(shots / "player_page.png")
        assert _coverage(first) > 0.02 and first.std() > 5, f"player is blank (coverage {_coverage(first):.3f})"

        # A real click at the right end of the time slider moves it to the last timestep.
        s = rect(f"{PLAYER_NODE}.fuse4dPlayer.slider")
        browser.click(s["x"] + s["width"] - 2, s["y"] + s["height"] / 2)
        assert browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.time") == 2
        moved = settled(first)
        Image.fromarray(moved.astype(np.uint8)).save(shots / "player_t2.png")
        assert np.abs(moved - first).mean() > 2.0, "moving the time slider did not change the picture"
        assert _coverage(moved) > 0.02, "the new timestep is blank"

        # Play / pause: time advances while playing and stops when paused.
        b = rect(f"{PLAYER_NODE}.fuse4dPlayer.playButton")
        browser.click(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        assert browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.playing") is True
        browser.wait_for(f"{PLAYER_NODE}.fuse4dPlayer.time !== 2", timeout=20)
        browser.click(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        assert browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.playing") is False
        paused = browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.time")
        time.sleep(1.0)
        assert browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.time") == paused
        # Paused and settled, the player stops drawing (it costs nothing in an idle ComfyUI tab).
        deadline = time.monotonic() + 20
        while True:
            before = browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.drawCount")
            time.sleep(1.0)
            idle = browser.evaluate(f"{PLAYER_NODE}.fuse4dPlayer.drawCount") == before
            if idle or time.monotonic() > deadline:
                break
        assert idle, "the paused player keeps redrawing"

        # The same node saving .spz per timestep: the player reads those too (Spark's SPZ loader).
        browser.evaluate(f"""(async () => {{
            const node = {PLAYER_NODE};
            node.widgets.find((w) => w.name === "format").value = "spz";
            await window.comfyAPI.app.app.queuePrompt(0, 1);
            return true;
        }})()""", timeout=60)
        browser.wait_for(f"(() => {{ const n = {PLAYER_NODE}; return n.fuse4dInfo.format === 'spz'"
                         " && (n.fuse4dPlayer || n.fuse4dError); })()", timeout=150)
        error = browser.evaluate(f"{PLAYER_NODE}.fuse4dError")
        assert not error, f"the player failed on the .spz sequence: {error}"
        info = browser.evaluate(f"{PLAYER_NODE}.fuse4dInfo")
        assert [f.endswith(".spz") for f in info["files"]] == [True] * 3
        spz = settled(None)
        Image.fromarray(spz.astype(np.uint8)).save(shots / "player_spz_t0.png")
        assert _coverage(spz) > 0.02 and spz.std() > 5, "the .spz sequence shows nothing"
        assert np.abs(spz - first).mean() < 4.0, "the .spz timestep 0 does not look like the PLY one (orientation?)"
    finally:
        browser.close()


def test_committed_player_bundle_matches_sources():
    """web/fuse4d_player.js (committed, so users need no npm) was built from the committed sources."""
    import hashlib

    from comfy_runtime import REPO

    web = REPO / "web"
    digest = hashlib.sha256()
    for name in [*sorted(f"src/{p.name}" for p in (web / "src").glob("*.mjs")), "package-lock.json"]:
        digest.update(name.encode() + b"\n" + (web / name).read_bytes() + b"\n")
    head = (web / "fuse4d_player.js").read_text()[:400]
    assert f"fuse4d-sources-sha256: {digest.hexdigest()}" in head, \
        "web/fuse4d_player.js is stale: run `npm ci && node build.mjs` in web/"
