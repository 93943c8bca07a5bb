# SPDX-License-Identifier: GPL-3.0-or-later
"""Synthetic dynamic 4D scenes ("Kubric-like"), made with our own renderer.

Random objects built of textured Gaussians move, spin and squash over a textured ground plane,
seen by V fixed input cameras on an arc plus held-out cameras between them. Everything is
deterministic by seed. World: OpenCV-style, up is -y, the ground is the plane y = GROUND_Y.
Gaussians correspond across timesteps (same count and order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .cameras import Cameras, cameras_to_dicts, look_at
from .gaussians import Gaussians, inverse_sigmoid, rgb_to_sh0

# Held-out evaluation scenes use seeds from here on, disjoint from any training seed below it
# (both trainers' convention).
EVAL_SEED_BASE = 1_000_000
GROUND_Y = 0.6
UP = (0.0, -1.0, 0.0)


@dataclass
class SyntheticConfig:
    views: int = 4
    frames: int = 8
    heldout_views: int = 2
    width: int = 64
    height: int = 64
    min_objects: int = 1
    max_objects: int = 3
    gaussians_per_object: int = 600
    ground_gaussians: int = 1600
    camera_radius: float = 3.2
    elevation_deg: float = 18.0
    arc_deg: float = 90.0
    fov_deg: float = 45.0
    motion: float = 0.35  # how far objects travel over the clip (world units)
    background: tuple[float, float, float] = (0.55, 0.65, 0.8)


@dataclass
class SyntheticScene:
    frames: list[Gaussians]          # one Gaussian set per timestep
    cameras: Cameras                 # the V input cameras
    heldout: Cameras                 # evaluation cameras, never given to models
    images: torch.Tensor             # [V, T, H, W, 3] renders of the input cameras
    heldout_images: torch.Tensor     # [Vh, T, H, W, 3]
    meta: dict = field(default_factory=dict)


def _surface_points(shape: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points on a unit-sized primitive and 2D surface coordinates for texturing."""
    if shape == "sphere":
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        uv = np.stack([np.arctan2(v[:, 2], v[:, 0]) / math.pi, v[:, 1]], 1)
        return v * 0.5, uv
    if shape == "box":
        p = rng.uniform(-0.5, 0.5, size=(n, 3))
        axis = rng.integers(0, 3, size=n)
        p[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, size=n)) * 0.5
        u = np.take_along_axis(p, ((axis + 1) % 3)[:, None], 1)[:, 0]
        v = np.take_along_axis(p, ((axis + 2) % 3)[:, None], 1)[:, 0]
        uv = np.stack([u, v], 1) * 2
        return p, uv
    if shape == "cylinder":
        a = rng.uniform(0, 2 * math.pi, size=n)
        h = rng.uniform(-0.5, 0.5, size=n)
        p = np.stack([0.35 * np.cos(a), h, 0.35 * np.sin(a)], 1)
        return p, np.stack([a / math.pi - 1, h * 2], 1)
    if shape == "torus":
        a, b = rng.uniform(0, 2 * math.pi, size=(2, n))
        r = 0.35 + 0.15 * np.cos(b)
        p = np.stack([r * np.cos(a), 0.15 * np.sin(b), r * np.sin(a)], 1)
        return p, np.stack([a / math.pi - 1, b / math.pi - 1], 1)
    raise ValueError(f"unknown shape {shape!r}")


SHAPES = ("sphere", "box", "cylinder", "torus")


