# SPDX-License-Identifier: GPL-3.0-or-later
"""Training samples for the 4D video model: a V x T grid of frames (or its latents) + text states.

Sources:
  * a dataset folder (docs/datasets.md, section "Video model training"): per sample either the PNG grid
    `vVV_tTTT.png` (+ optional prompt.txt), or precomputed `latents.safetensors` (+ `text_embeds.safetensors`);
  * `BlobGrids`: synthetic grids generated on the fly (coloured blobs moving in 3D, seen by V cameras on
    an arc), for the tiny CPU configuration.
"""
from __future__ import annotations

import math
import os
import re

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
        self.samples = sorted(os.path.join(root, d) for d in os.listdir(root)
                              if os.path.isdir(os.path.join(root, d)))
        if not self.samples:
            raise ValueError(f"{root}: no sample folders (see docs/datasets.md, 'Video model training')")
        self.samples = self.samples[rank::world] or self.samples
        self.rng = np.random.default_rng(seed + rank)
        self.order: list[int] = []

    def next(self) -> dict:
        if not self.order:
            self.order = list(self.rng.permutation(len(self.samples)))
        return read_sample(self.samples[self.order.pop()])
