# SPDX-License-Identifier: GPL-3.0-or-later
"""Extra Blender versions for the tests: each `bpy` release in its own venv under .cache/ (git-ignored),
installed at test time like ComfyUI (tests/comfy_runtime.py). The suite's own venv holds bpy 4.5 (the
full add-on suite); these run a smoke script in a subprocess. Idempotent: a stamp per venv."""
from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "blender"
# The LTS lines people run and the newest release that installs on Python 3.11 ...
EXTRA_VERSIONS = ("4.2.23", "5.0.1")
# ... and the newest release, whose wheels need Python 3.13 (used when the machine has one, e.g. pyenv's).
NEWEST = ("5.3.0", "3.13")


def venv_dir(version: str) -> Path:
    return CACHE / f"bpy-{version}"


def venv_python(version: str) -> Path:
    return venv_dir(version) / "bin" / "python"


def find_python(minor: str) -> str | None:
    """A working interpreter of Python `minor` (e.g. "3.13") from pyenv's versions or PATH, or None
    (pyenv's shims exist on PATH even for versions that are not selected, so each one is tried)."""
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / f"{minor}.*" / "bin" / f"python{minor}")))
    candidates += [p for p in [shutil.which(f"python{minor}")] if p]
    for python in candidates:
        try:
            out = subprocess.run([python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == minor:
            return python
    return None


def ensure_bpy(version: str, python: str | None = None) -> Path:
    """A venv with bpy==version (and its numpy) on `python` (default: this one, 3.11); returns its
    interpreter."""
    if python is None and sys.version_info[:2] != (3, 11):
        raise RuntimeError(f"bpy {version} wheels exist for Python 3.11 only; this is {sys.version.split()[0]}")
    stamp = venv_dir(version) / ".fuse4d-stamp"
    if stamp.exists() and stamp.read_text().strip() == version and venv_python(version).exists():
        return venv_python(version)
    shutil.rmtree(venv_dir(version), ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    if python is None:
        venv.EnvBuilder(with_pip=True).create(venv_dir(version))
    else:
        subprocess.run([python, "-m", "venv", str(venv_dir(version))], check=True)
    subprocess.run([str(venv_python(version)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"bpy=={version}"], check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(version)
    return venv_python(version)


if __name__ == "__main__":  # python tests/blender_versions.py: install them all now
    for v in EXTRA_VERSIONS:
        print(v, ensure_bpy(v))
    newer = find_python(NEWEST[1])
    print(NEWEST[0], ensure_bpy(NEWEST[0], newer) if newer else f"skipped: no Python {NEWEST[1]}")
