# SPDX-License-Identifier: GPL-3.0-or-later
"""Study: sequential vs parallel (two-stream + sync) vs fused view-time attention at small scale.

The paper's Table 2 (Objaverse, 11B model, 4k iterations): fused 22.49 / parallel 21.40 / sequential
5.94 PSNR. Here: the tiny Wan architecture of the shipped model, trained from scratch with each
attention pattern under one budget (same steps, data, seeds, optimiser), then scored on held-out
synthetic 4D scenes:
  * PSNR / SSIM of the generated cells against the ground truth, given the frozen-time row and the
    fixed-view video of view 0 ("row+column", the paper's setting) and given the row alone ("row");
  * cross-view consistency: the generated grid is reconstructed by the tiny reconstructor and
    re-rendered at the held-out cameras (PSNR against their ground truth), when
    weights/recon_tiny.safetensors exists. Its reference points: the ground-truth grid and the
    static grid (t = 0 copied over time) through the same reconstructor.
Every variant uses the same Wan weights shape; "parallel" adds its sync layers (counted below).

    python studies/video_architectures.py                 # train (resumable), evaluate, write results
    python studies/video_architectures.py --steps 1000 --scenes 6 --out runs/study_video_arch
Writes studies/results/video_architectures.json and the "Video architectures" section of
docs/results.md. Each variant trains on one thread (~10 min of CPU time at the default budget).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from results_doc import write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "studies" / "results"
MODES = ("fused", "parallel", "sequential")
PAPER = {"fused": (22.49, 0.909), "parallel": (21.40, 0.892), "sequential": (5.935, 0.444)}
SECTION = "## Video architectures: sequential vs parallel vs fused"


def train_variant(mode: str, args) -> dict:
    """Train one variant into args.out/mode (resumes from its checkpoints); returns its training record."""
    from fuse4d.core.wan.trainer import tiny_config, train_video

    out = Path(args.out) / mode
    record_path = out / "train_record.json"
    if record_path.exists() and (out / "model" / "model.safetensors").exists():
        record = json.loads(record_path.read_text())
        if record.get("steps") == args.steps:
            return record
    base = tiny_config(out=str(out), steps=args.steps)
    cfg = replace(base, model=replace(base.model, attention=mode), save_every=max(50, args.steps // 10),
                  progress=not args.quiet)
    result = train_video(cfg)  # resumes from out/checkpoints; time totals carry over
    record = {"mode": mode, "steps": args.steps, "cpu_seconds": result["cpu_seconds"],
              "wall_seconds": result["wall_seconds"], "loss_last_100": _tail_loss(out / "log.jsonl", 100)}
    record_path.write_text(json.dumps(record, indent=1))
    return record


def _tail_loss(log: Path, steps: int) -> float | None:
    """Mean logged loss over the last `steps` steps (log lines are means over log_every steps)."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    last = rows[-1]["step"]
    tail = [r["loss"] for r in rows if r["step"] > last - steps]
    return sum(tail) / len(tail)


def parameter_counts(model) -> dict:
    from fuse4d.core.wan.attention_processor import SYNC_NAME

    total = sum(p.numel() for p in model.parameters())
    sync = sum(p.numel() for n, p in model.named_parameters() if f".{SYNC_NAME}." in n)
    return {"parameters": total, "sync_parameters": sync}


def consistency(recon, grid, scene) -> float:
    """PSNR of the reconstruction of `grid` re-rendered at the held-out cameras, all timesteps."""
    import torch

    from fuse4d.core.recon import reconstruct_grid
    from fuse4d.core.recon.train_data import relative_to_first
    from fuse4d.core.render import render
    from fuse4d.core.synthetic import rig_cameras
    from fuse4d.core.wan.data import scene_config
    from fuse4d.core.wan.metrics import psnr_frames

    V, T, H, W, _ = grid.shape
    synth = scene_config(V, T, H)
    cams, held = rig_cameras(synth)
    held = relative_to_first(held, cams.viewmats[0])
    frames, predicted = reconstruct_grid(recon, grid.permute(0, 1, 4, 2, 3))
    scores = []
    with torch.no_grad():
        for t in range(T):
            out = render(frames[t], held, background=synth.background).rgb.clamp(0, 1)
            if out.shape[1:3] != (H, W):  # the reconstructor may work at its own size
                out = torch.nn.functional.interpolate(out.permute(0, 3, 1, 2), size=(H, W), mode="bilinear",
                                                      antialias=True).permute(0, 2, 3, 1)
            scores.append(psnr_frames(out, scene["heldout"][:, t]))
    return float(torch.stack(scores).mean())


