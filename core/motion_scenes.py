# SPDX-License-Identifier: GPL-3.0-or-later
"""Dynamic scenes with real motion for the 4D completion benchmark, ray-cast in closed form.

Textured, shaded ellipsoids slide across a good part of a checkered ground, spin about the up axis,
squash and hop; soft contact shadows tie them to the ground. Every pixel is an exact ray /
ellipsoid / plane intersection (2 x 2 supersampled), so a whole V x T grid renders in tens of
milliseconds: training draws a fresh scene every step, and the benchmark's ground truth is exact.
Everything is deterministic by seed. World: OpenCV-style (up is -y), the ground is the plane y = 0.

Rigs: "fixed" (V cameras on an arc, the same in every scene, held-out cameras in the gaps),
"arcs" (the fixed rig with an arc drawn per scene between 0 and `arc_deg`, more often wide: a training
curriculum in one distribution, from views that see the motion alike to the full rig) or "random"
(arc, start azimuth, elevation, radius and field of view drawn per scene).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Cameras, intrinsics_from_fov, look_at

UP = (0.0, -1.0, 0.0)
LIGHT = torch.tensor([0.45, -0.8, -0.4])  # towards the light (up and towards the cameras)


@dataclass(frozen=True)
class MotionSceneConfig:
    views: int = 4
    frames: int = 8
    size: int = 64                     # square frames
    heldout_views: int = 2
    rig: str = "fixed"                 # "fixed" | "arcs" | "random"
    arc_deg: float = 90.0              # fixed rig: views evenly on this arc, centred on azimuth 0
    elevation_deg: float = 22.0
    radius: float = 3.4
    fov_deg: float = 40.0
    min_objects: int = 1
    max_objects: int = 3
    travel: tuple[float, float] = (0.7, 1.5)   # world units an object slides over the clip
    object_radius: tuple[float, float] = (0.25, 0.45)
    supersample: int = 2


@dataclass
class MotionScene:
    images: torch.Tensor               # [V, T, H, W, 3] in [0, 1]
    cameras: Cameras                   # the V input cameras
    heldout: Cameras                   # held-out cameras (never given to a model)
    heldout_images: torch.Tensor       # [Vh, T, H, W, 3]
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- the scene description

@dataclass
class _Ellipsoid:
    radii: np.ndarray        # [3] semi-axes (x, y, z) before squash
    colors: np.ndarray       # [2, 3]
    pattern: int             # 0 checker, 1 stripes, 2 bands
    freq: float
    mid: np.ndarray          # [2] (x, z) at mid-clip
    direction: np.ndarray    # [2] unit heading on the ground
    travel: float
    spin: float              # radians over the clip about up
    squash: float
    hop: float
    phase: float

    def state(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centre [3], rotation [3, 3] local -> world, radii [3]) at clip time s in [0, 1]."""
        stretch = 1.0 + self.squash * math.sin(2 * math.pi * s + self.phase)
        radii = self.radii * np.array([1 / math.sqrt(stretch), stretch, 1 / math.sqrt(stretch)])
        xz = self.mid + self.direction * self.travel * (s - 0.5)
        lift = radii[1] + self.hop * abs(math.sin(2 * math.pi * s + self.phase))
        a = self.spin * s
        rot = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        return np.array([xz[0], -lift, xz[1]]), rot, radii


def _objects(rng: np.random.Generator, cfg: MotionSceneConfig) -> list[_Ellipsoid]:
    out = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        r = rng.uniform(*cfg.object_radius)
        heading = rng.uniform(0, 2 * math.pi)
        out.append(_Ellipsoid(
            radii=r * rng.uniform(0.75, 1.3, size=3), colors=rng.uniform(0.05, 0.95, size=(2, 3)),
            pattern=int(rng.integers(3)), freq=float(rng.uniform(2.0, 4.0)),
            mid=rng.uniform(-0.45, 0.45, size=2), direction=np.array([math.cos(heading), math.sin(heading)]),
            travel=float(rng.uniform(*cfg.travel)), spin=float(rng.uniform(-math.pi, math.pi)),
            squash=float(rng.uniform(0.0, 0.2)), hop=float(rng.uniform(0.0, 0.25) * r * (rng.uniform() < 0.5)),
            phase=float(rng.uniform(0, 2 * math.pi))))
    return out


