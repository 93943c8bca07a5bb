# SPDX-License-Identifier: GPL-3.0-or-later
"""Study: fused vs parallel vs sequential vs time-only attention on the 4D completion task.

The paper's Table 2 (Objaverse, its 11B model, 4k iterations): fused 22.49 / parallel 21.40 /
sequential 5.94 PSNR. Here: the architecture of the shipped completion model (weights/video_motion,
tiny Wan at 64x64, 4 views x 8 frames) trained from scratch with each attention pattern under one
budget (same steps, data stream, seeds, optimiser, constant learning rate), then scored by the 4D
completion benchmark (core/wan/completion.py) on held-out scenes of the fixed rig: the frozen-time row
and view 0's video given, the other views' videos against the ground truth.
  fused       the paper's: same view OR same time, in every block;
  parallel    4Real-Video v1: view and time attention on the same q, k, v, fused by sync layers;
  sequential  even blocks attend across views, odd blocks across time;
  time        the control: never across views (it cannot know the other views' motion).
With a constant learning rate the shipped model's run at step N *is* the fused variant at budget N:
`--fused-checkpoint RUN/checkpoints/step_N` (or a copy) reuses it instead of training it again.

    python studies/video_architectures.py --steps 1000 --out RUNS/study_completion \
        [--fused-checkpoint RUNS/video_motion/checkpoints/step_0001000] [--modes parallel] [--scenes 12]
Resumable: each variant trains into OUT/<mode> and resumes from its checkpoints; a trained variant is
not trained again, and one trained to a smaller budget resumes from there (constant learning rate).
Every variant with a checkpoint at --steps is scored (fused is required). Writes
studies/results/video_architectures_<steps>.json (+ .png) and the docs/results.md section, which
shows every budget that has a JSON (`--from-json` rebuilds it from them).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from results_doc import write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "studies" / "results"
MODES = ("fused", "parallel", "sequential", "time")
PAPER = {"fused": "22.49 / 0.909", "parallel": "21.40 / 0.892", "sequential": "5.94 / 0.444", "time": "-"}
SECTION = "## Video architectures on the completion task: fused vs parallel vs sequential vs time-only"


def variant_checkpoint(mode: str, args) -> Path:
    """Train one variant to args.steps (resuming) and return the checkpoint folder at that step."""
    from fuse4d.core.wan.trainer import motion_config, train_video

    out = Path(args.out) / mode
    final = out / "checkpoints" / f"step_{args.steps:07d}"
    if (final / "state.json").exists():
        return final
    if mode == "fused" and args.fused_checkpoint:
        src = Path(args.fused_checkpoint)
        state = json.loads((src / "state.json").read_text())
        if state["step"] != args.steps or state["config"]["model"]["attention"] != "fused":
            raise ValueError(f"{src}: step {state['step']} ({state['config']['model']['attention']}), "
                             f"the study needs fused at step {args.steps}")
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, final)
        return final
    cfg = replace(motion_config(out=str(out), steps=args.steps, attention=mode), save_every=max(50, args.steps // 10),
                  keep_checkpoints=1, threads=args.threads, progress=not args.quiet)
    train_video(cfg)
    return final


def evaluate(args, checkpoints: dict) -> dict:
    import torch

    from fuse4d.core.wan.completion import CompletionBenchConfig, benchmark_scenes, paired, run_benchmark
    from fuse4d.core.wan.export_completion import checkpoint_model
    from fuse4d.core.wan.tiny import load_codec

    cfg = CompletionBenchConfig(scenes=args.scenes, steps=args.sample_steps, methods=("completion",),
                                progress=not args.quiet)
    scenes = benchmark_scenes(cfg)
    out = {"settings": {"train_steps": args.steps, "scenes": args.scenes, "sample_steps": args.sample_steps,
                        "seed_base": cfg.seed_base, "rig": cfg.rig}, "modes": {}}
    rows = {}
    for mode, ckpt in checkpoints.items():
        model, vcfg, state = checkpoint_model(ckpt)
        torch.manual_seed(0)
        result = run_benchmark(model, vcfg, load_codec(vcfg), cfg, scenes=scenes, keep_grids=True)
        rows[mode] = result["per_scene"]
        out["modes"][mode] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "sync_parameters": sum(p.numel() for n, p in model.named_parameters() if "parallel_sync" in n),
            "cpu_seconds": state.get("spent", {}).get("cpu_seconds"), "steps": state["step"],
            "means": result["means"], "per_scene": result["per_scene"], "example": result["grids"][0]["completion"]}
        out["static"] = result["means"]["static"]
        out["true_motion"] = result["true_motion"]
    diffs = {}
    for mode in rows:
        if mode == "fused" or "fused" not in rows:
            continue
        merged = [{"fused": a["completion"], mode: b["completion"]} for a, b in zip(rows["fused"], rows[mode])]
        diffs[mode] = {k: paired(merged, "fused", mode, k) for k in ("psnr", "psnr_moving", "ssim")}
    out["fused_minus"] = diffs
    out["example_truth"] = scenes[0].images
    return out


def contact_sheet(results: dict, path: Path) -> None:
    """First held-out scene: ground truth, then each variant's completion, one row per view."""
    import torch
    from PIL import Image

    rows = [results.pop("example_truth")] + [results["modes"][m].pop("example") for m in results["modes"]]
    V, T, H, W, _ = rows[0].shape
    pad = 4
    sheet = torch.ones(len(rows) * (V * H + pad), T * W, 3)
    for i, g in enumerate(rows):
        sheet[i * (V * H + pad): i * (V * H + pad) + V * H] = g.permute(0, 2, 1, 3, 4).reshape(V * H, T * W, 3)
    Image.fromarray((sheet.clamp(0, 1) * 255).round().byte().numpy()).save(path)


