# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for tests against a real ComfyUI server (one server per test session).

Import the fixtures you need in a test module: ``from conftest_comfy import comfy_server``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from comfy_runtime import CACHE, REPO, ComfyServer, ensure_comfyui, free_port, link_custom_node, run_with_comfy_path

WORKFLOWS = REPO / "example_workflows" / "api"  # API format (POST /prompt); the UI format is one up
TINY_DIR = CACHE / "comfy_tiny_models"
TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"
RECON_WEIGHTS = "fuse4d_tiny_recon.safetensors"


def tiny_reconstructor() -> Path:
    """A tiny random Fuse4D reconstructor (core.recon), cached in .cache/comfy_tiny_models/fuse4d."""
    from fuse4d.core.recon import write_tiny_reconstructor

    path = TINY_DIR / "fuse4d" / RECON_WEIGHTS
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.safetensors")
        write_tiny_reconstructor(partial, seed=0)
        partial.rename(path)
    return path


def _tiny_models() -> dict:
    """Tiny random Wan DiT / VAE in ComfyUI's layout (written where ComfyUI is importable) and the tiny
    reconstructor, cached in .cache/comfy_tiny_models."""
    names = run_with_comfy_path(
        "import json\nfrom comfy_tiny_models import write_tiny_models\n"
        f"print(json.dumps(write_tiny_models({str(TINY_DIR)!r})))\n")
    names["fuse4d"] = tiny_reconstructor().name
    return names


def start_tiny_server(base: Path) -> ComfyServer:
    """A started ComfyUI in `base` with the Fuse4D pack, the test nodes and the tiny models linked in
    (`server.tiny`: the model file names)."""
    ensure_comfyui()
    names = _tiny_models()
    link_custom_node(base, "fuse4d", REPO)
    link_custom_node(base, "fuse4d_test_nodes", TEST_NODES)
    for sub, name in names.items():
        (base / "models" / sub).mkdir(parents=True, exist_ok=True)
        (base / "models" / sub / name).symlink_to(TINY_DIR / sub / name)
    server = ComfyServer(base, free_port())
    server.tiny = names
    return server.start()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    server = start_tiny_server(tmp_path_factory.mktemp("comfyui"))
    # The base model's output and state before any Fuse4D prompt ran in this server (seconds).
    server.baseline = run_base_model(server)
    yield server
    server.stop()


def base_model_prompt(server, prefix: str) -> dict:
    """The plain Wan graph (no Fuse4D node): the example workflow's model loader and model sampling
    (same node ids and inputs, so ComfyUI hands it the very MODEL objects the Fuse4D prompts patch
    clones of), a stock video latent, 2 sampling steps, the latent saved as safetensors (exact)."""
    t2v = swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"), server)
    return {
        "1": t2v["1"], "2": t2v["2"],
        "base_pos": {"class_type": "Fuse4DTestTinyText", "inputs": {"text": "a base model run"}},
        "base_neg": {"class_type": "Fuse4DTestTinyText", "inputs": {"text": "blurry"}},
        "base_latent": {"class_type": "EmptyHunyuanLatentVideo",
                        "inputs": {"width": 64, "height": 48, "length": 5, "batch_size": 1}},
        "base_sampler": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 7, "steps": 2, "cfg": 6.0, "sampler_name": "uni_pc", "scheduler": "simple",
            "positive": ["base_pos", 0], "negative": ["base_neg", 0], "latent_image": ["base_latent", 0],
            "denoise": 1.0}},
        "base_save": {"class_type": "SaveLatent", "inputs": {"samples": ["base_sampler", 0],
                                                             "filename_prefix": prefix}},
        "base_state": {"class_type": "Fuse4DTestModelState", "inputs": {"model": ["2", 0]}},
    }


