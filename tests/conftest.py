# SPDX-License-Identifier: GPL-3.0-or-later
import sys
from importlib import metadata

import numpy as np
import pytest

from fuse4d.core.io import SplatArrays


def random_arrays(n: int = 200, degree: int = 3, seed: int = 0) -> SplatArrays:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    return SplatArrays(
        means=rng.normal(size=(n, 3)), quats=rng.normal(size=(n, 4)),
        log_scales=rng.normal(size=(n, 3)) - 3, opacity_logits=rng.normal(size=n),
        sh=rng.normal(size=(n, k, 3)) * 0.3,
    )


@pytest.fixture
def arrays() -> SplatArrays:
    return random_arrays()


def pytest_report_header(config):
    """Which Blender versions this run tests (the add-on suite's bpy, the smoke-tested extra ones)."""
    try:
        suite = metadata.version("bpy")
    except metadata.PackageNotFoundError:
        suite = "not installed"
    from blender_versions import EXTRA_VERSIONS, NEWEST

    return (f"blender: bpy {suite} (full add-on suite), {', '.join(EXTRA_VERSIONS)} and {NEWEST[0]} on Python "
            f"{NEWEST[1]} where present (smoke, .cache/blender)")


def pytest_terminal_summary(terminalreporter):
    results = getattr(sys.modules.get("test_blender_versions"), "SMOKE_RESULTS", None)
    if results:
        terminalreporter.write_sep("-", "Blender versions")
        for line in results:
            terminalreporter.write_line(line)
