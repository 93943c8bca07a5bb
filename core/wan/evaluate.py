# SPDX-License-Identifier: GPL-3.0-or-later
"""Held-out evaluation of a 4D video model on synthetic 4D scenes.

For each held-out scene (seeds EVAL_SEED_BASE + i, never trained on) the model gets the reference
cells of `mode` and generates the rest of the V x T grid:
  "row"         the frozen-time row (every view at t = 0): the demo's job, the motion is the model's guess;
  "row+column"  plus the fixed-view video of view 0 (the paper's evaluation setting): the motion is given.
Scored on the generated cells only: PSNR / SSIM per frame against the ground truth, and motion (mean
|frame_t - frame_0| over t >= 1) of generated vs true grids. The "static" baseline copies each view's
t = 0 frame (given in both modes) to every time step: what a model that learnt no motion would score.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..synthetic import EVAL_SEED_BASE
from .data import SceneCache, default_cache_dir, scene_config
from .metrics import psnr_frames, ssim_frames
from .pipeline import Generate4DConfig, generate_4d

MODES = ("row", "row+column")


@dataclass
class VideoEvalConfig:
    views: int = 4
    frames: int = 8
    size: int = 48
    scenes: int = 4                 # held-out scenes: seeds seed_base .. seed_base + scenes - 1
    seed_base: int = EVAL_SEED_BASE
    steps: int = 16
    mode: str = "row"
    guidance: float = 1.0           # the tiny models have no text: guidance would only double the cost
    shift: float | None = None      # None = the model config's
    sample_seed: int = 0            # noise seed of scene i is sample_seed + i
    heldout: bool = False           # also render held-out cameras (for cross-view consistency)
    cache_dir: str | None = None    # None = the default scene cache
    progress: bool = False


def generated_cells(views: int, frames: int, mode: str) -> torch.Tensor:
    """Bool [V, T]: the cells the model generates (not given as references)."""
    if mode not in MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; choose one of {MODES}")
    m = torch.ones(views, frames, dtype=torch.bool)
    m[:, 0] = False
    if mode == "row+column":
        m[0, :] = False
    return m


def motion(grid: torch.Tensor, cells: torch.Tensor) -> float:
    """Mean |frame_t - frame_0| over the generated cells with t >= 1."""
    diff = (grid[:, 1:] - grid[:, :1]).abs().mean(dim=(-3, -2, -1))  # [V, T-1]
    return float(diff[cells[:, 1:]].mean())


def score_grid(pred: torch.Tensor, truth: torch.Tensor, cells: torch.Tensor) -> dict:
    p, s = psnr_frames(pred, truth), ssim_frames(pred, truth)
    return {"psnr": float(p[cells].mean()), "ssim": float(s[cells].mean()), "motion": motion(pred, cells),
            "true_motion": motion(truth, cells)}


def static_grid(truth: torch.Tensor) -> torch.Tensor:
    return truth[:, :1].expand_as(truth).clone()


def evaluation_scenes(cfg: VideoEvalConfig) -> list[dict]:
    """Ground truth of the held-out scenes (rendered once, cached like the training scenes)."""
    cache = SceneCache(scene_config(cfg.views, cfg.frames, cfg.size), cfg.cache_dir or default_cache_dir())
    return [dict(seed=cfg.seed_base + i, **cache.get(cfg.seed_base + i, heldout=cfg.heldout))
            for i in range(cfg.scenes)]


@torch.no_grad()
def generate_for_scene(model, vcfg, codec, scene: dict, cfg: VideoEvalConfig, index: int):
    truth = scene["images"]
    gcfg = Generate4DConfig(views=cfg.views, frames=cfg.frames, height=cfg.size, width=cfg.size,
                            seed=cfg.sample_seed + index, steps=cfg.steps, guidance=cfg.guidance, shift=cfg.shift,
                            progress=False)
    fixed = truth[0] if cfg.mode == "row+column" else None
    return generate_4d(model, codec, gcfg, frozen_time=truth[:, 0], fixed_view=fixed, video_config=vcfg).frames


def evaluate_video_model(model, vcfg, codec, cfg: VideoEvalConfig, scenes: list[dict] | None = None,
                         keep_grids: bool = False) -> dict:
    """Mean metrics over the held-out scenes (+ the static baseline, per-scene rows, seconds per grid).
    `keep_grids` adds "grids": the generated [V, T, H, W, 3] grids (for the consistency study)."""
    from tqdm.auto import tqdm

    scenes = scenes if scenes is not None else evaluation_scenes(cfg)
    cells = generated_cells(cfg.views, cfg.frames, cfg.mode)
    rows, grids, seconds = [], [], 0.0
    was_training = model.training
    model.eval()
    try:
        for i, scene in enumerate(tqdm(scenes, desc=f"eval {cfg.mode}", disable=not cfg.progress)):
            start = time.perf_counter()
            grid = generate_for_scene(model, vcfg, codec, scene, cfg, i)
            seconds += time.perf_counter() - start
            row = {"seed": scene["seed"], **score_grid(grid, scene["images"], cells)}
            static = score_grid(static_grid(scene["images"]), scene["images"], cells)
            row.update(static_psnr=static["psnr"], static_ssim=static["ssim"])
            rows.append(row)
            if keep_grids:
                grids.append(grid)
    finally:
        model.train(was_training)
    keys = ("psnr", "ssim", "motion", "true_motion", "static_psnr", "static_ssim")
    out = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    out.update(scenes=len(rows), steps=cfg.steps, mode=cfg.mode, seconds_per_grid=seconds / len(rows),
               per_scene=rows)
    if keep_grids:
        out["grids"] = grids
    return out