def load_recon():
    path = ROOT / "weights" / "recon_tiny.safetensors"
    if not path.exists():
        return None, f"{path.relative_to(ROOT)} not found"
    try:
        from fuse4d.core.recon import load_reconstructor
    except ImportError as exc:
        return None, f"reconstructor API not importable ({exc})"
    return load_reconstructor(path), None


def evaluate_variants(args, records: dict) -> dict:
    import torch

    from fuse4d.core.wan.evaluate import VideoEvalConfig, evaluate_video_model, evaluation_scenes, static_grid
    from fuse4d.core.wan.model_io import load_video_model
    from fuse4d.core.wan.tiny import load_codec

    recon, why = load_recon()
    base = VideoEvalConfig(scenes=args.scenes, steps=args.sample_steps, heldout=True, progress=not args.quiet)
    scenes = evaluation_scenes(base)
    results = {"modes": {}, "settings": {"train_steps": args.steps, "eval_scenes": args.scenes,
                                         "sample_steps": args.sample_steps, "seed_base": base.seed_base},
               "consistency": None if recon is None else {}, "consistency_skipped": why}
    if recon is not None:
        results["consistency"] = {
            "ground_truth": sum(consistency(recon, s["images"], s) for s in scenes) / len(scenes),
            "static": sum(consistency(recon, static_grid(s["images"]), s) for s in scenes) / len(scenes)}
    for mode in MODES:
        model, vcfg = load_video_model(Path(args.out) / mode / "model")
        codec = load_codec(vcfg)
        entry = {**parameter_counts(model), **records[mode]}
        for eval_mode in ("row+column", "row"):
            r = evaluate_video_model(model, vcfg, codec, replace(base, mode=eval_mode), scenes=scenes,
                                     keep_grids=recon is not None)
            grids = r.pop("grids", None)
            if grids is not None:
                r["consistency_psnr"] = sum(consistency(recon, g, s) for g, s in zip(grids, scenes)) / len(scenes)
            if eval_mode == "row+column" and grids is not None:
                entry["example_grid"] = grids[0]
            entry[eval_mode] = r
        results["modes"][mode] = entry
        torch.manual_seed(0)
    return results


def contact_sheet(results: dict, scenes: list, path: Path) -> None:
    """Ground truth and each variant's first held-out grid (row+column mode) stacked, one row per view."""
    import torch
    from PIL import Image

    rows = [scenes[0]["images"]] + [results["modes"][m].pop("example_grid") for m in MODES
                                    if "example_grid" in results["modes"][m]]
    if len(rows) == 1:
        return
    V, T, H, W, _ = rows[0].shape
    pad = 4
    sheet = torch.ones(len(rows) * (V * H + pad), T * W, 3)
    for i, g in enumerate(rows):
        sheet[i * (V * H + pad): i * (V * H + pad) + V * H] = g.permute(0, 2, 1, 3, 4).reshape(V * H, T * W, 3)
    Image.fromarray((sheet.clamp(0, 1) * 255).round().byte().numpy()).save(path)


