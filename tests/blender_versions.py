# SPDX-License-Identifier: GPL-3.0-or-later
"""Extra Blender versions for the tests: each `bpy` release in its own venv under .cache/ (git-ignored),
installed at test time like ComfyUI (tests/comfy_runtime.py). The suite's own venv holds bpy 4.5 (the
full add-on suite); these run a smoke script in a subprocess. Idempotent: a stamp per venv."""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "blender"
# The LTS lines people run and the newest release that installs on Python 3.11 (bpy 5.1+ needs 3.13).
EXTRA_VERSIONS = ("4.2.23", "5.0.1")


def venv_dir(version: str) -> Path:
    return CACHE / f"bpy-{version}"


def venv_python(version: str) -> Path:
    return venv_dir(version) / "bin" / "python"


def ensure_bpy(version: str) -> Path:
    """A venv with bpy==version (and its numpy) on this Python; returns its interpreter."""
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(f"bpy {version} wheels exist for Python 3.11 only; this is {sys.version.split()[0]}")
    stamp = venv_dir(version) / ".fuse4d-stamp"
    if stamp.exists() and stamp.read_text().strip() == version and venv_python(version).exists():
        return venv_python(version)
    shutil.rmtree(venv_dir(version), ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True).create(venv_dir(version))
    subprocess.run([str(venv_python(version)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"bpy=={version}", "numpy<2"], check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(version)
    return venv_python(version)


if __name__ == "__main__":  # python tests/blender_versions.py: install them all now
    for v in EXTRA_VERSIONS:
        print(v, ensure_bpy(v))
