# SPDX-License-Identifier: GPL-3.0-or-later
"""Ship a trained tiny video model: copy the run's model into weights/video_tiny with its sampling
settings and a record.json of how it was trained and what it scores on held-out scenes.

    python -m fuse4d.core.wan.export_tiny --run runs/video_tiny [--out weights/video_tiny]

record.json holds: the training config, steps, wall and CPU time, loss at the start and the end, the
exact command, held-out metrics of the trained model against an untrained one of the same
architecture (and the static copy-t=0 reference), and a small `check` (2 scenes, few steps) that
tests/test_wan.py reproduces from the shipped weights; check.safetensors holds those two held-out
ground-truth grids (uint8), so the test need not render them.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from ..io import atomic_output
from .evaluate import VideoEvalConfig, evaluate_video_model, evaluation_scenes
from .keys import build_wan_transformer
from .model_io import load_video_model, save_video_model
from .tiny import TINY_VIDEO_DIR, load_codec

CHECK = {"scenes": 2, "steps": 4, "mode": "row", "sample_seed": 0}
METRICS = ("psnr", "ssim", "motion", "true_motion", "static_psnr", "static_ssim", "seconds_per_grid")


def log_rows(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _summary(result: dict) -> dict:
    return {k: round(float(result[k]), 4) for k in METRICS}


def check_config(extra: dict) -> VideoEvalConfig:
    return VideoEvalConfig(views=extra["views"], frames=extra["frames"], size=extra["size"], scenes=CHECK["scenes"],
                           steps=CHECK["steps"], mode=CHECK["mode"], sample_seed=CHECK["sample_seed"],
                           shift=extra["shift"])


def check_scenes(folder: Path) -> list[dict]:
    """The held-out ground truth of the record's check, as evaluate_video_model takes it."""
    from safetensors import safe_open

    with safe_open(str(folder / "check.safetensors"), "pt") as f:
        seeds = json.loads(f.metadata()["seeds"])
        return [{"seed": seed, "images": f.get_tensor(f"seed_{seed}").float() / 255.0} for seed in seeds]


def write_check(out: Path, model, vcfg, codec) -> dict:
    """Score the check setting and store its ground truth next to the weights."""
    from safetensors.torch import save_file

    cfg = check_config(vcfg.extra)
    scenes = evaluation_scenes(cfg)
    save_file({f"seed_{s['seed']}": (s["images"] * 255).round().to(torch.uint8).contiguous() for s in scenes},
              str(out / "check.safetensors"), metadata={"seeds": json.dumps([s["seed"] for s in scenes])})
    return {**CHECK, **_summary(evaluate_video_model(model, vcfg, codec, cfg, scenes=check_scenes(out)))}


def export(run: Path, out: Path, scenes: int, steps: int, command: str, threads: int = 1, note: str = "") -> dict:
    torch.set_num_threads(threads)
    model, vcfg = load_video_model(run / "model")
    state = json.loads(sorted((run / "checkpoints").glob("step_*/state.json"))[-1].read_text())
    train = state["config"]
    extra = {"views": train["views"], "frames": train["frames"], "size": train["size"], "steps": steps,
             "shift": vcfg.flow_shift, "guidance": 1.0}
    vcfg.extra = {**vcfg.extra, **extra}
    codec = load_codec(vcfg)
    torch.manual_seed(0)
    untrained = build_wan_transformer(vcfg.wan).eval()
    base = VideoEvalConfig(views=extra["views"], frames=extra["frames"], size=extra["size"], scenes=scenes,
                           steps=steps, shift=extra["shift"], progress=True)
    held = evaluation_scenes(base)
    metrics = {}
    for mode in ("row", "row+column"):
        cfg = VideoEvalConfig(**{**base.__dict__, "mode": mode})
        metrics[mode] = {"trained": _summary(evaluate_video_model(model, vcfg, codec, cfg, scenes=held)),
                         "untrained": _summary(evaluate_video_model(untrained, vcfg, codec, cfg, scenes=held))}
    out.mkdir(parents=True, exist_ok=True)
    check = write_check(out, model, vcfg, codec)
    rows = [r for r in log_rows(run) if "loss" in r]
    save_video_model(out, model, vcfg)
    size = (out / "model.safetensors").stat().st_size
    record = {
        "what": "tiny fused 4D video model (Wan architecture, pixel space), trained from scratch on the CPU",
        "command": command,
        "export_command": "python -m fuse4d.core.wan.export_tiny " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "train_config": train,
        "model_config": vcfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": size,
        "steps": state["step"],
        "wall_seconds": state.get("spent", {}).get("wall_seconds"),
        "cpu_seconds": state.get("spent", {}).get("cpu_seconds"),
        "threads": train.get("threads"),
        "loss_start": rows[0]["loss"] if rows else None,
        "loss_end": rows[-1]["loss"] if rows else None,
        "loss_log_every": train.get("log_every"),
        "heldout": {"scenes": scenes, "seed_base": base.seed_base, "sample_steps": steps, "metrics": metrics,
                    "note": "PSNR/SSIM over the generated cells only (references excluded); 'static' copies "
                            "each view's t=0 frame over time; motion = mean |frame_t - frame_0|"},
        "check": {**CHECK, **check},
        "notes": note,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    with atomic_output(out / "record.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the train-video output folder")
    p.add_argument("--out", default=str(TINY_VIDEO_DIR))
    p.add_argument("--scenes", type=int, default=8, help="held-out scenes for the record")
    p.add_argument("--steps", type=int, default=16, help="sampling steps the model is shipped and measured with")
    p.add_argument("--command", default="fuse4d train-video --config tiny --out runs/video_tiny",
                   help="the training command, for the record")
    p.add_argument("--note", default="", help="free text for the record (machine load, data rendering, ...)")
    args = p.parse_args(argv)
    record = export(Path(args.run), Path(args.out), args.scenes, args.steps, args.command, note=args.note)
    print(json.dumps({k: record[k] for k in ("steps", "wall_seconds", "cpu_seconds", "loss_start", "loss_end",
                                             "weights_bytes")}, indent=1))
    print(json.dumps(record["heldout"]["metrics"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
