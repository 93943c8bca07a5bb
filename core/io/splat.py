# SPDX-License-Identifier: GPL-3.0-or-later
"""antimatter15 `.splat` (the web viewer layout), numpy only.

32 bytes per Gaussian: position f32 x3, linear scale f32 x3, RGBA u8 x4 (colour = 0.5 + C0 * DC,
alpha = sigmoid(opacity)), rotation u8 x4 (normalised w x y z mapped by q * 128 + 128).
Written sorted by size x opacity, largest first, as the viewer expects. SH above degree 0 is lost.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arrays import SH_C0, SplatArrays, sigmoid
from .atomic import atomic_output
from .errors import SplatFormatError
from .ply import check_finite

RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def encode_splat(arrays: SplatArrays) -> bytes:
    check_finite(arrays)
    if (arrays.log_scales > 88).any():  # exp overflows float32: the viewer would get inf scales
        raise ValueError("cannot write .splat: log scales above 88 overflow float32")
    opacity = sigmoid(arrays.opacity_logits.astype(np.float64))
    order = np.argsort(-np.exp(arrays.log_scales.astype(np.float64).sum(1)) * opacity, kind="stable")
    a = arrays.subset(order)
    rec = np.empty(len(a), RECORD)
    rec["position"] = a.means
    rec["scale"] = np.exp(a.log_scales)
    rgba = np.concatenate([a.colors, opacity[order][:, None]], 1)
    rec["rgba"] = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
    q = a.quats / np.maximum(np.linalg.norm(a.quats, axis=1, keepdims=True), 1e-12)
    rec["rot"] = np.clip(np.round(q * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return rec.tobytes()


def write_splat(path: str | os.PathLike, arrays: SplatArrays) -> Path:
    path = Path(path)
    data = encode_splat(arrays)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_splat(path: str | os.PathLike) -> SplatArrays:
    path = Path(path)
    size = path.stat().st_size
    if size % RECORD.itemsize:
        raise SplatFormatError(path, f"size {size} is not a multiple of {RECORD.itemsize} bytes (.splat records)")
    rec = np.fromfile(path, RECORD)
    rgba = rec["rgba"].astype(np.float32) / 255.0
    alpha = np.clip(rgba[:, 3], 1e-4, 1 - 1e-4)
    quats = (rec["rot"].astype(np.float32) - 128.0) / 128.0
    scale = rec["scale"].astype(np.float32)
    bad = ~(np.isfinite(rec["position"]).all(1) & np.isfinite(scale).all(1) & (scale > 0).all(1))
    if bad.any():
        first = ", ".join(str(int(i)) for i in np.flatnonzero(bad)[:5])
        raise SplatFormatError(path, f"{int(bad.sum())} of {len(rec)} records hold NaN, infinite or "
                                     f"non-positive positions/scales (first: {first})")
    return SplatArrays(
        means=rec["position"], quats=quats, log_scales=np.log(scale),
        opacity_logits=np.log(alpha / (1 - alpha)),
        sh=((rgba[:, :3] - 0.5) / SH_C0)[:, None, :],
    )