def run_base_model(server, prefix: str = "base/latent") -> dict:
    """Run the base model graph: {"latent": the sampled tensor as saved, "state": the MODEL's
    patches and weights digest (JSON), "sampled": whether the sampler ran (not a cached output)}."""
    from safetensors.torch import load_file

    entry = server.run(base_model_prompt(server, prefix))
    saved = entry["outputs"]["base_save"]["latents"][0]
    latent = load_file(server.output_dir / saved["subfolder"] / saved["filename"])["latent_tensor"]
    cached = [m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    return {"latent": latent, "state": entry["outputs"]["base_state"]["text"][0],
            "sampled": not any("base_sampler" in nodes for nodes in cached)}


def small_scene(step: int = 6):
    """The core's sample scene thinned to every `step`-th Gaussian: the CPU rasterizer renders it in a
    fraction of the time, and it still has texture, several objects and depth."""
    from fuse4d.core.scene import sample_scene

    return sample_scene(0)[::step]


def write_scene_ply(path: Path) -> None:
    from fuse4d.core.io import write_ply

    if not path.exists():
        write_ply(path, small_scene().to_arrays())


def bad_image_count_prompt(server, prefix: str) -> dict:
    """A graph the pack must refuse with a clear error: 3 frozen-time images for a grid of 2 views
    (reads `scene.ply` from the input folder: `write_scene_ply`)."""
    return {
        "1": {"class_type": "Fuse4DLoadSplat", "inputs": {"splat": "scene.ply"}},
        "2": {"class_type": "Fuse4DRenderFrozenTimeViews", "inputs": {
            "splat": ["1", 0], "views": 3, "width": 32, "height": 32, "radius": 0.0, "elevation_deg": 10.0,
            "arc_deg": 40.0, "fov_deg": 50.0}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": server.tiny["vae"]}},
        "4": {"class_type": "Fuse4DEmpty4DLatent", "inputs": {"vae": ["3", 0], "width": 32, "height": 32,
                                                             "views": 2, "frames": 5, "batch_size": 1}},
        "5": {"class_type": "Fuse4DReferenceFrames", "inputs": {"vae": ["3", 0], "latent": ["4", 0],
                                                               "frozen_time": ["2", 0]}},
        "6": {"class_type": "Fuse4DDecode4DGrid", "inputs": {"vae": ["3", 0], "samples": ["5", 0], "views": 0}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def downstream(workflow: dict, roots: set[str]) -> set[str]:
    """Node ids that depend (transitively) on any of `roots`, roots included."""
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for nid, node in workflow.items():
            if nid in found:
                continue
            for value in node["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and str(value[0]) in found:
                    found.add(nid)
                    changed = True
                    break
    return found


def swap_tiny(workflow: dict, server, steps: int = 2, size=(64, 48), frames: int = 5) -> dict:
    """The example workflow with tiny models and sizes (nothing is left out).

    The 11 GB umT5 text encoder becomes a test node making random 4096-wide embeddings; Wan DiT / VAE
    files become tiny random ones in ComfyUI's layout (Wan 2.1 layout also for the Wan 2.2 graph);
    the reconstructor becomes a tiny random Fuse4D checkpoint.
    """
    wf = copy.deepcopy(workflow)
    for nid, node in list(wf.items()):
        cls, inputs = node["class_type"], node["inputs"]
        if cls == "UNETLoader":
            inputs["unet_name"] = server.tiny["diffusion_models"]
        elif cls == "VAELoader":
            inputs["vae_name"] = server.tiny["vae"]
        elif cls == "CLIPLoader":
            del wf[nid]
        elif cls == "CLIPTextEncode":
            wf[nid] = {"class_type": "Fuse4DTestTinyText", "inputs": {"text": inputs["text"]}}
        elif cls in ("Fuse4DEmpty4DLatent", "Fuse4DRenderFrozenTimeViews"):
            inputs["width"], inputs["height"] = size
            if "frames" in inputs:
                inputs["frames"] = frames
        elif cls == "Fuse4DRender4D":
            inputs["width"], inputs["height"] = 32, 24  # the CPU rasterizer: keep renders small
        elif cls == "KSampler":
            inputs["steps"] = steps
        elif cls == "Fuse4DLoadReconstructor":
            inputs["weights"] = f"fuse4d/{server.tiny['fuse4d']}"
    return wf
