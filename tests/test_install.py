# SPDX-License-Identifier: GPL-3.0-or-later
"""Installing as the ecosystems do: ComfyUI-Manager and the Comfy Registry leave a user's torch and numpy
alone, the pack then loads and runs in a ComfyUI without the optional extras; the metadata follows the
Registry's rules; the Blender extension passes Blender's own validator and the platform's rules."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tokenize
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

from comfy_install import (NOT_IN_COMFYUI, comfyui_env_without_extras, env_python, forget, freeze,
                           install_declared, install_like_manager, place_pack, registry_files, torch213_env,
                           tracked_files)
from comfy_runtime import COMFY_DIR, REPO, ComfyServer, ensure_comfyui, free_port
from conftest_comfy import load_workflow, small_scene, swap_tiny, tiny_reconstructor

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT, COMFY = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
EXPECTED_NODES = {
    "Fuse4DFusedViewTimeAttention", "Fuse4DEmpty4DLatent", "Fuse4DReferenceFrames", "Fuse4DDecode4DGrid",
    "Fuse4DGridSlice", "Fuse4DLoadReconstructor", "Fuse4DReconstruct4DGaussians", "Fuse4DSave4DSplats",
    "Fuse4DRender4D", "Fuse4DLoadSplat", "Fuse4DRenderFrozenTimeViews", "Fuse4DLoad4DSplats", "Fuse4DSplatFrame",
}


def requirement_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


# --- dependencies by role ------------------------------------------------------------------------------
def test_runtime_dependencies_are_only_what_comfyui_requires():
    """The package metadata a ComfyUI install reads asks for nothing ComfyUI doesn't already require,
    and never for less than ComfyUI allows: no pins, no caps, floors no higher than ComfyUI's own."""
    ensure_comfyui()
    comfy = {r.name.lower(): r for r in map(Requirement, requirement_lines(COMFY_DIR / "requirements.txt"))}
    for dep in map(Requirement, PROJECT["dependencies"]):
        assert dep.name.lower() in comfy, f"{dep.name} is not one of ComfyUI's requirements"
        for spec in dep.specifier:
            assert spec.operator == ">=", f"{dep}: only floors, never pins or caps"
            theirs = [s.version for s in comfy[dep.name.lower()].specifier if s.operator == ">="]
            assert theirs and tuple(map(int, spec.version.split("."))) <= tuple(map(int, theirs[0].split("."))), \
                f"{dep}: a floor above ComfyUI's own ({comfy[dep.name.lower()]})"
    # Manager reads requirements.txt, the Registry the declared dependencies: the same list
    assert requirement_lines(REPO / "requirements.txt") == PROJECT["dependencies"]


def test_extras_and_the_exact_pins_of_the_fresh_machine_set_up():
    extras = PROJECT["optional-dependencies"]
    assert extras["gsplat"] == ["gsplat"] and {"diffusers", "transformers"} <= set(extras["wan"])
    pins = dict(line.split("==") for line in requirement_lines(REPO / "constraints.txt"))
    assert all(re.fullmatch(r"[\w.+-]+", v) for v in pins.values()), "constraints.txt pins exact versions only"
    # README's promise: one torch build for CPU and CUDA; numpy below 2 for bpy 4.5
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1" and pins["numpy"].startswith("1.")
    for extra in ("gsplat", "wan", "test", "blender"):
        for dep in map(Requirement, extras[extra]):
            assert dep.name in pins, f"{dep.name} (extra {extra}) has no exact version in constraints.txt"


