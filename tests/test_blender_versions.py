# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on on the other Blender versions people run: bpy 4.2 LTS and 5.0, each installed into its
own venv under .cache/ at test time (tests/blender_versions.py), run the smoke script
tests/blender_smoke.py in a subprocess on the built zip (import, play, render, export, failure
clean-up). The full add-on suite runs on the suite's own bpy 4.5 (test_blender_addon.py)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from blender_versions import EXTRA_VERSIONS, NEWEST, ensure_bpy, find_python
from fuse4d.blender_addon import build

HERE = Path(__file__).resolve().parent
SMOKE_RESULTS: list[str] = []  # printed at the end of the run by conftest.py


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory):
    return build.build(tmp_path_factory.mktemp("dist"))


def test_manifest_minimum_is_a_tested_version():
    text = (HERE.parent / "blender_addon" / "blender_manifest.toml").read_text()
    minimum = re.search(r'^blender_version_min\s*=\s*"([^"]+)"', text, re.M).group(1)
    assert tuple(map(int, minimum.split(".")))[:2] == min(tuple(map(int, v.split(".")))[:2] for v in EXTRA_VERSIONS)


@pytest.mark.parametrize("version", [*EXTRA_VERSIONS, NEWEST[0]])
def test_addon_smoke_on_blender(version, addon_zip, tmp_path):
    if version == NEWEST[0]:
        interpreter = find_python(NEWEST[1])
        if interpreter is None:
            SMOKE_RESULTS.append(f"bpy=={version}: skipped (needs Python {NEWEST[1]}; none on PATH or in pyenv)")
            pytest.skip(f"bpy {version} needs Python {NEWEST[1]}, which this machine does not have")
        python = ensure_bpy(version, interpreter)
    else:
        if sys.version_info[:2] != (3, 11):
            pytest.skip(f"bpy {version} is built for Python 3.11 only; this is {sys.version.split()[0]}")
        python = ensure_bpy(version)
    out = subprocess.run([str(python), str(HERE / "blender_smoke.py"), str(addon_zip), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    blender = next((line for line in out.stdout.splitlines() if line.startswith("BLENDER ")), "BLENDER ?")
    SMOKE_RESULTS.append(f"{blender} (bpy=={version}): {'SMOKE OK' if out.returncode == 0 else 'FAILED'}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"SMOKE OK {version}" in out.stdout
