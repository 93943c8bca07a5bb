# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the feed-forward reconstructor (not a test; prints medians and ratios in one run).

  .venv/bin/python bench/recon.py [--official DIR] [--threads 1] [--quick] [--official-memory]
                                  [--skip equivalence speed memory] [--json FILE]

About half an hour on one thread (the 16 x 16 grid alone ~15 min); ~12 GB of RAM while both full
models are loaded, and a temporary 4.7 GB safetensors of the official weights (read by our loader).

1. Equivalence with the official VGGT on the FULL configuration (VGGT-1B shapes) with random weights,
   fp32: the same state dict in both, the same images -> relative error of pose encodings, depth,
   depth confidence, world points and their confidence.
2. Throughput against the official implementation: the same configuration, the same weights, the
   same inputs (plain VGGT, one timestep of S frames), median forward time, ratio official / ours.
3. Peak memory of `reconstruct_grid` (temporal layers + Gaussian head on) as the V x T grid grows at a
   reduced resolution, each size in a fresh process: peak RSS above the loaded model, per frame.

The official code is never part of this repository: DIR holds a checkout of its `vggt/` package
(e.g. `git archive <commit> vggt | tar -x -C /tmp/vggt_official`), from the argument or the
FUSE4D_VGGT_OFFICIAL environment variable; without it only our numbers are measured.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def official_vggt(path: str | None):
    """The official VGGT class from a checkout of its `vggt/` package, or None."""
    if not path:
        return None
    root = Path(path)
    if not (root / "vggt" / "models" / "vggt.py").is_file():
        print(f"official VGGT: {root}/vggt/models/vggt.py not found; measuring ours only")
        return None
    sys.path.insert(0, str(root))
    from vggt.models.vggt import VGGT

    return VGGT


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def range_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max error relative to the reference's range: strict also for nearly constant outputs
    (random DPT heads give depth ~ 1 and confidence ~ 2 everywhere)."""
    b = b.double()
    return float((a.double() - b).abs().max() / (b.max() - b.min()).clamp_min(1e-30))


def amplify(model: torch.nn.Module) -> None:
    """Stronger random weights: LayerScales x10 (every block's residual matters) and the dense
    heads' last convolution x100 (depth, points and confidences vary across pixels)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".gamma") and "patch_embed" not in n:
                p.mul_(10.0)
            elif ".scratch.output_conv2.2." in n and n.startswith(("depth_head", "point_head")):
                p.mul_(100.0)


def ours_from_official(official: torch.nn.Module, cfg):
    """Our VGGT4D holding exactly the official model's weights (loaded through our checkpoint loader)."""
    import tempfile

    from fuse4d.core.recon import VGGT4D, load_vggt_weights

    ours = VGGT4D(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import save_file

        path = Path(tmp) / "official.safetensors"
        save_file({k: v.contiguous() for k, v in official.state_dict().items()}, str(path))
        report = load_vggt_weights(ours, path, strict_additions=True)
    return ours, report


def build_pair(VGGT, seed: int = 0):
    """(official, ours) in the full configuration (VGGT-1B shapes) with identical random weights."""
    from fuse4d.core.recon import full

    torch.manual_seed(seed)
    official = VGGT(enable_track=False).eval()
    ours, _ = ours_from_official(official, full(enable_gaussian=False, temporal_attention=False))
    return official, ours


def median_times(fns: dict, reps: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each callable, the callables interleaved rep by rep, so that a load that
    drifts over minutes (a shared machine) hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# --- 1 + 2: equivalence and throughput against the official code ---------------------------------

def equivalence(official, ours, args) -> dict:
    results = {}
    g = torch.Generator().manual_seed(1)
    images = torch.rand(args.eq_frames, 3, *args.eq_size, generator=g)
    for name in ("init", "amplified"):
        if name == "amplified":
            amplify(official)
            amplify(ours)
        with torch.no_grad():
            ref = official(images)
            out = ours.forward_vggt(images)
        errs = {k: rel_err(out[k], ref[k]) for k in OUTPUT_KEYS}
        errs_range = {k: range_err(out[k], ref[k]) for k in OUTPUT_KEYS}
        spread = {k: float(ref[k].std() / ref[k].abs().max()) for k in OUTPUT_KEYS}
        results[f"equivalence_full_{name}"] = {"rel_err": errs, "range_err": errs_range,
                                               "reference_std_over_max": spread}
        worst = max(errs.values())
        print(f"equivalence, full config, random weights ({name}), {args.eq_frames} frames "
              f"{args.eq_size[1]}x{args.eq_size[0]}: max rel err {worst:.2e} "
              f"({', '.join(f'{k} {v:.1e}' for k, v in errs.items())}) -> {'PASS' if worst <= 1e-4 else 'FAIL'}")
        print(f"  error / reference range: {', '.join(f'{k} {v:.1e}' for k, v in errs_range.items())}; "
              f"reference std / max: {', '.join(f'{k} {v:.2f}' for k, v in spread.items())}")
    # the comparison is not vacuous: one slightly changed weight in ours shows up in every output
    with torch.no_grad():
        ours.aggregator.global_blocks[-1].ls1.gamma.mul_(1.01)
        bumped = ours.forward_vggt(images)
        ours.aggregator.global_blocks[-1].ls1.gamma.div_(1.01)
    sens = {k: range_err(bumped[k], ref[k]) for k in OUTPUT_KEYS}
    results["equivalence_control"] = sens
    print(f"  control: last global block's LayerScale x1.01 in ours only -> error / range "
          f"{', '.join(f'{k} {v:.1e}' for k, v in sens.items())}")
    return results


def speed(official, ours, args) -> dict:
    """Median forward time on the same weights and inputs (ours and official alternate per case)."""
    results = {}
    g = torch.Generator().manual_seed(2)
    for frames, size in args.speed_cases:
        x = torch.rand(frames, 3, *size, generator=g)
        fns = {"ours": lambda: ours.forward_vggt(x)}
        if official is not None:
            fns["official"] = lambda: official(x)
        with torch.no_grad():
            t = median_times(fns, args.reps)
        t_off, t_ours = t.get("official"), t["ours"]
        key = f"full_{frames}x{size[1]}x{size[0]}"
        if t_off is None:
            results[f"speed_{key}"] = {"ours_s": t_ours}
            print(f"throughput, full config, {frames} frames {size[1]}x{size[0]}: ours {t_ours:.2f} s "
                  f"(median of {args.reps})")
            continue
        results[f"speed_{key}"] = {"official_s": t_off, "ours_s": t_ours, "ratio": t_off / t_ours}
        print(f"throughput, full config, {frames} frames {size[1]}x{size[0]}: official {t_off:.2f} s, "
              f"ours {t_ours:.2f} s (median of {args.reps}) -> {t_off / t_ours:.2f}x")
    return results


# --- 3: memory as V x T grows -----------------------------------------------------------------------

def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def memory_child(config: str, V: int, T: int, size: int, threads: int, official: str | None) -> dict:
    """In a fresh process: peak RSS above the loaded model while reconstructing a V x T grid."""
    torch.set_num_threads(threads)
    from fuse4d.core.recon import VGGT4D, preset, reconstruct_grid

    torch.manual_seed(0)
    images = torch.rand(V, T, 3, size, size)
    if official:
        VGGT = official_vggt(official)
        model = VGGT(enable_track=False).eval()
        run = lambda: model(images.reshape(V * T, 3, size, size))  # noqa: E731  global attention over all V*T
    else:
        model = VGGT4D(preset(config)).eval()
        run = lambda: reconstruct_grid(model, images, width=size)  # noqa: E731
    base = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")   # reset the high-water mark to the current RSS
    t0 = time.perf_counter()
    with torch.no_grad():
        run()
    seconds = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    return {"V": V, "T": T, "frames": V * T, "size": size, "seconds": seconds,
            "model_mb": base / 1024, "peak_above_model_mb": (peak - base) / 1024}


def memory_scaling(args, official: str | None = None) -> list[dict]:
    rows = []
    who = "official VGGT (global attention over all V*T frames)" if official else "ours (reconstruct_grid)"
    for V, T in args.grids:
        cmd = [sys.executable, __file__, "--_memory-child", args.memory_config, str(V), str(T),
               str(args.memory_size), str(args.threads)] + (["--official", official] if official else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"memory {who} {V}x{T}: FAILED (exit {proc.returncode}) {proc.stderr.strip()[-300:]}")
            rows.append({"V": V, "T": T, "failed": proc.returncode})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"memory {who}, {args.memory_config} config, {V:2d} views x {T:2d} timesteps at "
              f"{args.memory_size}px: +{row['peak_above_model_mb']:8.1f} MB above the model "
              f"({row['peak_above_model_mb'] / row['frames']:6.2f} MB/frame), {row['seconds']:7.1f} s")
    ok = [r for r in rows if "failed" not in r]
    if len(ok) >= 3:
        import numpy as np

        x = np.array([r["frames"] for r in ok], float)
        y = np.array([r["peak_above_model_mb"] for r in ok], float)
        slope, icpt = np.polyfit(x, y, 1)
        resid = float(np.max(np.abs(y - (slope * x + icpt))))
        print(f"  linear fit in V*T: {slope:.2f} MB/frame + {icpt:.1f} MB, worst residual {resid:.1f} MB")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", default=os.environ.get("FUSE4D_VGGT_OFFICIAL"),
                   help="folder holding the official `vggt/` package (or FUSE4D_VGGT_OFFICIAL)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes only (minutes instead of ~half an hour)")
    p.add_argument("--skip", nargs="*", default=[], choices=["equivalence", "speed", "memory"],
                   help="sections to skip")
    p.add_argument("--memory-config", default="full", choices=["full", "tiny"])
    p.add_argument("--official-memory", action="store_true",
                   help="also measure the official model's memory (grids up to 64 frames)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--_memory-child", nargs=5, metavar=("CONFIG", "V", "T", "SIZE", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.eq_frames, args.eq_size = 2, (126, 168)           # non-square: the position table is resampled
    args.speed_cases = [(4, (112, 112))] if args.quick else [(4, (112, 112)), (2, (224, 294))]
    args.memory_size = 56                                  # 4 x 4 patches: the reduced resolution
    args.grids = ([(1, 1), (2, 2), (4, 4), (2, 8)] if args.quick
                  else [(1, 1), (2, 2), (4, 4), (16, 1), (1, 16), (8, 8), (16, 16)])
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._memory_child:
        config, V, T, size, threads = args._memory_child
        print(json.dumps(memory_child(config, int(V), int(T), int(size), int(threads), args.official)))
        return 0
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), fp32 on the CPU")
    results: dict = {"threads": args.threads, "torch": torch.__version__}
    VGGT = official_vggt(args.official)
    if not args.official:
        print("official VGGT: not given (--official DIR or FUSE4D_VGGT_OFFICIAL); measuring ours only")
    if "equivalence" not in args.skip or "speed" not in args.skip:
        if VGGT is not None:
            results["official"] = str(args.official)
            official, ours = build_pair(VGGT)
            if "equivalence" not in args.skip:
                results.update(equivalence(official, ours, args))
        else:
            from fuse4d.core.recon import VGGT4D, full

            torch.manual_seed(0)
            official, ours = None, VGGT4D(full(enable_gaussian=False, temporal_attention=False)).eval()
        if "speed" not in args.skip:
            results.update(speed(official, ours, args))
        del official, ours
    if "memory" not in args.skip:
        results["memory"] = memory_scaling(args)
        if VGGT is not None and args.official_memory:
            grids = args.grids
            args.grids = [g for g in grids if g[0] * g[1] <= 64]
            results["memory_official"] = memory_scaling(args, official=str(args.official))
            args.grids = grids
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
