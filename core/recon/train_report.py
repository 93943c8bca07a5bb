# SPDX-License-Identifier: GPL-3.0-or-later
"""After `fuse4d train-recon`: export the trained reconstructor (safetensors, config in the metadata)
and a JSON record beside it: configs, steps, wall time, a loss-curve summary, and the held-out PSNR
of the trained model against the untrained one (the model as it was at step 0, whose zero-initialised
Gaussian head makes it the analytic mode) and against the trained model in analytic mode."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_output


def loss_summary(losses: list[float], static_steps: int, points: int = 20) -> dict:
    """Per stage: mean of the first and the last 10 % of steps, and the minimum; plus the whole curve
    averaged into `points` buckets."""
    def stage(values: list[float]) -> dict:
        if not values:
            return {}
        k = max(1, len(values) // 10)
        return {"steps": len(values), "first": float(np.mean(values[:k])), "last": float(np.mean(values[-k:])),
                "min": float(np.min(values))}

    curve = [float(np.mean(c)) for c in np.array_split(np.asarray(losses, dtype=float), min(points, len(losses)))
             if len(c)] if losses else []
    return {"static": stage(losses[:static_steps]), "dynamic": stage(losses[static_steps:]), "curve": curve}


def score_models(model: torch.nn.Module, cfg, scenes: int | None = None, progress: bool = True) -> dict:
    """Held-out PSNR of: the trained model, the trained model without its Gaussian head (analytic), the
    untrained model (step 0: a zero Gaussian head, i.e. analytic). Same held-out scenes for all."""
    from .train import build_model, evaluate, scene_cache
    from .train_data import SyntheticSource

    scenes = scenes or cfg.eval_scenes
    source = SyntheticSource(cfg.synth, cache_size=scenes, cache_dir=scene_cache(cfg))
    device = next(model.parameters()).device
    kwargs = dict(synth=cfg.synth, scenes=scenes, source=source, progress=progress)
    scores = {"trained": evaluate(model, **kwargs),
              "trained_analytic": evaluate(model, analytic=True, **kwargs)}
    untrained = build_model(cfg).to(device)
    scores["untrained"] = evaluate(untrained, **kwargs)
    scores["gain_db"] = scores["trained"]["psnr_heldout"] - scores["untrained"]["psnr_heldout"]
    return scores


def export_trained(model: torch.nn.Module, cfg, path: str | Path, result: dict, scenes: int | None = None) -> dict:
    """Write `path` (weights + config metadata) and `path` with .json (the record); returns the record."""
    from .model_api import model_config, save_reconstructor

    path = Path(path)
    t0 = time.perf_counter()
    scores = score_models(model, cfg, scenes)
    eval_seconds = time.perf_counter() - t0
    record = {
        "format": "fuse4d-recon-record",
        "weights": path.name,
        "model_config": model_config(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_config": cfg.to_json(),
        "steps": int(result["step"]),
        "train_seconds": round(float(result.get("seconds", 0.0)), 1),
        "train_cpu_seconds": round(float(result.get("cpu_seconds", 0.0)), 1),
        "eval_seconds": round(eval_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loss": loss_summary(list(result.get("losses", [])), cfg.static_steps),
        "scores": scores,
        "eval": {"scenes": scores["trained"]["scenes"], "seed_base": scores["trained"]["seed_base"],
                 "metric": "PSNR (dB) of renders at the held-out cameras of held-out synthetic scenes, "
                           "mean over scenes and timesteps"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_reconstructor(model, path, {"producer": "fuse4d train-recon", "steps": str(record["steps"])})
    record["bytes"] = path.stat().st_size
    with atomic_output(path.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    return record