def _texture(uv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two random colours mixed by a random stripe/checker pattern."""
    c0, c1 = rng.uniform(0.05, 0.95, size=(2, 3))
    freq = rng.uniform(2.0, 5.0)
    if rng.uniform() < 0.5:
        pattern = (np.floor(uv[:, 0] * freq) + np.floor(uv[:, 1] * freq)) % 2
    else:
        pattern = 0.5 + 0.5 * np.sin(uv[:, 0] * freq * math.pi)
    return c0 * pattern[:, None] + c1 * (1 - pattern[:, None])


@dataclass
class _Object:
    local: np.ndarray      # [n, 3] points on the unit primitive
    colors: np.ndarray     # [n, 3]
    size: float
    start: np.ndarray      # [3] centre at t = 0
    velocity: np.ndarray   # [3] per unit clip time
    spin: float            # radians over the clip, about the up axis
    squash: float          # relative squash amplitude
    phase: float


def _random_object(rng: np.random.Generator, cfg: SyntheticConfig) -> _Object:
    shape = SHAPES[rng.integers(len(SHAPES))]
    local, uv = _surface_points(shape, cfg.gaussians_per_object, rng)
    size = rng.uniform(0.35, 0.7)
    start = np.array([rng.uniform(-0.6, 0.6), GROUND_Y - size * 0.5, rng.uniform(-0.6, 0.6)])
    heading = rng.uniform(0, 2 * math.pi)
    velocity = cfg.motion * np.array([math.cos(heading), 0.0, math.sin(heading)])
    return _Object(local, _texture(uv, rng), size, start, velocity,
                   spin=rng.uniform(-1.5, 1.5), squash=rng.uniform(0.0, 0.25), phase=rng.uniform(0, 2 * math.pi))


def _object_at(obj: _Object, s: float) -> np.ndarray:
    """Object points at clip time s in [0, 1]: spin about up, squash-stretch, translate + hop."""
    c, si = math.cos(obj.spin * s), math.sin(obj.spin * s)
    rot = np.array([[c, 0, si], [0, 1, 0], [-si, 0, c]])
    stretch = 1 + obj.squash * math.sin(2 * math.pi * s + obj.phase)
    scale = np.array([1 / math.sqrt(stretch), stretch, 1 / math.sqrt(stretch)]) * obj.size
    p = (obj.local @ rot.T) * scale
    hop = -0.15 * obj.size * abs(math.sin(math.pi * s * 2 + obj.phase))  # up is -y
    centre = obj.start + obj.velocity * s + np.array([0.0, hop + (1 - stretch) * obj.size * 0.5, 0.0])
    return p + centre


def _ground(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, float]:
    side = int(math.sqrt(cfg.ground_gaussians))
    g = (np.arange(side) + 0.5) / side * 4.0 - 2.0
    x, z = np.meshgrid(g, g, indexing="ij")
    p = np.stack([x.ravel(), np.full(x.size, GROUND_Y), z.ravel()], 1)
    colors = _texture(np.stack([x.ravel(), z.ravel()], 1) / 2.0, rng) * 0.8 + 0.1
    return p, colors, 4.0 / side


def _gaussians(points: np.ndarray, colors: np.ndarray, scales: np.ndarray, flat_y: np.ndarray) -> Gaussians:
    n = len(points)
    log_scales = np.log(np.repeat(scales[:, None], 3, 1))
    log_scales[flat_y, 1] = np.log(scales[flat_y] * 0.15)  # ground splats are flat discs
    quats = np.zeros((n, 4), np.float32)
    quats[:, 0] = 1
    return Gaussians(
        means=torch.tensor(points, dtype=torch.float32),
        quats=torch.tensor(quats),
        log_scales=torch.tensor(log_scales, dtype=torch.float32),
        opacity_logits=inverse_sigmoid(torch.full((n,), 0.95)),
        sh=rgb_to_sh0(torch.tensor(colors, dtype=torch.float32))[:, None, :],
    )


def _ring_cameras(cfg: SyntheticConfig, azimuths_deg: list[float], elevations_deg: list[float]) -> Cameras:
    f = 0.5 * cfg.height / math.tan(math.radians(cfg.fov_deg) / 2)
    K = torch.tensor([[f, 0, cfg.width / 2], [0, f, cfg.height / 2], [0, 0, 1]], dtype=torch.float32)
    if not azimuths_deg:  # e.g. no held-out cameras
        return Cameras(torch.zeros(0, 4, 4), K.expand(0, 3, 3).clone(), cfg.width, cfg.height)
    target = np.array([0.0, GROUND_Y - 0.35, 0.0])
    eyes = []
    for az, el in zip(np.radians(azimuths_deg), np.radians(elevations_deg)):
        eyes.append(target + cfg.camera_radius * np.array(
            [math.sin(az) * math.cos(el), -math.sin(el), -math.cos(az) * math.cos(el)]))
    viewmats = torch.stack([look_at(torch.tensor(e, dtype=torch.float32), torch.tensor(target, dtype=torch.float32),
                                    torch.tensor(UP)) for e in eyes])
    return Cameras(viewmats=viewmats, Ks=K.expand(len(eyes), 3, 3).clone(), width=cfg.width, height=cfg.height)


def rig_angles(cfg: SyntheticConfig) -> tuple[list[float], list[float], list[float]]:
    """Input azimuths on the arc; held-out cameras in the gaps between them (higher up, and one
    ring higher again when there are more held-out cameras than gaps)."""
    half = cfg.arc_deg / 2
    azimuths = np.linspace(-half, half, cfg.views).tolist() if cfg.views > 1 else [0.0]
    gaps = [(a + b) / 2 for a, b in zip(azimuths, azimuths[1:])] or [cfg.arc_deg / 4]
    held_az = [gaps[h % len(gaps)] for h in range(cfg.heldout_views)]
    held_el = [cfg.elevation_deg + 6.0 * (1 + h // len(gaps)) for h in range(cfg.heldout_views)]
    return azimuths, held_az, held_el


def rig_cameras(cfg: SyntheticConfig) -> tuple[Cameras, Cameras]:
    """The fixed input cameras and the held-out cameras of every synthetic scene."""
    azimuths, held_az, held_el = rig_angles(cfg)
    return (_ring_cameras(cfg, azimuths, [cfg.elevation_deg] * len(azimuths)),
            _ring_cameras(cfg, held_az, held_el))


def make_frames(seed: int, cfg: SyntheticConfig) -> list[Gaussians]:
    """The per-timestep Gaussians of scene `seed` (same count and order at every timestep)."""
    rng = np.random.default_rng(seed)
    objects = [_random_object(rng, cfg) for _ in range(rng.integers(cfg.min_objects, cfg.max_objects + 1))]
    ground_p, ground_c, ground_s = _ground(rng, cfg)
    frames = []
    for t in range(cfg.frames):
        s = t / max(cfg.frames - 1, 1)
        pts = [ground_p] + [_object_at(o, s) for o in objects]
        cols = [ground_c] + [o.colors for o in objects]
        scales = [np.full(len(ground_p), ground_s * 0.7)] + \
                 [np.full(len(o.local), o.size * 2.2 / math.sqrt(len(o.local))) for o in objects]
        flat = np.zeros(sum(len(p) for p in pts), bool)
        flat[:len(ground_p)] = True
        frames.append(_gaussians(np.concatenate(pts), np.concatenate(cols), np.concatenate(scales), flat))
    return frames


def make_scene(seed: int, cfg: SyntheticConfig = SyntheticConfig(), render_images: bool = True) -> SyntheticScene:
    """One dynamic scene: per-timestep Gaussians, cameras, and (optionally) renders."""
    frames = make_frames(seed, cfg)
    cameras, heldout = rig_cameras(cfg)

    images = heldout_images = torch.zeros(0)
    if render_images:
        images = render_grid(frames, cameras, cfg.background)
        heldout_images = render_grid(frames, heldout, cfg.background)
    return SyntheticScene(frames, cameras, heldout, images, heldout_images, meta={"seed": seed})


@torch.no_grad()
def render_grid(frames: list[Gaussians], cameras: Cameras, background=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Render every timestep from every camera: [V, T, H, W, 3]."""
    from .render import render

    if len(cameras) == 0:
        return torch.zeros(0, len(frames), cameras.height, cameras.width, 3)
    per_t = [render(g, cameras, background=background).rgb.clamp(0, 1) for g in frames]
    return torch.stack(per_t, dim=1)


# ---------------------------------------------------------------------------------------------
# The 4D dataset layout (docs/datasets.md): one folder per sample.
#   sample_00000/
#     v00_t000.png ...            the V x T grid of input views (view-major names)
#     heldout/h00_t000.png ...    held-out evaluation views
#     cameras.json                {"views": [...], "heldout": [...]} with viewmat (world-to-camera,
#                                 OpenCV), K, width, height; plus "fps", "seed", "prompt"
#     prompt.txt                  a caption (may be empty)
# ---------------------------------------------------------------------------------------------


def grid_name(v: int, t: int) -> str:
    return f"v{v:02d}_t{t:03d}.png"


def write_sample(folder, scene: SyntheticScene, prompt: str = "", fps: float = 8.0) -> None:
    """Write one sample in the 4D dataset layout (atomically: a temp folder renamed at the end)."""
    import json
    import shutil
    from pathlib import Path

    from .images import save_png

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "heldout").mkdir(parents=True)
    V, T = scene.images.shape[:2]
    for v in range(V):
        for t in range(T):
            save_png(tmp / grid_name(v, t), scene.images[v, t])
    for h in range(scene.heldout_images.shape[0]):
        for t in range(T):
            save_png(tmp / "heldout" / f"h{h:02d}_t{t:03d}.png", scene.heldout_images[h, t])
    meta = {"views": cameras_to_dicts(scene.cameras), "heldout": cameras_to_dicts(scene.heldout),
            "fps": fps, "frames": T, "prompt": prompt, **scene.meta}
    (tmp / "cameras.json").write_text(json.dumps(meta))
    (tmp / "prompt.txt").write_text(prompt)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def read_grid(folder) -> torch.Tensor:
    """The V x T grid of a sample folder (or any folder named v??_t???.png): [V, T, H, W, 3]."""
    import re
    from pathlib import Path

    from .images import load_image

    folder = Path(folder)
    cells = {}
    for path in folder.iterdir():
        m = re.fullmatch(r"v(\d+)_t(\d+)\.(png|jpg|jpeg)", path.name, re.IGNORECASE)
        if m:
            cells[int(m.group(1)), int(m.group(2))] = path
    if not cells:
        raise FileNotFoundError(f"{folder}: no images named vVV_tTTT.png")
    V = max(v for v, _ in cells) + 1
    T = max(t for _, t in cells) + 1
    missing = [grid_name(v, t) for v in range(V) for t in range(T) if (v, t) not in cells]
    if missing:
        raise ValueError(f"{folder}: the {V}x{T} grid is incomplete, missing {missing[:4]}")
    rows = [torch.stack([torch.from_numpy(load_image(cells[v, t])) for t in range(T)]) for v in range(V)]
    shapes = {r.shape for r in rows}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: images differ in size")
    return torch.stack(rows)


def generate_dataset(out, count: int, cfg: SyntheticConfig = SyntheticConfig(), seed: int = 0) -> None:
    """`count` samples under `out`, sample i made from seed (seed + i); existing samples are kept."""
    from pathlib import Path

    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(count), desc="synthetic scenes", unit="scene"):
        folder = out / f"sample_{i:05d}"
        if (folder / "cameras.json").exists():
            continue  # resume: samples are deterministic by seed
        write_sample(folder, make_scene(seed + i, cfg))
