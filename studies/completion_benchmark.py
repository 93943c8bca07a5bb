# SPDX-License-Identifier: GPL-3.0-or-later
"""The 4D completion benchmark's sections of docs/results.md, from the shipped model's record.

    python -m fuse4d.core.wan.export_completion --run RUN --consistency   # measures, writes weights/video_motion
    python studies/completion_benchmark.py                                 # docs sections from its record.json

The record (weights/video_motion/record.json) holds every number: the benchmark on the fixed rig and
on random rigs (completion, frozen-time, the time-only control, the static copy; paired differences
with standard errors; the targets) and how the model was trained.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from results_doc import write_section

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "weights" / "video_motion" / "record.json"
BENCH = "## 4D completion benchmark"
MODEL = "## Shipped completion model"
NAMES = {"completion": "completion (row + view 0's video)", "frozen-time": "frozen-time row only",
         "time-only": "time-only control (each view alone)", "static": "static copy of t = 0"}


def _pm(d: dict) -> str:
    return f"{d['mean']:+.2f} ± {d['se']:.2f}"


def rig_table(entry: dict) -> list[str]:
    lines = ["| method | PSNR | SSIM | PSNR moving pixels | motion |", "|---|---|---|---|---|"]
    for m in ("completion", "frozen-time", "time-only", "static"):
        if m in entry["means"]:
            v = entry["means"][m]
            lines.append(f"| {NAMES[m]} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['psnr_moving']:.2f} | {v['motion']:.4f} |")
    lines += ["", "| paired difference (dB, mean ± s.e. over scenes) | PSNR | PSNR moving pixels |", "|---|---|---|"]
    for name, d in entry["paired"].items():
        lines.append(f"| {name} | {_pm(d['psnr'])} | {_pm(d['psnr_moving'])} |")
    return lines


def benchmark_section(r: dict) -> str:
    b = r["benchmark"]
    fixed, rand = b["fixed"], b["random"]
    ms = fixed["motion_statistics"]
    lines = [
        "`python -m fuse4d.core.wan.export_completion --run RUN --consistency` then "
        "`python studies/completion_benchmark.py` (numbers from weights/video_motion/record.json).",
        "",
        "The question: given the frozen-time row (every view at t = 0) and view 0's whole video, does the model "
        "produce the other views' videos? The scene determines them, so they are scored against the ground "
        "truth. Scenes (`core/motion_scenes.py`): 1-3 textured, shaded ellipsoids sliding 0.7-1.5 world units "
        "across a checkered ground, spinning up to half a turn, squashing and hopping, ray-cast in closed form; "
        f"held-out seeds {b['seed_base']}+, never trained on; {b['scenes']} scenes per rig; 4 views x 8 frames at "
        f"64 x 64; {b['sample_steps']} sampling steps. Motion of the held-out scenes: mean |frame_t - frame_0| "
        f"{ms['mean_abs_change']:.3f}, {100 * ms['moving_fraction']:.0f}% of the pixels move (the previous "
        "synthetic scenes: 0.018). Every method is scored on the completion cells (views 1-3, t >= 1); moving "
        "pixels are those whose ground truth differs from its t = 0 frame by more than 0.05.",
        "", "**Fixed rig** (4 cameras on a 90 degree arc, " + (
            "the widest of the arcs the model was trained with" if _rig(r["train_config"]).startswith("the fixed rig with")
            else "the rig the model was trained with") + "):", ""]
    lines += rig_table(fixed)
    if "consistency" in fixed:
        c = fixed["consistency"]
        lines += ["", "Cross-view consistency: each grid reconstructed into 4D Gaussians by the shipped reconstructor, "
                  "aligned by the input cameras, rendered at the 2 held-out cameras (PSNR, all timesteps): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in c.items()) + " dB."]
    lines += ["", "**Random rigs** (arc 45-120 degrees, start azimuth, elevation 12-35 degrees, radius, field of view "
              "drawn per scene; never seen in training):", ""]
    lines += rig_table(rand)
    lines += ["", "**Targets** (fixed rig):", "", "| target | measured | met |", "|---|---|---|"]
    for name, t in fixed["targets"].items():
        lines.append(f"| {name} {t['target']} | {t['measured']:+.2f} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines)


def _rig(t: dict) -> str:
    rig = (t.get("motion_scene") or {}).get("rig", "fixed")
    return {"fixed": "fixed rig", "arcs": "the fixed rig with an arc drawn per scene up to its 90 degrees"}.get(rig, rig)


def _inputs(m: dict) -> str:
    """The model's input channels in words (channel conditioning, core/wan/conditioning.py)."""
    if not m.get("concat_reference"):
        return "the noisy latents"
    parts = ["the noisy latents", "each view's t = 0 reference", "a conditioned-cell flag"]
    if m.get("position_channels"):
        parts.append("image x, y")
    if m.get("view_change_channels"):
        parts.append("view 0's change since t = 0")
    if m.get("grid_channels"):
        parts.append("the cell's view and time index")
    if m.get("ray_bands"):
        parts.append(f"where the camera rays meet the plane {m['ray_height']:g} above the ground ({m['ray_bands']} "
                     "Fourier bands; the cameras are inputs)")
    return ", ".join(parts)


