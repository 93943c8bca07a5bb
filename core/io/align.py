# SPDX-License-Identifier: GPL-3.0-or-later
"""Aligning a reconstruction's world onto a known one from the cameras both know (numpy only).

A feed-forward reconstructor answers in its first camera's frame and at its own scale; the caller
knows the cameras it rendered the inputs from. The similarity that maps the predicted camera centres
onto the known ones takes the Gaussians into the caller's world. Shared by the core (demo,
animate-scene) and the Blender add-on, which bundles this package."""
from __future__ import annotations

import numpy as np


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 similarity (scale, rotation, translation) best mapping points `src` onto `dst`
    in the least-squares sense (Umeyama). Needs 3+ non-collinear points."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection is not a pose change
        s[2, 2] = -1
    rot = u @ s @ vt
    var = (a ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ s) / var) if var > 0 else 1.0
    out = np.eye(4)
    out[:3, :3] = scale * rot
    out[:3, 3] = mu_d - scale * rot @ mu_s
    return out


def camera_centres(viewmats) -> np.ndarray:
    """World positions [N, 3] of cameras given by world-to-camera 4x4 matrices."""
    return np.array([np.linalg.inv(np.asarray(v, np.float64))[:3, 3] for v in viewmats]).reshape(-1, 3)


def align_cameras(result_viewmats, known_viewmats) -> np.ndarray:
    """4x4 taking the result's world into the known world, from the cameras both sides have (same
    order). Identity when there is nothing to align by; with fewer than 3 (or collinear) cameras a
    rigid fit from the first camera's full pose (scale cannot be recovered then)."""
    res = [np.asarray(v, np.float64) for v in result_viewmats]
    known = [np.asarray(v, np.float64) for v in known_viewmats]
    if not res or len(res) != len(known):
        return np.eye(4)
    res_c, known_c = camera_centres(res), camera_centres(known)
    spread = np.linalg.svd(known_c - known_c.mean(0), compute_uv=False) if len(known) >= 3 else np.zeros(3)
    if len(known) >= 3 and spread[1] > 1e-6 * max(spread[0], 1e-12):
        return similarity(res_c, known_c)
    return np.linalg.inv(known[0]) @ res[0]