def test_install_py_does_nothing_when_comfyui_manager_runs_it(tmp_path):
    """Manager (and the Registry's installer) run `python install.py` in the pack's folder after its
    requirements: it must not build a .venv there or install anything."""
    pack = place_pack(["install.py", "pyproject.toml", "constraints.txt"], tmp_path / "custom_nodes")
    proc = subprocess.run([sys.executable, "install.py"], cwd=pack, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1
    assert not (pack / ".venv").exists()


# --- a missing extra: one line ---------------------------------------------------------------------------
def test_missing_gsplat_on_cuda_is_one_line_and_falls_back(monkeypatch, caplog):
    import torch

    from fuse4d.core import extras
    from fuse4d.core.render import pick_backend

    monkeypatch.setitem(sys.modules, "gsplat", None)  # as if not installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(extras, "_told", set())
    cuda = torch.device("cuda")
    with caplog.at_level(logging.WARNING, logger="fuse4d"):
        assert pick_backend("auto", cuda) == "torch" and pick_backend("auto", cuda) == "torch"
    told = [r.getMessage() for r in caplog.records if "gsplat" in r.getMessage()]
    assert len(told) == 1 and "'gsplat' extra" in told[0] and "PyTorch rasterizer" in told[0]
    with pytest.raises(ValueError, match=r"CUDA rendering with gsplat needs .*'gsplat' extra"):
        pick_backend("gsplat", cuda)


# --- metadata the Comfy Registry checks --------------------------------------------------------------------
def test_registry_metadata_follows_the_registry_rules():
    """The rules of docs.comfy.org/registry/specifications and of comfy-cli's `comfy node validate`
    (config_parser.py: version, license, classifiers, requires-comfyui; ruff S102, S307, E702)."""
    name = PROJECT["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([._-][A-Za-z0-9]+)*", name)
    assert "comfy" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", PROJECT["version"])
    assert isinstance(PROJECT["license"], str) and PROJECT["license"] == "GPL-3.0-or-later"
    assert PROJECT["urls"]["Repository"].startswith("https://github.com/")
    oses = [c.split(" :: ", 1)[1] for c in PROJECT["classifiers"] if c.startswith("Operating System :: ")]
    assert oses and all(o.split(" :: ")[0] in {"Microsoft", "POSIX", "MacOS", "OS Independent"} for o in oses)
    accel = [c.split(" :: ", 1)[1] for c in PROJECT["classifiers"] if c.startswith("Environment :: ")]
    assert set(accel) <= {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                          "GPU :: Apple Metal"}
    version_part = r"(==|>=|<=|!=|~=|>|<|<>|=)?\s*\d+\.\d+\.\d+(-[a-zA-Z0-9]+)?"
    assert all(re.fullmatch(version_part, p.strip()) for p in COMFY["requires-comfyui"].split(","))
    assert re.fullmatch(r"[a-z][a-z0-9-]*", COMFY["PublisherId"]) and COMFY["DisplayName"].strip()
    # The icon is a square image of this repository, addressed by its raw URL
    repo_path = PROJECT["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo_path}/main/"
    assert COMFY["Icon"].startswith(prefix)
    icon = COMFY["Icon"].removeprefix(prefix)
    assert icon in tracked_files()
    with Image.open(REPO / icon) as im:
        assert im.width == im.height <= 400 and im.format == "PNG"
    # comfy node validate runs `ruff check --select S102,S307,E702` (exec, eval, `a; b`): none in shipped code
    for rel in (f for f in registry_files() if f.endswith(".py")):
        with open(REPO / rel, "rb") as fh:
            toks = list(tokenize.tokenize(fh.readline))
        for i, tok in enumerate(toks):
            assert not (tok.type == tokenize.OP and tok.string == ";"), f"{rel}:{tok.start[0]}: two statements"
            if tok.type == tokenize.NAME and tok.string in ("exec", "eval") and toks[i - 1].string != ".":
                assert toks[i + 1].string != "(", f"{rel}:{tok.start[0]}: {tok.string}()"


def test_registry_package_holds_the_pack_and_nothing_else():
    files = registry_files()
    for needed in ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md",
                   "comfy_nodes/__init__.py", "core/render/torch_raster.py", "core/io/ply.py", "web/fuse4d_player.js"):
        assert needed in files, needed
    for include in COMFY["includes"]:  # the web bundle and the example workflows (Templates browser)
        assert any(f.startswith(include + "/") for f in files), include
    assert {p.name for p in (REPO / "example_workflows").glob("*.json")} <= {Path(f).name for f in files}
    assert not [f for f in files if f.split("/")[0] in ("tests", "studies", "bench", "weights", ".ci")]
    assert "install.py" not in files and "constraints.txt" not in files
    size = sum((REPO / f).stat().st_size for f in files)
    assert size < 8_000_000, f"{size} bytes"


# --- installs as the tools do ------------------------------------------------------------------------------
def test_manager_and_registry_installs_keep_a_users_torch_and_numpy(tmp_path):
    """A user's environment with another torch (2.13.0, CPU) and numpy 2.x: ComfyUI-Manager's install
    (requirements.txt line by line, then install.py) and the Registry's (declared dependencies) change
    nothing in it; the pack's core then runs there, and a command needing a missing extra says so in a line."""
    env = torch213_env()
    py = env_python(env)
    before = freeze(py)
    assert before["torch"].startswith("2.13.0") and before["numpy"].startswith("2.")
    try:
        clone = place_pack(tracked_files(), tmp_path / "manager" / "custom_nodes")
        manager = install_like_manager(py, clone)
        registry = place_pack(registry_files(), tmp_path / "registry" / "custom_nodes")
        install_declared(py, registry)
        after = freeze(py)
        assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                                 if before.get(k) != after.get(k)}
    except BaseException:
        forget(env)
        raise
    assert "nothing to do" in manager and not (clone / ".venv").exists()

    # the Registry copy's core on the user's torch and numpy (custom_nodes/fuse4d is the package fuse4d)
    def fuse4d(pack: Path, *args) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(pack.parent), OMP_NUM_THREADS="1", TQDM_DISABLE="1")
        return subprocess.run([py, "-m", "fuse4d", *args], capture_output=True, text=True, env=env, timeout=300)

    proc = fuse4d(registry, "render", "sample", "--cameras", "orbit:2", "--size", "24x24", "--out", tmp_path / "v")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.asarray(Image.open(tmp_path / "v" / "view_00.png")).std() > 1.0
    # the clone has the CLI's shipped models, but this environment lacks the 'wan' extra
    proc = fuse4d(clone, "demo", "--out", tmp_path / "demo")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line, = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("fuse4d demo: error:") and "'wan' extra" in line and "diffusers" in line