def model_section(r: dict) -> str:
    t = r["train_config"]
    w = r["model_config"]["wan"]
    cpu = (r["cpu_seconds"] or 0) / 60
    wall = (r["wall_seconds"] or 0) / 60
    return "\n".join([
        f"`{r['command']}`, shipped by `{r['export_command']}`.",
        "",
        f"`weights/video_motion/`: the tiny Wan architecture (diffusers `WanTransformer3DModel`, dim {w['dim']}, "
        f"{w['num_layers']} layers, {w['num_heads']} heads, FFN {w['ffn_dim']}, patch (1, 2, 2); "
        f"{r['parameters']:,} parameters, {r['weights_bytes'] / 1e6:.1f} MB) with fused view-time attention and no "
        "attention weights beyond the base architecture's, trained from scratch in pixel space at "
        f"{t['size']} x {t['size']} ({t['views']} views x {t['frames']} frames; 4 x 4 pixels folded into 48 channels, "
        "8 x 8 tokens per frame, 2,048 tokens per grid). Data: a pool of "
        f"{t['scenes']:,} ray-cast motion scenes ({_rig(t)}, mirrored with probability {t['mirror']}), conditioning "
        f"drawn none / row / column / both = {' / '.join(str(p) for p in t['cond_probs'])}; model inputs: "
        f"{_inputs(r['model_config'])}; output: {r['model_config']['prediction']}; noise levels "
        f"{t.get('noise', 'logit-normal')}" + (f" with {t['pure_noise']:g} of them pure noise" if t.get("pure_noise") else "")
        + f", loss weighted on {t.get('loss_weight', 'velocity')}; AdamW lr "
        f"{t['lr']:g}, {t['warmup']} warm-up steps, constant, EMA {t['ema']}, batch {t['batch_size']}, "
        f"{r['steps']:,} steps: {cpu:.0f} CPU minutes ({wall:.0f} wall minutes, {t['threads']} thread(s), shared "
        f"machine). Loss {r['loss_start']:.3f} -> {r['loss_end']:.3f} (logged means).",
        "",
        "tests/test_completion.py re-scores it from its weights on the record's 2 held-out scenes "
        "and checks the completion numbers, and that on the moving pixels the time-only control and the static "
        "copy stay below it.",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", default=str(RECORD))
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    r = json.loads(Path(args.record).read_text())
    bench, model = benchmark_section(r), model_section(r)
    print(bench + "\n\n" + model)
    if not args.no_docs:
        write_section(BENCH, bench)
        write_section(MODEL, model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
