# SPDX-License-Identifier: GPL-3.0-or-later
"""A reconstruction (the reconstructor's first camera's frame, its own scale) brought into the world
of cameras the caller knows, by the similarity between the two camera sets (core/io/align.py)."""
from __future__ import annotations

import numpy as np
import torch

from ..cameras import Cameras
from ..gaussians import Gaussians
from ..io import align_cameras


def well_spread(cameras: Cameras, gaussians: Gaussians) -> bool:
    """Whether camera centres span a plane at a size comparable to the scene, so that the scale and
    rotation between two camera sets are determined by them."""
    if len(cameras) < 3:
        return False
    centres = cameras.centers.detach().double()
    spread = torch.linalg.svdvals(centres - centres.mean(0))
    scene = float((gaussians.means.detach().double() - centres[0]).norm(dim=-1).median())
    return bool(spread[1] > 1e-2 * spread[0] and spread[0] > 1e-3 * max(scene, 1e-12))


def align_frames(frames: list[Gaussians], predicted: Cameras, known: Cameras) -> tuple[list[Gaussians], np.ndarray]:
    """A reconstruction (its first camera's frame, its own scale) moved into the known cameras' world
    by the similarity between the two camera sets. Predicted cameras (nearly) on top of each other
    (an untrained model) determine no scale: then the first camera's pose alone aligns (rigid)."""
    pred = predicted.viewmats.detach().cpu().numpy()
    known_mats = known.viewmats.detach().cpu().numpy()
    if not well_spread(predicted, frames[0]):
        pred, known_mats = pred[:1], known_mats[:1]
    align = align_cameras(pred, known_mats)
    scale = float(np.cbrt(np.linalg.det(align[:3, :3])))
    rotation = torch.from_numpy(align[:3, :3] / scale).float()
    translation = torch.from_numpy(align[:3, 3]).float()
    return [g.transform(rotation, translation, scale) for g in frames], align
