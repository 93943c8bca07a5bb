# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading a V x T grid of images for the reconstructor.

Accepted layouts of FRAMES_DIR (docs/reconstruction.md):
  vVV_tTTT.png files (the 4D dataset layout: view VV, timestep TTT; .png/.jpg/.jpeg/.webp), or
  one sub-folder per view (sorted by name) holding that view's frames (sorted by name)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
GRID_NAME = re.compile(r"^v(\d+)_t(\d+)$")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def grid_files(folder: str | Path, views: int | None = None) -> list[list[Path]]:
    """-> files[v][t]. Raises ValueError naming the problem (missing cell, ragged views, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: frames folder not found")
    named = {}
    for p in _images(folder):
        m = GRID_NAME.match(p.stem)
        if m:
            named[int(m.group(1)), int(m.group(2))] = p
    if named:
        V = max(v for v, _ in named) + 1
        T = max(t for _, t in named) + 1
        missing = [f"v{v:02d}_t{t:03d}" for v in range(V) for t in range(T) if (v, t) not in named]
        if missing:
            raise ValueError(f"{folder}: the {V} x {T} grid is incomplete, missing {missing[:8]}")
        files = [[named[v, t] for t in range(T)] for v in range(V)]
    else:
        subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and _images(d))
        if not subdirs:
            raise ValueError(f"{folder}: no vVV_tTTT images and no per-view sub-folders with images")
        files = [_images(d) for d in subdirs]
        counts = {len(f) for f in files}
        if len(counts) > 1:
            raise ValueError(f"{folder}: views have different frame counts "
                             f"({', '.join(f'{d.name}: {len(f)}' for d, f in zip(subdirs, files))})")
    if views is not None and len(files) != views:
        raise ValueError(f"{folder}: found {len(files)} views, --views says {views}")
    return files


def target_size(h: int, w: int, width: int, patch: int) -> tuple[int, int]:
    """VGGT's 'crop' preprocessing size: width `width` (rounded down to a patch multiple), height
    scaled and rounded to a multiple of the patch; a height above the width is centre-cropped to it."""
    width = max(patch, width // patch * patch)
    new_h = max(patch, int(round(h * width / w / patch)) * patch)
    return min(new_h, width), width


def fit_to_patch(images: torch.Tensor, width: int, patch: int) -> torch.Tensor:
    """images [..., 3, h, w] in [0, 1] -> [..., 3, H, W] at `target_size` (bicubic with antialiasing,
    clamped; portrait images centre-cropped like VGGT's 'crop' mode). Unchanged when they already fit."""
    h, w = images.shape[-2:]
    H, W = target_size(h, w, width, patch)
    if (h, w) == (H, W):
        return images
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).float()
    scaled_h = max(patch, int(round(h * W / w / patch)) * patch)
    x = F.interpolate(x, size=(scaled_h, W), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top = (scaled_h - H) // 2
    return x[..., top:top + H, :].reshape(*lead, 3, H, W)


def load_grid(files: list[list[Path]], width: int, patch: int) -> torch.Tensor:
    """-> images [V, T, 3, H, W] in [0, 1], resized to a patch-multiple size (`fit_to_patch`)."""
    from ..images import load_image

    first = load_image(files[0][0])
    rows = []
    for view in files:
        frames = []
        for path in view:
            im = load_image(path)
            if im.shape[:2] != first.shape[:2]:
                raise ValueError(f"{path}: size {im.shape[1]}x{im.shape[0]} differs from "
                                 f"{first.shape[1]}x{first.shape[0]} of {files[0][0].name}")
            x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
            frames.append(fit_to_patch(x, width, patch))
        rows.append(torch.stack(frames))
    return torch.stack(rows)
