# SPDX-License-Identifier: GPL-3.0-or-later
"""Image files: PNG writing, contact sheets and simple previews (Pillow + numpy)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .io.atomic import atomic_output


def to_uint8(image) -> np.ndarray:
    """[H, W, 3|4] floats in [0, 1] (numpy or torch) -> uint8 array."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | Path, image) -> Path:
    """Write one image atomically (a failure never leaves a half-written file)."""
    from PIL import Image

    path = Path(path)
    with atomic_output(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    return path


def contact_sheet(images: Sequence, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile equally sized images into one uint8 grid, row-major."""
    tiles = [to_uint8(im)[..., :3] for im in images]
    if not tiles:
        raise ValueError("contact_sheet needs at least one image")
    h, w = tiles[0].shape[:2]
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 32, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = tile
    return sheet


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 RGB in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
