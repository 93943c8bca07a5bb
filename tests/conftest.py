# SPDX-License-Identifier: GPL-3.0-or-later
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
