# SPDX-License-Identifier: GPL-3.0-or-later
"""Ship the 4D completion model: a training run (or one of its checkpoints) into weights/video_motion
with its sampling settings and a record.json of how it was trained and what it scores on the 4D
completion benchmark (core/wan/completion.py).

    python -m fuse4d.core.wan.export_completion --run RUN [--checkpoint RUN/checkpoints/step_N] \
        [--out weights/video_motion] [--scenes 16] [--consistency]

record.json: the training config, steps, wall and CPU time, losses, the commands, the benchmark on
the fixed rig (completion, frozen-time, the time-only control, the static copy; paired differences;
the targets) and on random rigs, and a small `check` (2 held-out scenes) that tests/test_completion.py
re-scores from the shipped weights. The benchmark's scenes are ray-cast in closed form, so the check
needs no stored ground truth.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..io import atomic_output
from .completion import CompletionBenchConfig, benchmark_scenes, consistency_psnr, run_benchmark, targets
from .export_tiny import log_rows
from .keys import build_wan_transformer
from .model_io import VideoModelConfig, save_video_model
from .tiny import load_codec

MOTION_VIDEO_DIR = Path(__file__).resolve().parents[2] / "weights" / "video_motion"
CHECK = {"scenes": 2, "steps": 4, "sample_seed": 0, "rig": "fixed"}


def checkpoint_model(folder: str | os.PathLike) -> tuple[torch.nn.Module, VideoModelConfig, dict]:
    """(model with the checkpoint's EMA weights, or its trained weights without EMA; its config; the
    checkpoint's state.json) from a train-video checkpoint folder of a run that trained everything."""
    from safetensors.torch import load_file

    from .attention_processor import add_sync_layers

    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    vcfg = VideoModelConfig.from_dict(state["config"]["model"])
    model = build_wan_transformer(vcfg.wan)
    if vcfg.attention == "parallel":
        add_sync_layers(model)
    weights = load_file(str(folder / "trainable.safetensors"))
    if (folder / "ema.safetensors").exists():
        weights.update(load_file(str(folder / "ema.safetensors")))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: not a full-model checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), vcfg, state


def _summary(result: dict) -> dict:
    keep = ("psnr", "ssim", "psnr_moving", "motion")
    return {"means": {m: {k: round(v[k], 4) for k in keep} for m, v in result["means"].items()},
            "paired": {name: {k: {"mean": round(d["mean"], 4), "se": round(d["se"], 4)} for k, d in diff.items()}
                       for name, diff in result["paired"].items()},
            "seconds_per_grid": {m: round(s, 3) for m, s in result["seconds_per_grid"].items()},
            "true_motion": round(result["true_motion"], 4),
            "motion_statistics": {k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in result["motion_statistics"].items()}}


def score_check(model, vcfg, codec) -> dict:
    """The record's check: 2 held-out scenes of the fixed rig, every method; PSNR rounded."""
    extra = vcfg.extra
    cfg = CompletionBenchConfig(views=extra["views"], frames=extra["frames"], size=extra["size"],
                                scenes=CHECK["scenes"], steps=CHECK["steps"], sample_seed=CHECK["sample_seed"],
                                rig=CHECK["rig"])
    result = run_benchmark(model, vcfg, codec, cfg)
    return {m: {"psnr": round(v["psnr"], 4), "psnr_moving": round(v["psnr_moving"], 4)}
            for m, v in result["means"].items()}


def export(run: Path, out: Path, checkpoint: Path | None, scenes: int, steps: int, command: str,
           consistency: bool = False, threads: int = 2, note: str = "") -> dict:
    torch.set_num_threads(threads)
    if checkpoint is None:
        checkpoint = sorted((run / "checkpoints").glob("step_*/state.json"))[-1].parent
    model, vcfg, state = checkpoint_model(checkpoint)
    train = state["config"]
    vcfg.extra = {**vcfg.extra, "views": train["views"], "frames": train["frames"], "size": train["size"],
                  "steps": steps, "shift": vcfg.flow_shift, "guidance": 1.0}
    codec = load_codec(vcfg)
    base = CompletionBenchConfig(views=train["views"], frames=train["frames"], size=train["size"], scenes=scenes,
                                 steps=steps, progress=True)
    benchmark = {}
    for rig in ("fixed", "random"):
        cfg = replace(base, rig=rig)
        held = benchmark_scenes(cfg, heldout=consistency and rig == "fixed")
        result = run_benchmark(model, vcfg, codec, cfg, scenes=held, keep_grids=consistency and rig == "fixed")
        entry = {**_summary(result), "targets": targets(result), "per_scene": result["per_scene"]}
        if consistency and rig == "fixed":
            entry["consistency"] = consistency_of(result.pop("grids"), held)
        benchmark[rig] = entry
    out.mkdir(parents=True, exist_ok=True)
    save_video_model(out, model, vcfg)
    rows = [r for r in log_rows(run) if "loss" in r and r["step"] <= state["step"]]
    record = {
        "what": "tiny fused 4D video model for completion (Wan architecture, pixel space, 64x64, 4 views x 8 "
                "frames), trained from scratch on the CPU on ray-cast scenes with real motion",
        "command": command,
        "export_command": "python -m fuse4d.core.wan.export_completion " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "train_config": train,
        "model_config": vcfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": (out / "model.safetensors").stat().st_size,
        "steps": state["step"],
        "wall_seconds": state.get("spent", {}).get("wall_seconds"),
        "cpu_seconds": state.get("spent", {}).get("cpu_seconds"),
        "threads": train.get("threads"),
        "loss_start": rows[0]["loss"] if rows else None,
        "loss_end": rows[-1]["loss"] if rows else None,
        "benchmark": {"scenes": scenes, "sample_steps": steps, "seed_base": base.seed_base, **benchmark},
        "check": {**CHECK, "scores": score_check(model, vcfg, codec)},
        "notes": note,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    with atomic_output(out / "record.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return record


def consistency_of(grids: list[dict], scenes: list) -> dict:
    """Mean held-out-camera PSNR through the shipped reconstructor, per method and for the ground truth."""
    from ..jobs.animate import TINY_RECON
    from ..recon import load_reconstructor

    recon = load_reconstructor(TINY_RECON)
    out = {"ground truth": sum(consistency_psnr(recon, s.images, s) for s in scenes) / len(scenes)}
    for method in grids[0]:
        out[method] = sum(consistency_psnr(recon, g[method], s) for g, s in zip(grids, scenes)) / len(scenes)
    return {k: round(v, 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the train-video output folder")
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder of the run (default: its newest)")
    p.add_argument("--out", default=str(MOTION_VIDEO_DIR))
    p.add_argument("--scenes", type=int, default=16, help="held-out scenes per rig for the record")
    p.add_argument("--steps", type=int, default=4, help="sampling steps the model is shipped and measured with")
    p.add_argument("--consistency", action="store_true", help="also score cross-view consistency (reconstructor)")
    p.add_argument("--command", default="fuse4d train-video --config motion --out RUN", help="for the record")
    p.add_argument("--note", default="", help="free text for the record")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    record = export(Path(args.run), Path(args.out), Path(args.checkpoint) if args.checkpoint else None, args.scenes,
                    args.steps, args.command, args.consistency, args.threads, args.note)
    print(json.dumps({k: record[k] for k in ("steps", "wall_seconds", "cpu_seconds", "loss_start", "loss_end")}))
    print(json.dumps({rig: {"means": record["benchmark"][rig]["means"], "targets": record["benchmark"][rig]["targets"]}
                      for rig in ("fixed", "random")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
