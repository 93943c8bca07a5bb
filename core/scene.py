# SPDX-License-Identifier: GPL-3.0-or-later
"""The bundled sample scene: a small, deterministic, captured-looking static scene
(four textured objects of 3,000 Gaussians each on a ground plane, about 20k Gaussians).
It is generated on use (no file to ship) from the same builders as the synthetic training data,
so the demo's tiny models see familiar content. World: OpenCV style, up is -y."""
from __future__ import annotations

from .gaussians import Gaussians
from .synthetic import SyntheticConfig, make_frames

SAMPLE_CONFIG = SyntheticConfig(frames=1, min_objects=4, max_objects=4, gaussians_per_object=3000,
                                ground_gaussians=90 * 90)


def sample_scene(seed: int = 0) -> Gaussians:
    return make_frames(seed, SAMPLE_CONFIG)[0]