def _reconstruct_inputs(server: ComfyServer, timesteps: int = 2) -> None:
    from fuse4d.core.cameras import orbit_cameras
    from fuse4d.core.render import render

    rgb = render(small_scene(), orbit_cameras(4, 3.0, 15.0, 60.0, width=56, height=56)).rgb.clamp(0, 1).numpy()
    frames = [Image.fromarray((np.roll(rgb[v], t * 2, axis=1) * 255).astype(np.uint8))
              for v in range(4) for t in range(timesteps)]
    frames[0].save(server.input_dir / "grid_4x4.webp", save_all=True, append_images=frames[1:], lossless=True)


def test_registry_install_into_a_comfyui_without_the_extras_serves_every_node(tmp_path):
    """ComfyUI's own environment as users have it (numpy 2.x, no gsplat, no diffusers): the Registry
    package installs without changing it, ComfyUI starts with every Fuse4D node and runs a workflow
    (the CPU rasterizer renders)."""
    ensure_comfyui()
    env = comfyui_env_without_extras()
    py = env_python(env)
    before = freeze(py)
    assert before["numpy"].startswith("2.") and not set(NOT_IN_COMFYUI) & set(before)
    base = tmp_path / "comfyui"
    try:
        pack = place_pack(registry_files(), base / "custom_nodes")
        install_declared(py, pack)
        assert freeze(py) == before
    except BaseException:
        forget(env)
        raise
    recon = tiny_reconstructor()
    (base / "models" / "fuse4d").mkdir(parents=True)
    (base / "models" / "fuse4d" / recon.name).symlink_to(recon)
    server = ComfyServer(base, free_port(), python=str(py))
    server.tiny = {"fuse4d": recon.name}
    server.start()
    try:
        assert EXPECTED_NODES <= set(server.object_info())
        log = server.log_tail(400)
        assert "IMPORT FAILED" not in log and "Traceback" not in log, log
        _reconstruct_inputs(server)
        wf = swap_tiny(load_workflow("reconstruct_only.json"), server)
        entry = server.run(wf, timeout=300)
    finally:
        server.stop()
    splats = [o["fuse4d_splats"][0] for o in entry["outputs"].values() if "fuse4d_splats" in o]
    manifest = json.loads((server.output_dir / splats[0]["subfolder"] / "manifest.json").read_text())
    assert manifest["timesteps"] == 2 and manifest["views"] == 4
    pngs = [server.output_dir / i["subfolder"] / i["filename"] for o in entry["outputs"].values()
            for i in o.get("images", [])]
    assert len(pngs) == 4 and all(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).std() > 1.0
                                  for p in pngs)


# --- the Blender extension, as Blender's extension platform checks it ---------------------------------------
def _blender_ext_cli() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("bpy")
    if spec is None:
        pytest.skip("Blender as a Python module (pip install bpy==4.5.*) is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    scripts = next(root.glob("[0-9]*.[0-9]*/scripts"))
    return (scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py",
            scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py")


def test_blender_extension_passes_blenders_validator_and_the_platform_rules(tmp_path):
    """`blender --command extension validate` (Blender's own blender_ext.py with Blender's tag list), plus
    what extensions.blender.org requires of an add-on: GPL-3.0-or-later, a reason for every permission, no
    bundled wheels unless declared, nothing but the add-on's source and data."""
    from fuse4d.blender_addon import build

    cli, tags = _blender_ext_cli()
    zip_path = build.build(tmp_path)
    proc = subprocess.run([sys.executable, cli, "validate", "--valid-tags", tags, zip_path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "FATAL" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert manifest["type"] == "add-on"
    for permission, reason in manifest["permissions"].items():
        assert permission in {"files", "network", "clipboard", "camera", "microphone"}
        assert 0 < len(reason) <= 64 and reason[0].isupper() and not reason.endswith("."), (permission, reason)
    wheels = [n for n in names if n.endswith(".whl")]
    assert sorted(wheels) == sorted(w.removeprefix("./") for w in manifest.get("wheels", []))
    assert all(n.endswith((".py", ".toml", ".json")) for n in names if not n.endswith(".whl")), names
    assert sum(i.file_size for i in zipfile.ZipFile(zip_path).infolist()) < 2_000_000
