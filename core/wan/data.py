# SPDX-License-Identifier: GPL-3.0-or-later
"""Training samples for the 4D video model: a V x T grid of frames (or its latents) + text states.

Sources:
  * a dataset folder (docs/datasets.md, section "Video model training"): per sample either the PNG grid
    `vVV_tTTT.png` (+ optional prompt.txt), or precomputed `latents.safetensors` (+ `text_embeds.safetensors`);
  * `SceneGrids`: our synthetic dynamic 4D scenes (core/synthetic.py: textured objects moving over a
    textured ground, fixed cameras on an arc), rendered once per seed and cached; the tiny model's data;
  * `MotionGrids`: ray-cast scenes with real motion (core/motion_scenes.py), the completion benchmark's
    distribution and the tiny model's data;
  * `BlobGrids`: coloured blobs moving in 3D seen by V cameras on an arc (instant; smoke tests).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, replace

import numpy as np
import torch

_FRAME_RE = re.compile(r"^v(\d+)_t(\d+)\.png$")


def blob_grid(views: int, frames: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """[V, T, H, W, 3] in [0, 1]: 1-2 soft coloured blobs moving in 3D, views on a 90 degree arc."""
    g = generator
    n = int(torch.randint(1, 3, (1,), generator=g))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    bg = 0.25 + 0.2 * torch.rand(3, generator=g)
    out = bg.view(1, 1, 1, 1, 3).repeat(views, frames, size, size, 1)
    # a faint per-view gradient so views are tellable apart even without blobs in sight
    for v in range(views):
        out[v] += (0.1 * v / max(views - 1, 1)) * (yy[..., None] + 1) / 2
    for _ in range(n):
        p0 = (torch.rand(3, generator=g) - 0.5) * 1.0
        vel = (torch.rand(3, generator=g) - 0.5) * 1.2 / max(frames - 1, 1)
        color = torch.rand(3, generator=g)
        radius = 0.2 + 0.2 * float(torch.rand(1, generator=g))
        for v in range(views):
            a = math.radians(90.0) * (v / max(views - 1, 1) - 0.5)
            for t in range(frames):
                p = p0 + vel * t
                cx = math.cos(a) * p[0] + math.sin(a) * p[2]
                cy = p[1]
                w = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2))[..., None]
                out[v, t] = out[v, t] * (1 - w) + color * w
    return out.clamp(0, 1)


class BlobGrids:
    """Endless synthetic grids; each rank seeds its own stream."""

    def __init__(self, views: int, frames: int, size: int, seed: int = 0):
        self.views, self.frames, self.size = views, frames, size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> dict:
        return {"frames": blob_grid(self.views, self.frames, self.size, self.generator), "prompt": ""}


# ---------------------------------------------------------------- synthetic 4D scenes

# Training scenes use seeds 0 .. scenes-1; held-out ones core.synthetic.EVAL_SEED_BASE + i.


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("FUSE4D_CACHE", os.path.expanduser("~/.cache/fuse4d")), "video_scenes")


def scene_config(views: int, frames: int, size: int, **overrides):
    """The SyntheticConfig of a square V x T scene grid (everything else at the project's defaults)."""
    from ..synthetic import SyntheticConfig

    return replace(SyntheticConfig(), views=views, frames=frames, width=size, height=size, **overrides)


def _config_key(cfg) -> str:
    text = json.dumps(asdict(cfg), sort_keys=True)
    return f"{cfg.views}x{cfg.frames}_{cfg.width}x{cfg.height}_" + hashlib.sha1(text.encode()).hexdigest()[:10]


class SceneCache:
    """Renders of scene `seed` under one SyntheticConfig, [V, T, H, W, 3] uint8, in memory and on disk
    (`cache_dir`/<config key>/seed_NNNNNNN.safetensors; None = memory only). A render takes seconds on
    the CPU, so every run after the first reads them back."""

    def __init__(self, cfg, cache_dir: str | None = None):
        self.cfg = cfg
        self.folder = os.path.join(cache_dir, _config_key(cfg)) if cache_dir else None
        self.memory: dict[tuple[int, bool], dict] = {}

    def _path(self, seed: int, heldout: bool) -> str:
        return os.path.join(self.folder, f"seed_{seed:07d}{'_h' if heldout else ''}.safetensors")

    def get(self, seed: int, heldout: bool = False) -> dict:
        """{"images": [V,T,H,W,3] float in [0,1]} (+ "heldout" [Vh,T,H,W,3] when asked)."""
        key = (int(seed), bool(heldout))
        if key not in self.memory:
            self.memory[key] = self._load(*key)
        return {k: v.float() / 255.0 for k, v in self.memory[key].items()}

    def _load(self, seed: int, heldout: bool) -> dict:
        from safetensors.torch import load_file, save_file

        path = self._path(seed, heldout) if self.folder else None
        if path and os.path.exists(path):
            return load_file(path)
        if path and not heldout and os.path.exists(self._path(seed, True)):  # a superset is on disk
            return {"images": load_file(self._path(seed, True))["images"]}
        from ..synthetic import make_frames, render_grid, rig_cameras

        frames = make_frames(seed, self.cfg)
        cameras, held = rig_cameras(self.cfg)
        out = {"images": _to_uint8(render_grid(frames, cameras, self.cfg.background))}
        if heldout:
            out["heldout"] = _to_uint8(render_grid(frames, held, self.cfg.background))
        if path:
            os.makedirs(self.folder, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"  # ranks may render the same seed at once
            save_file(out, tmp, metadata={"seed": str(seed), "config": json.dumps(asdict(self.cfg))})
            os.replace(tmp, path)
        return out


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).contiguous()


def augment_grid(grid: torch.Tensor, reverse: bool, mirror: bool) -> torch.Tensor:
    """Reverse the view order (the paper's augmentation) and/or mirror the world left-right: images
    flipped horizontally AND views reversed, so the arc still runs the same way round."""
    if reverse:
        grid = grid.flip(0)
    if mirror:
        grid = grid.flip(0).flip(3)
    return grid


class SceneGrids:
    """Synthetic 4D scenes with seeds 0 .. scenes-1, drawn at random (per-rank stream), each rendered
    once (SceneCache); random view reversal / mirroring with the given probabilities."""

    def __init__(self, views: int, frames: int, size: int, scenes: int = 160, seed: int = 0,
                 cache_dir: str | None = None, reverse_views: float = 0.5, mirror: float = 0.5):
        if scenes < 1:
            raise ValueError(f"SceneGrids needs at least one scene, got {scenes}")
        self.cache = SceneCache(scene_config(views, frames, size), cache_dir)
        self.scenes, self.reverse_views, self.mirror = int(scenes), float(reverse_views), float(mirror)
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> dict:
        g = self.generator
        seed = int(torch.randint(self.scenes, (1,), generator=g))
        reverse, mirror = (bool(torch.rand(1, generator=g) < p) for p in (self.reverse_views, self.mirror))
        grid = augment_grid(self.cache.get(seed)["images"], reverse, mirror)
        return {"frames": grid, "prompt": "", "seed": seed}


SYMMETRIC_RIGS = ("fixed", "arcs")  # arcs centred on azimuth 0: a mirrored world has the same cameras


class MotionGrids:
    """Ray-cast dynamic scenes with real motion (core/motion_scenes.py), seeds 0 .. scenes-1 drawn at
    random (per-rank stream). Each is rendered once and kept in memory and, with `cache_dir`, on disk
    (uint8 safetensors), so later runs and resumed runs read them back; random view reversal and
    mirroring as for SceneGrids."""

    def __init__(self, views: int, frames: int, size: int, scenes: int = 2000, seed: int = 0,
                 cache_dir: str | None = None, reverse_views: float = 0.5, mirror: float = 0.5, rig: str = "fixed",
                 **scene):
        from ..motion_scenes import MotionSceneConfig

        if scenes < 1:
            raise ValueError(f"MotionGrids needs at least one scene, got {scenes}")
        self.cfg = MotionSceneConfig(views=views, frames=frames, size=size, rig=rig, **scene)
        text = json.dumps(asdict(self.cfg), sort_keys=True)
        key = f"motion_{views}x{frames}_{size}_{rig}_" + hashlib.sha1(text.encode()).hexdigest()[:10]
        self.folder = os.path.join(cache_dir, key) if cache_dir else None
        self.scenes, self.reverse_views, self.mirror = int(scenes), float(reverse_views), float(mirror)
        self.generator = torch.Generator().manual_seed(seed)
        self.memory: dict[int, torch.Tensor] = {}

    def grid(self, seed: int) -> torch.Tensor:
        """[V, T, H, W, 3] float in [0, 1] of scene `seed`."""
        if seed not in self.memory:
            self.memory[seed] = self._load(seed)
        return self.memory[seed].float() / 255.0

    def _load(self, seed: int) -> torch.Tensor:
        from safetensors.torch import load_file, save_file

        from ..motion_scenes import make_motion_scene

        path = os.path.join(self.folder, f"seed_{seed:07d}.safetensors") if self.folder else None
        if path and os.path.exists(path):
            return load_file(path)["images"]
        images = _to_uint8(make_motion_scene(seed, self.cfg, heldout=False).images)
        if path:
            os.makedirs(self.folder, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            save_file({"images": images}, tmp, metadata={"seed": str(seed)})
            os.replace(tmp, path)
        return images

    def cameras(self, seed: int, reverse: bool, mirror: bool):
        """The cameras of a drawn grid, where they are known: the fixed rig (and each of the "arcs") is
        left-right symmetric, so mirroring (images flipped and views reversed) keeps it; a random rig's
        mirror image is not computed (None), nor is a reversed rig."""
        from ..motion_scenes import scene_cameras

        if reverse or (mirror and self.cfg.rig not in SYMMETRIC_RIGS):
            return None
        return scene_cameras(0 if self.cfg.rig == "fixed" else seed, self.cfg)

    def next(self) -> dict:
        g = self.generator
        seed = int(torch.randint(self.scenes, (1,), generator=g))
        reverse, mirror = (bool(torch.rand(1, generator=g) < p) for p in (self.reverse_views, self.mirror))
        out = {"frames": augment_grid(self.grid(seed), reverse, mirror), "prompt": "", "seed": seed}
        cameras = self.cameras(seed, reverse, mirror)
        if cameras is not None:
            out["cameras"] = cameras
        return out


def _read_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_sample(folder: str) -> dict:
    """One sample folder -> {"frames": [V,T,H,W,3]} or {"latents": [C, V*T', h, w], "views": V},
    plus "prompt" (str) and, when present, "text_embeds" [L, D]."""
    from safetensors.torch import load_file, safe_open

    out: dict = {"prompt": ""}
    prompt_path = os.path.join(folder, "prompt.txt")
    if os.path.exists(prompt_path):
        with open(prompt_path, encoding="utf-8") as f:
            out["prompt"] = f.read().strip()
    te = os.path.join(folder, "text_embeds.safetensors")
    if os.path.exists(te):
        out["text_embeds"] = load_file(te)["text_embeds"].float()
    lat = os.path.join(folder, "latents.safetensors")
    if os.path.exists(lat):
        with safe_open(lat, "pt") as f:
            meta = f.metadata() or {}
            out["latents"] = f.get_tensor("latents").float()
        if "views" not in meta:
            raise ValueError(f"{lat}: metadata must hold 'views' (latents are [C, views*frames, h, w])")
        out["views"] = int(meta["views"])
        return out
    cells = {}
    for name in os.listdir(folder):
        m = _FRAME_RE.match(name)
        if m:
            cells[(int(m.group(1)), int(m.group(2)))] = os.path.join(folder, name)
    if not cells:
        raise ValueError(f"{folder}: no vVV_tTTT.png frames and no latents.safetensors")
    views = 1 + max(v for v, _ in cells)
    frames = 1 + max(t for _, t in cells)
    missing = [f"v{v:02d}_t{t:03d}.png" for v in range(views) for t in range(frames) if (v, t) not in cells]
    if missing:
        raise ValueError(f"{folder}: incomplete {views}x{frames} grid, missing {missing[:4]}")
    grid = np.stack([np.stack([_read_png(cells[(v, t)]) for t in range(frames)]) for v in range(views)])
    out["frames"] = torch.from_numpy(grid)
    return out


class FolderDataset:
    """Sample folders under `root`, visited in a per-rank shuffled order, forever."""

    def __init__(self, root: str, rank: int = 0, world: int = 1, seed: int = 0):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"video dataset folder not found: {root}")
        # hidden folders are other tools' temporary ones (e.g. render-dataset's .NAME.partial)
        self.samples = sorted(os.path.join(root, d) for d in os.listdir(root)
                              if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
        if not self.samples:
            raise ValueError(f"{root}: no sample folders (see docs/datasets.md, 'Video model training')")
        self.samples = self.samples[rank::world] or self.samples
        self.rng = np.random.default_rng(seed + rank)
        self.order: list[int] = []

    def next(self) -> dict:
        if not self.order:
            self.order = list(self.rng.permutation(len(self.samples)))
        return read_sample(self.samples[self.order.pop()])
