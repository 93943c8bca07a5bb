# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's 4D completion: one view's video + the frozen-time row of a dynamic scene in, the other
views' videos (the 4D grid) and animated Gaussians out, scored against the scene's ground truth.

The bundled scene (data/dynamic_scene) is a held-out sample of the completion benchmark in the 4D
dataset layout (docs/datasets.md): vVV_tTTT.png, heldout/hVV_tTTT.png, cameras.json. Any sample of
that layout with the model's views, frames and size works (`fuse4d demo --scene DIR`).
Written under DIR/completion/:
  sequence/          the animated Gaussians (manifest + one PLY per timestep) in the scene's world
  preview.gif        per view: ground truth | generated | static copy, playing over time
  contact_sheet.png  per view three rows (ground truth, generated, static copy), time left to right
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

DYNAMIC_SCENE = Path(__file__).resolve().parents[2] / "data" / "dynamic_scene"


def load_scene(folder: str | Path):
    """The Sample (recon.train_data) of a 4D dataset folder; one clear error if it is not one."""
    from ..recon.train_data import read_sample

    folder = Path(folder)
    if not (folder / "cameras.json").is_file():
        raise ValueError(f"{folder}: not a 4D dataset sample (no cameras.json; see docs/datasets.md)")
    try:
        sample = read_sample(folder)
    except (KeyError, TypeError, OSError) as exc:
        raise ValueError(f"{folder}: not a readable 4D dataset sample ({exc})") from exc
    return sample


def check_fits(sample, sampling: dict) -> None:
    V, T, H, W, _ = sample.images.shape
    want = (sampling["views"], sampling["frames"], sampling["size"], sampling["size"])
    if (V, T, H, W) != want:
        raise ValueError(f"the scene is {V} views x {T} frames at {W}x{H}; the completion model was trained for "
                         f"{want[0]} views x {want[1]} frames at {want[3]}x{want[2]}")


def _rows(truth, generated, static, v: int) -> list:
    return [truth[v], generated[v], static[v]]


def write_completion_preview(path: Path, truth, generated, static, size: int, fps: float) -> Path:
    """GIF: one row per view, columns ground truth | generated | static copy, over time."""
    from PIL import Image

    from ..io import atomic_output
    from .demo import _tile

    V, T = truth.shape[:2]
    pad = 4
    frames = []
    for t in range(T):
        canvas = Image.new("RGB", (3 * size + 2 * pad, V * size + (V - 1) * pad), (32, 32, 32))
        for v in range(V):
            for c, grid in enumerate((truth, generated, static)):
                canvas.paste(_tile(grid[v, t], size), (c * (size + pad), v * (size + pad)))
        frames.append(canvas)
    with atomic_output(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


@dataclass
class Prepared:
    model: torch.nn.Module
    video_config: object
    codec: object
    sample: object               # recon.train_data.Sample
    scene_dir: str
    load_s: float


def prepare_completion(scene_dir: str | Path, model_dir: str | Path | None, device: torch.device) -> Prepared:
    """Load the completion model and the scene and check they fit, before anything is written."""
    from ..wan.export_completion import MOTION_VIDEO_DIR
    from ..wan.tiny import load_tiny_video_model, sampling_defaults

    t0 = time.perf_counter()
    sample = load_scene(scene_dir)
    model, vcfg, codec = load_tiny_video_model(model_dir or MOTION_VIDEO_DIR, device=device)
    check_fits(sample, sampling_defaults(vcfg))
    return Prepared(model, vcfg, codec, sample, str(scene_dir), time.perf_counter() - t0)


def run_completion(out: Path, prep: Prepared, recon, seed: int, preview_size: int) -> dict:
    """Everything the demo writes and measures for the completion; returns its metrics."""
    from ..images import contact_sheet, save_png
    from ..io import write_sequence
    from ..recon import reconstruct_grid
    from ..recon.align import align_frames
    from ..wan.completion import CompletionBenchConfig, completion_cells, generate, score
    from ..wan.tiny import sampling_defaults
    from .animate import Animated, sequence_of

    model, vcfg, codec, sample = prep.model, prep.video_config, prep.codec, prep.sample
    sampling = sampling_defaults(vcfg)
    truth = sample.images
    V, T = truth.shape[:2]
    timings = {"load_s": prep.load_s}
    device = next(recon.parameters()).device

    t0 = time.perf_counter()
    cfg = CompletionBenchConfig(views=V, frames=T, size=sampling["size"], steps=sampling["steps"])
    grids = {m: generate(m, model, vcfg, codec, truth, cfg, seed, sample.cameras)
             for m in ("completion", "time-only", "static")}
    timings["generate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with torch.no_grad():
        frames, predicted = reconstruct_grid(recon, grids["completion"].permute(0, 1, 4, 2, 3).to(device))
    frames = [g.detach().to("cpu") for g in frames]
    known = sample.cameras.resized(predicted.width, predicted.height)
    aligned, align = align_frames(frames, predicted.to("cpu"), known)
    timings["reconstruct_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    folder = out / "completion"
    folder.mkdir(parents=True, exist_ok=True)
    animated = Animated(grids["completion"], aligned, sample.cameras, align, {})
    write_sequence(folder / "sequence", sequence_of(animated, 8.0, {"producer": "fuse4d demo (completion)"}))
    write_completion_preview(folder / "preview.gif", truth, grids["completion"], grids["static"], preview_size, 8.0)
    tiles = [img for v in range(V) for grid in _rows(truth, grids["completion"], grids["static"], v) for img in grid]
    save_png(folder / "contact_sheet.png", contact_sheet(tiles, columns=T))
    timings["write_s"] = time.perf_counter() - t0

    cells = completion_cells(V, T)
    scores = {m: score(g, truth, cells) for m, g in grids.items()}
    return {"scene": prep.scene_dir, "seed": seed, "views": V, "frames": T, "size": sampling["size"],
            "steps": sampling["steps"], "scored_cells": "views 1.., t >= 1 (view 0's video and the row are given)",
            "generated": scores["completion"], "static_copy": scores["static"], "time_only_control": scores["time-only"],
            "gain_over_static_db": scores["completion"]["psnr"] - scores["static"]["psnr"],
            "gain_over_static_moving_db": scores["completion"]["psnr_moving"] - scores["static"]["psnr_moving"],
            "timings": {k: round(v, 3) for k, v in timings.items()}}