def results_path(steps: int, suffix: str = ".json") -> Path:
    return RESULTS / f"video_architectures_{steps}{suffix}"


def section() -> str:
    """The docs section from every saved budget's JSON: one table per budget, smallest first."""
    budgets = [json.loads(f.read_text()) for f in RESULTS.glob("video_architectures_*.json")]
    return "\n\n".join(table(r) for r in sorted(budgets, key=lambda r: r["settings"]["train_steps"]))


def table(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"### {s['train_steps']:,} training steps per variant",
        "",
        f"`python studies/video_architectures.py --steps {s['train_steps']} --scenes {s['scenes']} "
        f"--sample-steps {s['sample_steps']}` (the completion "
        f"model's architecture, 64x64, 4 views x 8 frames; {s['train_steps']} training steps per variant; "
        f"{s['scenes']} held-out scenes of the fixed rig; {s['sample_steps']} sampling steps; completion task: the "
        "frozen-time row and view 0's video given, views 1-3 at t >= 1 scored; JSON: "
        f"studies/results/{results_path(s['train_steps']).name}).",
        "",
        "| attention | parameters | train CPU min | PSNR | SSIM | PSNR moving pixels | motion | fused minus this, "
        "PSNR (paired) | fused minus this, moving PSNR | paper PSNR / SSIM (Objaverse) |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, e in results["modes"].items():
        m = e["means"]["completion"]
        params = f"{e['parameters']:,}" + (f" (sync {e['sync_parameters']:,})" if e["sync_parameters"] else "")
        d = results["fused_minus"].get(mode)
        dp = f"{d['psnr']['mean']:+.2f} ± {d['psnr']['se']:.2f}" if d else "-"
        dm = f"{d['psnr_moving']['mean']:+.2f} ± {d['psnr_moving']['se']:.2f}" if d else "-"
        cpu = f"{e['cpu_seconds'] / 60:.1f}" if e.get("cpu_seconds") else "-"
        lines.append(f"| {mode} | {params} | {cpu} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['psnr_moving']:.2f} | "
                     f"{m['motion']:.4f} | {dp} | {dm} | {PAPER[mode]} |")
    shipped = ROOT / "weights" / "video_motion" / "record.json"
    if shipped.exists():
        steps = json.loads(shipped.read_text())["steps"]
        lines += ["", f"Budget: {s['train_steps']} steps per variant; the shipped completion model is the fused "
                  f"variant's recipe run to {steps} steps (its own section above), so the fused row here is an "
                  "earlier point of that curve, not the shipped weights."]
    st = results["static"]
    lines += ["", f"Static copy (each view's t = 0 frame over time) on the same cells: {st['psnr']:.2f} dB, SSIM "
              f"{st['ssim']:.3f}, moving pixels {st['psnr_moving']:.2f} dB; true motion {results['true_motion']:.4f}. "
              "Paired differences: mean ± standard error over the held-out scenes."]
    below = [k for k, e in results["modes"].items() if e["means"]["completion"]["psnr"] < st["psnr"]]
    if len(below) == len(results["modes"]):
        lines += ["", "At this budget every variant scores below the static copy on all pixels: the order then "
                  "follows how little motion each adds (the motion column against the true motion), not how "
                  "well it carries view 0's motion to the other views. The comparison that matters needs the "
                  "budget at which the fused model passes the static copy (the shipped model's 4,000 steps "
                  "do; at that budget the study is about 40 CPU minutes per variant, resumable: `--steps 4000`)."]
    missing = [m for m in MODES if m not in results["modes"]]
    if missing:
        lines += ["", "Not trained to this budget: " + ", ".join(missing) + " (CPU time; the study resumes them "
                  f"with `--steps {s['train_steps']} --modes " + " ".join(missing) + "`)."]
    spread = max((abs(d["psnr"]["mean"]) for d in results["fused_minus"].values()), default=0.0)
    if spread < 0.2 and len(below) < len(results["modes"]) and "time" in results["modes"]:
        lines += ["", f"Every variant is above the static copy and all lie within {spread:.2f} dB of fused: at this budget "
                  "none carries much of view 0's motion across views (the recipe's completion minus frozen-time at this "
                  "budget is in docs/video.md, run A1), so what they share (the inputs, the motion prior) decides the "
                  "score and the attention pattern cannot show yet. Even the time-only variant, whose attention never "
                  "crosses views, keeps up: view 0's change reaches it through the same-pixel input channels."]
    order = sorted(results["modes"], key=lambda k: -results["modes"][k]["means"]["completion"]["psnr"])
    lines += ["", "Order found: " + " > ".join(order) + "; the paper's: fused > parallel > sequential (time-only "
              "is our control, not in the paper)."]
    ahead_of = {m: d["psnr"] for m, d in results["fused_minus"].items() if d["psnr"]["mean"] > 2 * d["psnr"]["se"]}
    ahead = [f"{m} by {d['mean']:+.2f} ± {d['se']:.2f} dB" for m, d in ahead_of.items()]
    behind = [f"{m} by {-d['psnr']['mean']:.2f} ± {d['psnr']['se']:.2f} dB"
              for m, d in results["fused_minus"].items() if d["psnr"]["mean"] < -2 * d["psnr"]["se"]]
    if ahead:
        lines += ["", "Fused is ahead (more than two standard errors, paired) of " + "; ".join(ahead) + "."]
    if behind:
        lines += ["", "Fused is behind (more than two standard errors, paired) " + "; ".join(behind) + "."]
    rivals = [m for m in ("parallel", "sequential") if m in results["fused_minus"]]
    if rivals and not set(rivals) <= set(ahead_of) and s["train_steps"] >= 4000:
        lines += ["", "So the paper's order is not reproduced at this budget. Its comparison fine-tunes one "
                  "pretrained 11B video model (4,000 iterations, batch 96), where the fused pattern keeps every "
                  "block's pretrained attention at work on both axes while the others change what pretrained "
                  "blocks see; its sequential collapse on Objaverse is a training instability on its mixed "
                  "data, and on real video (NVIDIA Dynamic) its three lie within 0.41 dB (fused 23.15, parallel "
                  "22.92, sequential 22.74). Here every variant learns from scratch on the same steps, with no "
                  "pretrained attention to keep, and the patterns end close together."]
    png = results_path(s["train_steps"], ".png")
    if png.exists():
        lines += ["", "First held-out scene (rows: ground truth, then " + ", ".join(results["modes"]) +
                  "; each block one row per view, time left to right): "
                  f"![architectures, {s['train_steps']} steps](../studies/results/{png.name})"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000, help="training steps per variant")
    p.add_argument("--scenes", type=int, default=12, help="held-out scenes")
    p.add_argument("--sample-steps", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "runs" / "study_completion"))
    p.add_argument("--fused-checkpoint", default=None, help="the shipped run's checkpoint at --steps (reused as fused)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="train only these (resumable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-only", action="store_true", help="train the --modes, do not evaluate")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/results.md")
    p.add_argument("--from-json", action="store_true", help="only rewrite the docs section from the saved JSON")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.from_json:
        body = section()
        print(body)
        if not args.no_docs:
            write_section(SECTION, body)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    checkpoints = {m: variant_checkpoint(m, args) for m in args.modes}
    if args.train_only:
        return 0
    for m in MODES:
        final = Path(args.out) / m / "checkpoints" / f"step_{args.steps:07d}"
        if m not in checkpoints and (final / "state.json").exists():
            checkpoints[m] = final
    if "fused" not in checkpoints:
        print(f"the fused variant has no checkpoint at step {args.steps}; run with --modes fused "
              "(or --fused-checkpoint)", file=sys.stderr)
        return 1
    results = evaluate(args, {m: checkpoints[m] for m in MODES if m in checkpoints})
    RESULTS.mkdir(parents=True, exist_ok=True)
    contact_sheet(results, results_path(args.steps, ".png"))
    results_path(args.steps).write_text(json.dumps(results, indent=1))
    body = section()
    print(body)
    if not args.no_docs:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
