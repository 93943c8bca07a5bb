# SPDX-License-Identifier: GPL-3.0-or-later
"""Installing the node pack the way ComfyUI's tools do, into user-like environments (for test_install.py).

- ComfyUI-Manager (git install): clones the repository into custom_nodes/, runs `pip install LINE` for each
  line of requirements.txt in ComfyUI's Python, then `python install.py` in the pack's folder.
- The Comfy Registry: `comfy node publish` uploads the git-tracked files minus .comfyignore (plus
  [tool.comfy] includes); an install unpacks them into custom_nodes/ and installs the declared dependencies.

The environments are built once into .cache/user_envs/ (git-ignored) and reused while their stamp holds.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from comfy_runtime import CACHE, REPO

ENVS = CACHE / "user_envs"
# A user's environment with another torch than install.py's (the CPU build of 2.13.0 that lies on this
# machine) and numpy 2.x, holding what ComfyUI provides of the pack's needs.
TORCH213_SPECS = ["torch==2.13.0", "numpy>=2,<3", "safetensors>=0.4.2", "pillow", "tqdm"]
# Optional extras a plain ComfyUI lacks (transformers is one of ComfyUI's own requirements: it stays).
NOT_IN_COMFYUI = ["gsplat", "diffusers"]


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc


def freeze(python: Path) -> dict[str, str]:
    """name -> version of every distribution in that environment."""
    out = run([python, "-m", "pip", "list", "--format=freeze"]).stdout
    return dict(line.split("==", 1) for line in out.splitlines() if "==" in line)


# --- the files each tool puts into custom_nodes/ -------------------------------------------------------
def tracked_files() -> list[str]:
    return run(["git", "ls-files"], cwd=REPO).stdout.splitlines()


def _comfyignore() -> list[str]:
    lines = [ln.strip() for ln in (REPO / ".comfyignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    for pattern in patterns:  # the subset of gitignore syntax this check understands
        assert pattern.startswith("/") and not any(c in pattern for c in "*?[!"), pattern
    return patterns


def _ignored(path: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        name = pattern.lstrip("/")
        if (name.endswith("/") and path.startswith(name)) or path == name:
            return True
    return False


def registry_files() -> list[str]:
    """What `comfy node publish` packs: tracked files not matched by .comfyignore, plus [tool.comfy] includes."""
    patterns = _comfyignore()
    includes = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"].get("includes", [])
    files = [f for f in tracked_files() if not _ignored(f, patterns)]
    for inc in includes:
        root = REPO / inc
        extra = [str(p.relative_to(REPO)) for p in root.rglob("*") if p.is_file()] if root.is_dir() else [inc]
        files += [f for f in extra if f not in files and "__pycache__" not in f and "node_modules" not in f]
    return sorted(files)


def place_pack(files: list[str], custom_nodes: Path, name: str = "fuse4d") -> Path:
    """Copy the pack's files into custom_nodes/<name> (a clone or an unpacked Registry zip)."""
    target = custom_nodes / name
    if target.exists():
        shutil.rmtree(target)
    for rel in files:
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    return target


def install_like_manager(python: Path, pack: Path) -> str:
    """ComfyUI-Manager's post-clone step: one `pip install LINE` per requirements line, then install.py."""
    log = []
    for line in (pack / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            log.append(run([python, "-m", "pip", "install", line], cwd=pack).stdout)
    if (pack / "install.py").exists():
        log.append(run([python, "install.py"], cwd=pack).stdout)
    return "".join(log)


def install_declared(python: Path, pack: Path) -> str:
    """The Registry's declared dependencies ([project].dependencies), installed into the environment."""
    deps = tomllib.loads((pack / "pyproject.toml").read_text())["project"]["dependencies"]
    return run([python, "-m", "pip", "install", *deps], cwd=pack).stdout


# --- user-like environments ----------------------------------------------------------------------------
def _stamped(env: Path, key: str) -> bool:
    stamp = env / ".fuse4d-env-stamp"
    return env_python(env).exists() and stamp.exists() and stamp.read_text() == key


def _stamp(env: Path, key: str) -> None:
    (env / ".fuse4d-env-stamp").write_text(key)


def forget(env: Path) -> None:
    """After a failed install check the environment may have changed: rebuild it next time."""
    (env / ".fuse4d-env-stamp").unlink(missing_ok=True)


def torch213_env() -> Path:
    """A venv holding torch 2.13.0 (CPU) and numpy 2.x, and no ComfyUI (nothing there can import it)."""
    env = ENVS / "torch213"
    key = "\n".join(TORCH213_SPECS)
    if not _stamped(env, key):
        shutil.rmtree(env, ignore_errors=True)
        venv.EnvBuilder(with_pip=True).create(env)
        py = env_python(env)
        # only from this machine's files (pip's find-links): elsewhere PyPI would send a CUDA build of GBs
        local = subprocess.run([py, "-m", "pip", "install", "-q", "--no-compile", "--no-index", "--no-deps",
                                TORCH213_SPECS[0]], capture_output=True, text=True)
        if local.returncode != 0:
            shutil.rmtree(env, ignore_errors=True)
            pytest.skip(f"no local {TORCH213_SPECS[0]} wheel on this machine (pip's find-links) for the "
                        "different-torch environment")
        run([py, "-m", "pip", "install", "-q", "--no-compile", *TORCH213_SPECS])
        _stamp(env, key)
    return env


def _site_packages(env: Path) -> Path:
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def comfyui_env_without_extras() -> Path:
    """ComfyUI's environment as a user has it: this venv's ComfyUI requirements and torch, hard-linked
    (no second copy of torch on disk), with numpy 2.x, without gsplat and diffusers, and without Fuse4D."""
    env = ENVS / "comfyui_numpy2"
    ours = Path(sys.prefix)
    key = hashlib.sha256(run([sys.executable, "-m", "pip", "list", "--format=freeze"]).stdout.encode()).hexdigest()
    if not _stamped(env, key):
        shutil.rmtree(env, ignore_errors=True)
        venv.EnvBuilder(with_pip=False).create(env)
        src, dst = _site_packages(ours), _site_packages(env)
        shutil.rmtree(dst)

        def link(a, b):
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)

        shutil.copytree(src, dst, copy_function=link, symlinks=True)
        py = env_python(env)
        # bpy needs numpy < 2 and is no part of a ComfyUI; fuse4d is the pack under test
        run([py, "-m", "pip", "uninstall", "-y", *NOT_IN_COMFYUI, "bpy", "fuse4d"])
        run([py, "-m", "pip", "install", "-q", "--no-compile", "numpy>=2,<3"])
        _stamp(env, key)
    return env