def _rig(cfg: MotionSceneConfig, rng: np.random.Generator) -> tuple[Cameras, Cameras]:
    """Input and held-out cameras looking at the middle of the stage."""
    if cfg.rig in ("fixed", "arcs"):
        arc = cfg.arc_deg if cfg.rig == "fixed" else cfg.arc_deg * math.sqrt(rng.uniform())
        start, elev, radius, fov = -arc / 2, cfg.elevation_deg, cfg.radius, cfg.fov_deg
    elif cfg.rig == "random":
        arc = rng.uniform(45.0, 120.0)
        start = rng.uniform(-180.0, 180.0)
        elev, radius, fov = rng.uniform(12.0, 35.0), rng.uniform(3.0, 4.0), rng.uniform(35.0, 45.0)
    else:
        raise ValueError(f"unknown rig {cfg.rig!r}; choose 'fixed', 'arcs' or 'random'")
    step = arc / max(cfg.views - 1, 1)
    azimuths = [start + step * i for i in range(cfg.views)]
    gaps = [a + step / 2 for a in azimuths[:-1]] or [start + 20.0]
    held = [gaps[h % len(gaps)] for h in range(cfg.heldout_views)]
    held_el = [elev + 8.0 * (1 + h // len(gaps)) for h in range(cfg.heldout_views)]
    return (_cameras(cfg, azimuths, [elev] * cfg.views, radius, fov),
            _cameras(cfg, held, held_el, radius, fov))


def _cameras(cfg: MotionSceneConfig, azimuths, elevations, radius: float, fov: float) -> Cameras:
    K = intrinsics_from_fov(fov, cfg.size, cfg.size)
    target = torch.tensor([0.0, -0.25, 0.0])
    mats = []
    for az, el in zip(np.radians(azimuths), np.radians(elevations)):
        eye = target + radius * torch.tensor([math.sin(az) * math.cos(el), -math.sin(el), -math.cos(az) * math.cos(el)],
                                             dtype=torch.float32)
        mats.append(look_at(eye, target, UP))
    viewmats = torch.stack(mats) if mats else torch.zeros(0, 4, 4)
    return Cameras(viewmats, K.expand(len(mats), 3, 3).clone(), cfg.size, cfg.size)


# ---------------------------------------------------------------- ray casting

def _rays(cameras: Cameras, ss: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins [C, 3] and unit directions [C, H*ss, W*ss, 3] in world space."""
    H, W = cameras.height * ss, cameras.width * ss
    v, u = torch.meshgrid((torch.arange(H) + 0.5) / ss, (torch.arange(W) + 0.5) / ss, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1)                        # [H, W, 3]
    dirs_cam = pix @ torch.linalg.inv(cameras.Ks).transpose(-1, -2)[:, None]  # [C, H, W, 3]
    c2w = cameras.camtoworlds
    dirs = F.normalize(dirs_cam @ c2w[:, None, :3, :3].transpose(-1, -2), dim=-1)
    return c2w[:, :3, 3], dirs


def _pattern(uv: torch.Tensor, kind: int, freq: float) -> torch.Tensor:
    if kind == 0:
        return ((torch.floor(uv[..., 0] * freq) + torch.floor(uv[..., 1] * freq)) % 2)
    if kind == 1:
        return 0.5 + 0.5 * torch.sin(uv[..., 0] * freq * math.pi)
    return (torch.floor(uv[..., 1] * freq * 1.5) % 2)


class _Stage:
    """Ground, sky and objects of one scene, rendered for any cameras at any clip time."""

    def __init__(self, seed: int, cfg: MotionSceneConfig):
        rng = np.random.default_rng(seed)
        self.cfg = cfg
        self.ground = rng.uniform(0.1, 0.85, size=(2, 3))
        self.ground_freq = float(rng.uniform(0.8, 1.6))
        self.ground_angle = float(rng.uniform(0, math.pi))
        self.sky = rng.uniform(0.45, 0.9, size=(2, 3))
        self.objects = _objects(rng, cfg)
        self.rig = _rig(cfg, rng)

    def render(self, cameras: Cameras, s: float) -> torch.Tensor:
        """[C, H, W, 3] at clip time s."""
        ss = self.cfg.supersample
        origin, d = _rays(cameras, ss)
        o = origin[:, None, None, :].expand_as(d)
        # sky: a vertical gradient
        up_amount = (-d[..., 1]).clamp(-1, 1)[..., None]
        sky = torch.tensor(self.sky[0], dtype=torch.float32) * (0.5 + 0.5 * up_amount) + \
            torch.tensor(self.sky[1], dtype=torch.float32) * (0.5 - 0.5 * up_amount)
        color, depth = sky, torch.full(d.shape[:-1], float("inf"))
        # ground plane y = 0 (cameras are above it, at y < 0)
        lam = torch.where(d[..., 1] > 1e-6, -o[..., 1] / d[..., 1].clamp_min(1e-6), torch.full_like(depth, float("inf")))
        hit = o + lam[..., None] * d
        ca, sa = math.cos(self.ground_angle), math.sin(self.ground_angle)
        uv = torch.stack([hit[..., 0] * ca + hit[..., 2] * sa, -hit[..., 0] * sa + hit[..., 2] * ca], -1)
        k = _pattern(uv, 0, self.ground_freq)[..., None]
        g = torch.tensor(self.ground, dtype=torch.float32)
        ground = g[0] * k + g[1] * (1 - k)
        states = [obj.state(s) for obj in self.objects]
        shade = torch.ones_like(lam)
        for centre, _, radii in states:  # soft contact shadows under each object
            dx, dz = hit[..., 0] - centre[0], hit[..., 2] - centre[2]
            r2 = float(radii[0] * radii[2]) * 1.3
            shade = shade * (1 - 0.45 * torch.exp(-(dx * dx + dz * dz) / r2) * math.exp(-abs(centre[1] + radii[1]) * 3))
        fade = torch.exp(-0.08 * (lam.clamp(max=60.0) - 3.0).clamp_min(0))[..., None]  # distance haze
        ground = ground * shade[..., None] * fade + sky * (1 - fade)
        on_ground = torch.isfinite(lam)
        color = torch.where(on_ground[..., None], ground, color)
        depth = torch.where(on_ground, lam, depth)
        for obj, (centre, rot, radii) in zip(self.objects, states):
            R = torch.tensor(rot, dtype=torch.float32)
            r = torch.tensor(radii, dtype=torch.float32)
            c = torch.tensor(centre, dtype=torch.float32)
            ol = ((o - c) @ R) / r
            dl = (d @ R) / r
            a = (dl * dl).sum(-1)
            b = 2 * (ol * dl).sum(-1)
            q = (ol * ol).sum(-1) - 1
            disc = b * b - 4 * a * q
            lam_o = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
            front = (disc > 0) & (lam_o > 1e-4) & (lam_o < depth)
            p = ol + lam_o[..., None] * dl                                  # on the unit sphere
            normal = F.normalize((p / r) @ R.T, dim=-1)
            lon = torch.atan2(p[..., 2], p[..., 0]) / math.pi
            lat = torch.asin(p[..., 1].clamp(-1, 1)) / (math.pi / 2)
            kk = _pattern(torch.stack([lon * 2, lat], -1), obj.pattern, obj.freq)[..., None]
            cols = torch.tensor(obj.colors, dtype=torch.float32)
            albedo = cols[0] * kk + cols[1] * (1 - kk)
            light = 0.35 + 0.65 * (normal @ F.normalize(LIGHT, dim=0)).clamp_min(0)[..., None]
            color = torch.where(front[..., None], albedo * light, color)
            depth = torch.where(front, lam_o, depth)
        img = color.clamp(0, 1).permute(0, 3, 1, 2)
        return F.avg_pool2d(img, ss).permute(0, 2, 3, 1).contiguous()

    def render_grid(self, cameras: Cameras) -> torch.Tensor:
        """[C, T, H, W, 3]."""
        T = self.cfg.frames
        if len(cameras) == 0:
            return torch.zeros(0, T, cameras.height, cameras.width, 3)
        return torch.stack([self.render(cameras, t / max(T - 1, 1)) for t in range(T)], dim=1)


def scene_cameras(seed: int, cfg: MotionSceneConfig = MotionSceneConfig()) -> Cameras:
    """The V input cameras of scene `seed` without rendering it (the fixed rig's are the same for every seed)."""
    return _Stage(seed, cfg).rig[0]


@torch.no_grad()
def make_motion_scene(seed: int, cfg: MotionSceneConfig = MotionSceneConfig(), heldout: bool = True) -> MotionScene:
    """Scene `seed`: renders of its V input cameras (and held-out cameras) over its T frames."""
    stage = _Stage(seed, cfg)
    cameras, held = stage.rig
    images = stage.render_grid(cameras)
    held_images = stage.render_grid(held) if heldout else torch.zeros(0)
    return MotionScene(images, cameras, held, held_images, meta={"seed": int(seed), "rig": cfg.rig,
                                                                 "objects": len(stage.objects)})


def moving_mask(truth: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Bool [V, T, H, W]: pixels whose ground-truth colour differs from the view's t = 0 frame by more
    than `threshold` in some channel (where the answer is motion, not the given background)."""
    return (truth - truth[:, :1]).abs().amax(-1) > threshold


def motion_statistics(grids: list[torch.Tensor]) -> dict:
    """Mean |frame_t - frame_0| and the fraction of moving pixels over t >= 1 (what the benchmark's
    motion amounts to)."""
    diffs = [float((g[:, 1:] - g[:, :1]).abs().mean()) for g in grids]
    moving = [float(moving_mask(g)[:, 1:].float().mean()) for g in grids]
    return {"mean_abs_change": sum(diffs) / len(diffs), "moving_fraction": sum(moving) / len(moving),
            "scenes": len(grids)}


def write_motion_dataset(out, count: int, cfg: MotionSceneConfig = MotionSceneConfig(), seed: int = 0) -> None:
    """`count` samples in the 4D dataset layout (docs/datasets.md) under `out`, sample i from seed + i;
    samples already there are kept (each is written atomically)."""
    from pathlib import Path

    from tqdm import tqdm

    from .synthetic import write_sample

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(count), desc="motion scenes", unit="scene"):
        folder = out / f"sample_{i:05d}"
        if not (folder / "cameras.json").exists():
            write_sample(folder, make_motion_scene(seed + i, cfg), fps=8.0)
