# SPDX-License-Identifier: GPL-3.0-or-later
"""Training samples for the reconstructor: synthetic dynamic scenes made on the fly (deterministic
by seed, cached in memory) or read from a dataset folder in the 4D layout (docs/datasets.md).

A sample is the V x T grid of input images, the held-out images of the same timesteps, and both
camera sets with every camera expressed in the first input camera's frame (the frame the
reconstructor predicts in): viewmat_rel = viewmat @ inv(viewmat_0).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cameras import Cameras, cameras_from_dicts
from ..synthetic import EVAL_SEED_BASE, SyntheticConfig, make_scene, read_grid, rig_cameras


@dataclass
class Sample:
    images: torch.Tensor          # [V, T, H, W, 3] in [0, 1]: the model input
    heldout_images: torch.Tensor  # [Vh, T, H, W, 3]
    cameras: Cameras              # V input cameras, first-camera frame (cameras.viewmats[0] = I)
    heldout: Cameras              # Vh held-out cameras, first-camera frame
    background: tuple[float, float, float]
    seed: int = -1
    depth: torch.Tensor | None = None  # [V, T, H, W] ground-truth depth of the input views, if known

    def window(self, start: int, length: int) -> "Sample":
        """The timesteps start .. start + length - 1."""
        sl = slice(start, start + length)
        return Sample(self.images[:, sl], self.heldout_images[:, sl], self.cameras, self.heldout,
                      self.background, self.seed, None if self.depth is None else self.depth[:, sl])


def relative_to_first(cameras: Cameras, first_viewmat: torch.Tensor) -> Cameras:
    """Cameras re-expressed in the frame of the camera whose world-to-camera matrix is given."""
    inv0 = torch.linalg.inv(first_viewmat.to(torch.float64))
    viewmats = (cameras.viewmats.to(torch.float64) @ inv0).to(cameras.viewmats.dtype)
    return Cameras(viewmats, cameras.Ks.clone(), cameras.width, cameras.height)


@torch.no_grad()
def scene_depth(frames, cameras: Cameras) -> torch.Tensor:
    """Ground-truth depth [V, T, H, W] (camera z; 0 where nothing opaque is hit) of synthetic frames."""
    from ..render import render

    depths = []
    for g in frames:
        out = render(g, cameras)
        depths.append(torch.where(out.alpha[..., 0] > 0.5, out.depth[..., 0], torch.zeros(())))
    return torch.stack(depths, 1)


class SyntheticSource:
    """Scenes made by `make_scene(seed, cfg)`; the same seed always gives the same sample. `depth`
    adds the ground-truth depth of the input views. `cache_dir` keeps made scenes on disk (keyed by
    the config), so resumed runs and sibling runs (ablation variants) do not make them again."""

    def __init__(self, cfg: SyntheticConfig, cache_size: int = 256, cache_dir: str | Path | None = None,
                 depth: bool = False):
        self.cfg = cfg
        self.cache_size = cache_size
        self.depth = depth
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._cache: dict[int, Sample] = {}
        cams, held = rig_cameras(cfg)
        v0 = cams.viewmats[0]
        self._cameras, self._heldout = relative_to_first(cams, v0), relative_to_first(held, v0)
        text = json.dumps(dataclasses.asdict(cfg), sort_keys=True) + "|v1"
        self._key = hashlib.sha1(text.encode()).hexdigest()[:12]

    def _path(self, seed: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"synth_{self._key}_{seed:08d}.safetensors"

    def _make(self, seed: int) -> dict[str, torch.Tensor]:
        path = self._path(seed)
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if not self.depth or "depth" in tensors:
                return tensors
        scene = make_scene(seed, self.cfg)
        tensors = {"images": scene.images.contiguous(), "heldout_images": scene.heldout_images.contiguous()}
        if self.depth:
            tensors["depth"] = scene_depth(scene.frames, scene.cameras).contiguous()
        if path is not None:
            from safetensors.torch import save_file

            from ..io import atomic_output

            with atomic_output(path) as tmp:
                save_file(tensors, str(tmp))
        return tensors

    def get(self, seed: int) -> Sample:
        if seed not in self._cache:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            t = self._make(seed)
            self._cache[seed] = Sample(t["images"], t["heldout_images"], self._cameras, self._heldout,
                                       tuple(self.cfg.background), seed, t.get("depth") if self.depth else None)
        return self._cache[seed]


class FolderSource:
    """Samples of a dataset folder (sample_*/ with cameras.json); seed i = the i-th sample folder."""

    def __init__(self, root: str | Path, background=(0.55, 0.65, 0.8), cache_size: int = 256):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        self.folders = sorted(p for p in self.root.iterdir() if (p / "cameras.json").is_file())
        if not self.folders:
            raise FileNotFoundError(f"{self.root}: no sample folders with cameras.json (see docs/datasets.md)")
        self.background = tuple(background)
        self.cache_size = cache_size
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.folders)

    def get(self, seed: int) -> Sample:
        index = seed % len(self.folders)
        if index not in self._cache:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = read_sample(self.folders[index], self.background)
        return self._cache[index]


def read_sample(folder: str | Path, background=(0.55, 0.65, 0.8)) -> Sample:
    """One sample folder of the 4D dataset layout, with its held-out views and cameras."""
    folder = Path(folder)
    meta = json.loads((folder / "cameras.json").read_text())
    if not meta.get("views") or not meta.get("heldout"):
        raise ValueError(f"{folder / 'cameras.json'}: training needs both 'views' and 'heldout' cameras")
    images = read_grid(folder)
    held = read_grid_named(folder / "heldout", "h")
    cams, heldout = cameras_from_dicts(meta["views"]), cameras_from_dicts(meta["heldout"])
    if len(cams) != images.shape[0] or len(heldout) != held.shape[0]:
        raise ValueError(f"{folder}: cameras.json lists {len(cams)}+{len(heldout)} cameras but the folder "
                         f"holds {images.shape[0]}+{held.shape[0]} views")
    depth = None
    if (folder / "depth.safetensors").is_file():  # written by `fuse4d render-dataset`
        from safetensors.torch import load_file

        depth = load_file(str(folder / "depth.safetensors"))["depth"].float()
        if tuple(depth.shape) != tuple(images.shape[:4]):
            raise ValueError(f"{folder / 'depth.safetensors'}: depth {tuple(depth.shape)} does not match the "
                             f"{tuple(images.shape[:4])} grid")
    v0 = cams.viewmats[0]
    return Sample(images, held, relative_to_first(cams, v0), relative_to_first(heldout, v0),
                  tuple(meta.get("background", background)), int(meta.get("seed", -1)), depth)


def read_grid_named(folder: Path, prefix: str) -> torch.Tensor:
    """A grid whose files are named {prefix}VV_tTTT.png (held-out views use 'h')."""
    import re

    from ..images import load_image

    cells = {}
    for path in folder.iterdir():
        m = re.fullmatch(rf"{prefix}(\d+)_t(\d+)\.png", path.name)
        if m:
            cells[int(m.group(1)), int(m.group(2))] = path
    if not cells:
        raise FileNotFoundError(f"{folder}: no images named {prefix}VV_tTTT.png")
    V, T = max(v for v, _ in cells) + 1, max(t for _, t in cells) + 1
    if len(cells) != V * T:
        raise ValueError(f"{folder}: the {V}x{T} grid is incomplete")
    return torch.stack([torch.stack([torch.from_numpy(load_image(cells[v, t])) for t in range(T)])
                        for v in range(V)])


def make_source(data: str, synth: SyntheticConfig, cache_dir: str | Path | None = None, depth: bool = False):
    """'synthetic' -> scenes made on the fly (with ground-truth depth if `depth`); anything else is a
    dataset folder."""
    if data == "synthetic":
        return SyntheticSource(synth, cache_dir=cache_dir, depth=depth)
    return FolderSource(data, synth.background)


def shard(seeds: list[int], rank: int, world: int) -> list[int]:
    """This rank's share of the scene seeds (DistributedSampler-style: strided, disjoint)."""
    return seeds[rank::world] if world > 1 else list(seeds)
