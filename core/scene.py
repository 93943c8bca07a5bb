# SPDX-License-Identifier: GPL-3.0-or-later
"""The bundled sample scene: a small, deterministic, captured-looking static scene, generated on
use (nothing to ship). A tiled, noise-textured floor with soft contact shadows and five objects
(sphere, box, cone, torus, cylinder) built of surface-aligned flat Gaussians with baked diffuse
light and a faint degree-1 SH sheen, about 20k Gaussians.

World: OpenCV style, up is -y (so OpenCV cameras from `orbit_cameras` are upright); the floor is
the plane y = GROUND_Y and the objects stand on it around the origin, within |x|, |z| < 1.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .gaussians import Gaussians, inverse_sigmoid, rgb_to_sh0

GROUND_Y = 0.6
GROUND_SIZE = 5.0      # the floor is GROUND_SIZE x GROUND_SIZE world units
GROUND_SIDE = 100      # floor Gaussians per side
OBJECT_GAUSSIANS = 2000
# Towards the light (above, left, in front), in the y-down world.
LIGHT = np.array([-1.0, -0.8, -0.6]) / np.linalg.norm([-1.0, -0.8, -0.6])
SHEEN = 0.06           # strength of the view-dependent (SH degree 1) term
_C1 = 0.4886025119029199


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) as RGB."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _value_noise(xy: np.ndarray, rng: np.random.Generator, octaves: int = 4) -> np.ndarray:
    """Smooth deterministic noise in [0, 1]: a sum of random plane waves per octave."""
    out = np.zeros(len(xy))
    for o in range(octaves):
        freq = 1.5 * 2 ** o
        for _ in range(3):
            d = _unit(rng.normal(size=2))
            out += np.sin(freq * xy @ d * math.pi + rng.uniform(0, 2 * math.pi)) / 2 ** o
    return (out - out.min()) / max(out.max() - out.min(), 1e-9)


# --- object surfaces: points, outward normals and (u, v) for texturing, in local units -------
# Local frame: y down like the world; every shape rests on y = 0 and extends to negative y.

def _sphere(n, rng):
    d = _unit(rng.normal(size=(n, 3)))
    p = d * 0.35 + np.array([0, -0.35, 0])
    uv = np.stack([np.arctan2(d[:, 2], d[:, 0]) / math.pi, np.arccos(np.clip(-d[:, 1], -1, 1)) / math.pi], 1)
    return p, d, uv


def _box(n, rng):
    half = np.array([0.28, 0.25, 0.28])
    area = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])  # face areas per axis
    axis = rng.choice(3, size=n, p=area / area.sum())
    sign = rng.choice([-1.0, 1.0], size=n)
    q = rng.uniform(-1, 1, size=(n, 3))
    q[np.arange(n), axis] = sign
    normals = np.zeros((n, 3))
    normals[np.arange(n), axis] = sign
    uv = np.stack([q[np.arange(n), (axis + 1) % 3], q[np.arange(n), (axis + 2) % 3]], 1)
    return q * half + np.array([0, -half[1], 0]), normals, uv


def _cone(n, rng):
    r, h = 0.3, 0.7
    slant = math.hypot(r, h)
    side = rng.uniform(size=n) < (math.pi * r * slant) / (math.pi * r * slant + math.pi * r * r)
    a = rng.uniform(0, 2 * math.pi, size=n)
    t = np.sqrt(rng.uniform(size=n))  # area-uniform: radius grows linearly from the tip
    rad = np.where(side, r * t, r * np.sqrt(rng.uniform(size=n)))
    y = np.where(side, -h * (1 - t), 0.0)
    p = np.stack([rad * np.cos(a), y, rad * np.sin(a)], 1)
    side_n = _unit(np.stack([np.cos(a) * h / slant, -np.full(n, r / slant), np.sin(a) * h / slant], 1))
    normals = np.where(side[:, None], side_n, np.array([0.0, 1.0, 0.0]))
    return p, normals, np.stack([a / math.pi, y / h * 3], 1)


def _torus(n, rng):
    R, r = 0.28, 0.1
    a = rng.uniform(0, 2 * math.pi, size=n)
    # Area element grows with R + r cos(b): rejection-sample b.
    b = rng.uniform(0, 2 * math.pi, size=4 * n)
    b = b[rng.uniform(size=4 * n) < (R + r * np.cos(b)) / (R + r)][:n]
    centre = np.stack([np.cos(a), np.zeros(n), np.sin(a)], 1)
    normals = centre * np.cos(b)[:, None] + np.array([0, -1.0, 0]) * np.sin(b)[:, None]
    p = centre * R + normals * r + np.array([0, -r, 0])
    return p, normals, np.stack([a / math.pi * 2, b / math.pi], 1)


def _cylinder(n, rng):
    r, h = 0.18, 0.55
    cap = rng.uniform(size=n) < (r / (r + h))  # two caps (2 pi r^2) vs side (2 pi r h)
    a = rng.uniform(0, 2 * math.pi, size=n)
    rad = np.where(cap, r * np.sqrt(rng.uniform(size=n)), r)
    top = rng.uniform(size=n) < 0.5
    y = np.where(cap, np.where(top, -h, 0.0), -h * rng.uniform(size=n))
    p = np.stack([rad * np.cos(a), y, rad * np.sin(a)], 1)
    cap_n = np.where(top[:, None], np.array([0, -1.0, 0]), np.array([0, 1.0, 0]))
    normals = np.where(cap[:, None], cap_n, np.stack([np.cos(a), np.zeros(n), np.sin(a)], 1))
    return p, normals, np.stack([a / math.pi * 2, y / h * 4], 1)


SHAPES = {"sphere": (_sphere, 4 * math.pi * 0.35 ** 2), "box": (_box, 2 * (0.56 * 0.5 * 2 + 0.56 ** 2)),
          "cone": (_cone, math.pi * 0.3 * (0.3 + math.hypot(0.3, 0.7))),
          "torus": (_torus, 4 * math.pi ** 2 * 0.28 * 0.1), "cylinder": (_cylinder, 2 * math.pi * 0.18 * (0.18 + 0.55))}
# Where the objects stand (x, z), before a small per-seed jitter.
LAYOUT = [(-0.55, -0.25), (0.45, -0.45), (0.05, 0.35), (-0.6, 0.6), (0.7, 0.35)]


def _quats_z_to(normals: np.ndarray) -> np.ndarray:
    """Quaternions (w, x, y, z) rotating local +z onto each normal (a flat disc's thin axis)."""
    z = np.array([0.0, 0.0, 1.0])
    w = 1.0 + normals @ z
    xyz = np.cross(z, normals)
    q = np.concatenate([w[:, None], xyz], 1)
    flip = w < 1e-6  # normal = -z: half a turn about x
    q[flip] = [0.0, 1.0, 0.0, 0.0]
    return _unit(q)


def _shade(albedo: np.ndarray, normals: np.ndarray, points: np.ndarray, shadows, contact: bool = True) -> np.ndarray:
    """Baked light: ambient + diffuse, soft shadows, darkening where objects touch the floor."""
    diffuse = np.clip(normals @ LIGHT, 0, None)
    occlusion = 1 - 0.35 * np.exp(-(GROUND_Y - points[:, 1]) / 0.08) if contact else 1.0
    light = (0.42 + 0.7 * diffuse * shadows(points)) * occlusion
    return np.clip(albedo * light[:, None], 0.02, 0.98)


def _gaussians(points, normals, colors, disc_radius, thickness, opacity) -> Gaussians:
    n = len(points)
    log_scales = np.log(np.stack([np.full(n, disc_radius), np.full(n, disc_radius), np.full(n, thickness)], 1))
    sh = np.zeros((n, 4, 3))
    sh[:, 0] = rgb_to_sh0(torch.tensor(colors)).numpy()
    # Degree 1: colour += SHEEN * (-view_dir . normal), brighter where the surface faces the viewer.
    # With gsplat's basis (-C1 y, C1 z, -C1 x) this is sh1 = S ny / C1, sh2 = -S nz / C1, sh3 = S nx / C1.
    sh[:, 1] = (SHEEN * normals[:, 1] / _C1)[:, None]
    sh[:, 2] = (-SHEEN * normals[:, 2] / _C1)[:, None]
    sh[:, 3] = (SHEEN * normals[:, 0] / _C1)[:, None]
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return Gaussians(f32(points), f32(_quats_z_to(normals)), f32(log_scales),
                     inverse_sigmoid(torch.full((n,), float(opacity))), f32(sh))


def sample_scene(seed: int = 0) -> Gaussians:
    """The sample scene (about 20k Gaussians, SH degree 1); the same seed gives the same scene."""
    rng = np.random.default_rng(seed)
    names = list(SHAPES)
    rng.shuffle(names)
    objects = []
    hue0 = rng.uniform()
    for i, (name, (x, z)) in enumerate(zip(names, LAYOUT)):
        fn, area = SHAPES[name]
        p, nrm, uv = fn(OBJECT_GAUSSIANS, rng)
        yaw = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(yaw), math.sin(yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        offset = np.array([x + rng.uniform(-0.08, 0.08), GROUND_Y, z + rng.uniform(-0.08, 0.08)])
        hue = (hue0 + i / len(LAYOUT)) % 1  # distinct hues, so the objects tell apart
        base = _hsv(hue, rng.uniform(0.45, 0.75), rng.uniform(0.65, 0.9))
        accent = _hsv((hue + rng.uniform(-0.08, 0.08)) % 1, rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.55))
        freq = rng.uniform(2.5, 4.5)
        pattern = (np.floor(uv[:, 0] * freq) + np.floor(uv[:, 1] * freq)) % 2 if rng.uniform() < 0.5 \
            else 0.5 + 0.5 * np.sin(uv[:, 0] * freq * math.pi)
        albedo = base * (1 - 0.6 * pattern[:, None]) + accent * 0.6 * pattern[:, None]
        albedo *= 0.9 + 0.2 * _value_noise(uv, rng, 3)[:, None]  # a little grain, like a capture
        objects.append((p @ rot.T + offset, nrm @ rot.T, albedo, math.sqrt(area / OBJECT_GAUSSIANS)))

    # Soft shadows of the objects on everything (blobs along the light direction).
    blockers = [(pts.mean(0), 0.5 * float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 2])) / 2) for pts, *_ in objects]

    def shadows(points: np.ndarray, skip: int = -1) -> np.ndarray:
        out = np.ones(len(points))
        for i, (centre, radius) in enumerate(blockers):
            if i == skip:  # an object's own diffuse term already shades its far side
                continue
            t = (centre[1] - points[:, 1]) / LIGHT[1]  # move towards the light to the blocker's height
            reach = points + t[:, None] * LIGHT
            d2 = (reach[:, 0] - centre[0]) ** 2 + (reach[:, 2] - centre[2]) ** 2
            out *= 1 - 0.75 * np.exp(-d2 / (2 * (0.7 * radius) ** 2)) * (t > 0.05)
        return out

    # The floor: large tiles, two muted tones, noise, jittered flat discs.
    step = GROUND_SIZE / GROUND_SIDE
    g = (np.arange(GROUND_SIDE) + 0.5) * step - GROUND_SIZE / 2
    gx, gz = np.meshgrid(g, g, indexing="ij")
    xz = np.stack([gx.ravel(), gz.ravel()], 1) + rng.uniform(-0.3, 0.3, size=(GROUND_SIDE ** 2, 2)) * step
    floor_p = np.stack([xz[:, 0], np.full(len(xz), GROUND_Y), xz[:, 1]], 1)
    tile_a, tile_b = rng.uniform(0.45, 0.7, size=3), rng.uniform(0.25, 0.45, size=3)
    checker = ((np.floor(xz[:, 0] / 0.5) + np.floor(xz[:, 1] / 0.5)) % 2)[:, None]
    grout = (np.minimum(np.abs((xz / 0.5) - np.round(xz / 0.5)).min(1), 1) < 0.04)[:, None]
    albedo = tile_a * checker + tile_b * (1 - checker)
    albedo = albedo * (0.8 + 0.35 * _value_noise(xz, rng)[:, None])
    albedo = np.where(grout, albedo * 0.55, albedo)
    floor_n = np.tile([0.0, -1.0, 0.0], (len(xz), 1))
    parts = [_gaussians(floor_p, floor_n, _shade(albedo, floor_n, floor_p, shadows, contact=False),
                        0.75 * step, 0.1 * step, 0.97)]
    for i, (pts, nrm, alb, spacing) in enumerate(objects):
        lit = _shade(alb, nrm, pts, lambda q, i=i: shadows(q, skip=i))
        parts.append(_gaussians(pts, nrm, lit, 0.8 * spacing, 0.2 * spacing, 0.95))
    return Gaussians.cat(parts)
