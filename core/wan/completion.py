# SPDX-License-Identifier: GPL-3.0-or-later
"""The 4D completion benchmark: does motion given in one view reach every other view?

Held-out scenes with real motion (core/motion_scenes.py, seeds EVAL_SEED_BASE + i, never trained on),
seen by a fixed or a random camera rig. Tasks:
  "completion"   the frozen-time row (every view at t = 0) and view 0's whole video are given; the
                 other views' videos are determined by the scene, so they are scored against it;
  "frozen-time"  the row alone: the motion is the model's to invent (scored for the amount of motion
                 and cross-view consistency; its PSNR is reported only as a reference).
Beside the model, on the same cells:
  "static"       each view's t = 0 frame copied over time: what a model that learnt no motion scores;
  "time-only"    the control: each view generated alone (V = 1 grids: view attention cannot happen),
                 view 0 still given in full. It cannot know the other views' motion, so it must score
                 like frozen-time; if it scores like completion, the benchmark does not need cross-view flow.
Scores are over the completion cells (views 1.., t >= 1) for every method: PSNR / SSIM per frame on all
pixels, PSNR over the moving pixels (ground truth differs from its t = 0 frame), and the motion amount.
Differences are paired per scene (mean and standard error over the held-out scenes).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from ..motion_scenes import MotionSceneConfig, make_motion_scene, motion_statistics, moving_mask
from ..synthetic import EVAL_SEED_BASE
from .metrics import psnr_frames, ssim_frames
from .pipeline import Generate4DConfig, generate_4d

METHODS = ("completion", "frozen-time", "time-only", "static")


@dataclass
class CompletionBenchConfig:
    views: int = 4
    frames: int = 8
    size: int = 64
    scenes: int = 8                 # held-out scenes: seeds seed_base .. seed_base + scenes - 1
    rig: str = "fixed"              # "fixed" | "random" (core/motion_scenes.py)
    arc_deg: float = 90.0           # the fixed rig's arc (90: the benchmark; narrower: views that see more alike)
    seed_base: int = EVAL_SEED_BASE
    steps: int = 4                  # sampling steps
    sample_seed: int = 0            # noise seed of scene i is sample_seed + i
    methods: tuple[str, ...] = ("completion", "frozen-time", "time-only")
    progress: bool = False


def scene_config(cfg: CompletionBenchConfig) -> MotionSceneConfig:
    return MotionSceneConfig(views=cfg.views, frames=cfg.frames, size=cfg.size, rig=cfg.rig, arc_deg=cfg.arc_deg)


def check_layout(cfg: CompletionBenchConfig, trained: dict) -> None:
    """One clear error when the benchmark asks for a layout the model was not trained for."""
    want = {"views": cfg.views, "frames": cfg.frames, "size": cfg.size}
    wrong = {k: (v, trained.get(k)) for k, v in want.items() if trained.get(k) is not None and trained[k] != v}
    if wrong:
        said = ", ".join(f"{k} {v} (trained: {t})" for k, (v, t) in wrong.items())
        raise ValueError(f"the video model was not trained for this layout: {said}")
    if cfg.views < 2:
        raise ValueError("the completion benchmark needs at least 2 views")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {METHODS}")


def benchmark_scenes(cfg: CompletionBenchConfig, heldout: bool = False) -> list:
    """The held-out MotionScenes (ground truth), rendered in closed form (no cache needed)."""
    sc = scene_config(cfg)
    return [make_motion_scene(cfg.seed_base + i, sc, heldout=heldout) for i in range(cfg.scenes)]


def completion_cells(views: int, frames: int) -> torch.Tensor:
    """Bool [V, T]: what completion generates (views 1.., t >= 1); every method is scored there."""
    m = torch.ones(views, frames, dtype=torch.bool)
    m[0] = False
    m[:, 0] = False
    return m


@torch.no_grad()
def generate(method: str, model, vcfg, codec, truth: torch.Tensor, cfg: CompletionBenchConfig, seed: int,
             cameras=None) -> torch.Tensor:
    """The [V, T, H, W, 3] grid `method` produces for ground truth `truth` (only its given cells are read;
    `cameras`, the V views' cameras, only for models with ray channels)."""
    V, T = truth.shape[:2]
    if method == "static":
        return truth[:, :1].expand_as(truth).clone()

    def sample(views: int, row, video, noise_seed: int, cams):
        g = Generate4DConfig(views=views, frames=T, height=cfg.size, width=cfg.size, seed=noise_seed,
                             steps=cfg.steps, guidance=1.0, progress=False)
        return generate_4d(model, codec, g, frozen_time=row, fixed_view=video, video_config=vcfg,
                           cameras=cams).frames

    if method == "completion":
        return sample(V, truth[:, 0], truth[0], seed, cameras)
    if method == "frozen-time":
        return sample(V, truth[:, 0], None, seed, cameras)
    if method == "time-only":  # each view alone: view 0 is given whole, the others their t = 0 frame
        views = [truth[0]] + [sample(1, truth[v:v + 1, 0], None, seed * 97 + v,
                                     None if cameras is None else cameras[v:v + 1])[0] for v in range(1, V)]
        return torch.stack(views)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def psnr_masked(pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR over the pixels where `mask` [..., H, W] is set (all channels); nan when none is."""
    n = int(mask.sum())
    if n == 0:
        return float("nan")
    err = ((pred.clamp(0, 1).double() - truth.double()) ** 2).mean(-1)[mask]
    return float(10 * torch.log10(1.0 / err.mean().clamp_min(1e-10)))


def score(pred: torch.Tensor, truth: torch.Tensor, cells: torch.Tensor) -> dict:
    moving = moving_mask(truth) & cells[..., None, None]
    change = (pred[:, 1:] - pred[:, :1]).abs().mean(dim=(-3, -2, -1))[cells[:, 1:]]
    return {"psnr": float(psnr_frames(pred, truth)[cells].mean()), "ssim": float(ssim_frames(pred, truth)[cells].mean()),
            "psnr_moving": psnr_masked(pred, truth, moving), "motion": float(change.mean())}


def paired(rows: list[dict], a: str, b: str, key: str) -> dict:
    """Mean and standard error over scenes of rows[i][a][key] - rows[i][b][key]."""
    d = [r[a][key] - r[b][key] for r in rows if not (math.isnan(r[a][key]) or math.isnan(r[b][key]))]
    if not d:
        return {"mean": float("nan"), "se": float("nan"), "n": 0}
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
    return {"mean": mean, "se": math.sqrt(var / len(d)), "n": len(d)}


def run_benchmark(model, vcfg, codec, cfg: CompletionBenchConfig, scenes: list | None = None,
                  keep_grids: bool = False) -> dict:
    """Every method on every held-out scene: per-scene scores, means, paired differences, seconds."""
    from tqdm.auto import tqdm

    check_layout(cfg, vcfg.extra or {})
    scenes = scenes if scenes is not None else benchmark_scenes(cfg)
    methods = tuple(cfg.methods) + ("static",)
    cells = completion_cells(cfg.views, cfg.frames)
    rows, grids, seconds = [], [], {m: 0.0 for m in methods}
    was_training = model.training
    model.eval()
    try:
        for i, scene in enumerate(tqdm(scenes, desc=f"4D completion ({cfg.rig} rig)", disable=not cfg.progress)):
            truth = scene.images
            row, kept = {"seed": scene.meta["seed"]}, {}
            for m in methods:
                start = time.perf_counter()
                grid = generate(m, model, vcfg, codec, truth, cfg, cfg.sample_seed + i, scene.cameras)
                seconds[m] += time.perf_counter() - start
                row[m] = score(grid, truth, cells)
                kept[m] = grid
            rows.append(row)
            if keep_grids:
                grids.append(kept)
    finally:
        model.train(was_training)
    keys = ("psnr", "ssim", "psnr_moving", "motion")
    means = {m: {k: _nanmean([r[m][k] for r in rows]) for k in keys} for m in methods}
    diffs = {f"{a} - {b}": {k: paired(rows, a, b, k) for k in ("psnr", "psnr_moving", "ssim")}
             for a, b in (("completion", "static"), ("completion", "frozen-time"), ("completion", "time-only"),
                          ("time-only", "frozen-time"), ("frozen-time", "static"))
             if a in methods and b in methods}
    out = {"config": asdict(cfg), "scenes": len(rows), "means": means, "paired": diffs,
           "seconds_per_grid": {m: seconds[m] / max(len(rows), 1) for m in methods},
           "true_motion": _nanmean([score(s.images, s.images, cells)["motion"] for s in scenes]),
           "motion_statistics": motion_statistics([s.images for s in scenes]),
           "per_scene": rows}
    if keep_grids:
        out["grids"] = grids
    return out


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")


def targets(result: dict) -> dict:
    """The benchmark's targets (docs/results.md), each {"measured", "target", "met"}."""
    p = result["paired"]
    checks = []
    if "completion - static" in p:
        checks.append(("moving-pixel PSNR, completion - static (dB)", p["completion - static"]["psnr_moving"]["mean"],
                       ">=", 3.0))
        checks.append(("all-pixel PSNR, completion - static (dB)", p["completion - static"]["psnr"]["mean"], ">", 0.0))
    if "completion - frozen-time" in p:
        checks.append(("PSNR, completion - frozen-time (dB)", p["completion - frozen-time"]["psnr"]["mean"], ">=", 2.0))
    if "time-only - frozen-time" in p:
        checks.append(("|PSNR, time-only - frozen-time| (dB)", abs(p["time-only - frozen-time"]["psnr"]["mean"]),
                       "<=", 0.5))
    ops = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b}
    return {name: {"measured": v, "target": f"{op} {t}", "met": bool(ops[op](v, t))} for name, v, op, t in checks}


@torch.no_grad()
def consistency_psnr(recon, grid: torch.Tensor, scene) -> float:
    """Cross-view consistency of a grid: reconstruct it into 4D Gaussians (the feed-forward
    reconstructor), bring them into the scene's world by the input cameras, render them at the held-out
    cameras and score those against the held-out ground truth (mean PSNR over all timesteps)."""
    from ..recon.align import align_frames
    from ..recon import reconstruct_grid
    from ..render import render

    V, T, H, W, _ = grid.shape
    frames, predicted = reconstruct_grid(recon, grid.permute(0, 1, 4, 2, 3))
    known = scene.cameras.resized(predicted.width, predicted.height)
    aligned, _ = align_frames(frames, predicted, known)
    held = scene.heldout.resized(predicted.width, predicted.height)
    scores = []
    for t in range(T):
        out = render(aligned[t], held).rgb.clamp(0, 1)
        if out.shape[1:3] != (H, W):
            out = torch.nn.functional.interpolate(out.permute(0, 3, 1, 2), size=(H, W), mode="bilinear",
                                                  antialias=True).permute(0, 2, 3, 1)
        scores.append(psnr_frames(out, scene.heldout_images[:, t]))
    return float(torch.stack(scores).mean())