def table(results: dict) -> str:
    s = results["settings"]
    has_c = results["consistency"] is not None
    lines = [
        f"`python studies/video_architectures.py --steps {s['train_steps']} --scenes {s['eval_scenes']}` "
        f"(tiny Wan, 4 views x 8 frames at 48x48, {s['train_steps']} training steps per variant on one CPU "
        f"thread, {s['eval_scenes']} held-out scenes, {s['sample_steps']} sampling steps; JSON: "
        "studies/results/video_architectures.json).",
        "",
        "| attention | parameters | train CPU min | PSNR row+col | SSIM row+col | PSNR row | SSIM row | motion row "
        + ("| held-out cams PSNR row+col " if has_c else "") + "| paper PSNR / SSIM (Objaverse) |",
        "|---|---|---|---|---|---|---|---" + ("|---" if has_c else "") + "|---|"]
    for mode in MODES:
        e = results["modes"][mode]
        rc, r = e["row+column"], e["row"]
        params = f"{e['parameters']:,}" + (f" (sync {e['sync_parameters']:,})" if e["sync_parameters"] else "")
        cons = f"| {rc['consistency_psnr']:.2f} " if has_c else ""
        lines.append(f"| {mode} | {params} | {e['cpu_seconds'] / 60:.1f} | {rc['psnr']:.2f} | {rc['ssim']:.3f} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['motion']:.4f} {cons}| "
                     f"{PAPER[mode][0]:.2f} / {PAPER[mode][1]:.3f} |")
    any_e = results["modes"][MODES[0]]
    rc, r = any_e["row+column"], any_e["row"]
    ref = ""
    if has_c:
        c = results["consistency"]
        ref = (f" Through the same reconstructor the ground-truth grid scores {c['ground_truth']:.2f} dB at the "
               f"held-out cameras and the static grid {c['static']:.2f} dB.")
    lines += ["", f"Reference points on the same cells: copying each view's t = 0 frame over time (no motion) "
              f"scores {rc['static_psnr']:.2f} / {rc['static_ssim']:.3f} (row+col) and {r['static_psnr']:.2f} / "
              f"{r['static_ssim']:.3f} (row); the true mean motion |frame_t - frame_0| is {r['true_motion']:.4f}."
              + ref]
    lines += ["", "Fused minus baseline, PSNR paired per scene (mean ± standard error over the held-out scenes): "
              + "; ".join(f"{m} {_paired(results, m, 'row+column')} (row+col), {_paired(results, m, 'row')} (row)"
                          for m in MODES[1:]) + "."]
    spread = max(abs(results["modes"][a][m]["psnr"] - results["modes"][b][m]["psnr"])
                 for a in MODES for b in MODES for m in ("row+column", "row"))
    lines += ["", f"At this scale the three patterns end within {spread:.2f} dB of each other in mean PSNR. The "
              "paper's sequential collapse (5.94 dB on Objaverse) was a training instability on its mixed data "
              "(it failed to produce white backgrounds); one synthetic source at this size does not provoke it."]
    if not has_c:
        lines += ["", f"Cross-view consistency not measured: {results['consistency_skipped']}."]
    if (RESULTS / "video_architectures.png").exists():
        lines += ["", "First held-out scene, row+column mode (rows: ground truth, then "
                  + ", ".join(MODES) + "; each block one row per view, time left to right): "
                  "![architectures](../studies/results/video_architectures.png)"]
    return "\n".join(lines)


def _paired(results: dict, mode: str, eval_mode: str) -> str:
    a = [r["psnr"] for r in results["modes"]["fused"][eval_mode]["per_scene"]]
    b = [r["psnr"] for r in results["modes"][mode][eval_mode]["per_scene"]]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    se = (sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1) / len(d)) ** 0.5
    return f"{mean:+.2f} ± {se:.2f} dB"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000, help="training steps per variant")
    p.add_argument("--scenes", type=int, default=6, help="held-out scenes")
    p.add_argument("--sample-steps", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "runs" / "study_video_arch"))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="train only these (resume)")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/results.md")
    p.add_argument("--from-json", action="store_true", help="only rewrite the docs section from the saved JSON")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.from_json:
        body = table(json.loads((RESULTS / "video_architectures.json").read_text()))
        print(body)
        if not args.no_docs:
            write_section(SECTION, body)
        return 0
    import torch

    torch.set_num_threads(1)
    records = {m: train_variant(m, args) for m in args.modes}
    missing = [m for m in MODES if m not in records]
    for m in missing:  # trained by an earlier call
        path = Path(args.out) / m / "train_record.json"
        if not path.exists():
            print(f"variant {m} not trained yet; run with --modes {m}", file=sys.stderr)
            return 1
        records[m] = json.loads(path.read_text())
    results = evaluate_variants(args, records)
    RESULTS.mkdir(parents=True, exist_ok=True)
    from fuse4d.core.wan.evaluate import VideoEvalConfig, evaluation_scenes

    contact_sheet(results, evaluation_scenes(VideoEvalConfig(scenes=1)), RESULTS / "video_architectures.png")
    (RESULTS / "video_architectures.json").write_text(json.dumps(results, indent=1))
    body = table(results)
    print(body)
    if not args.no_docs:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
