# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender add-on benchmark (not a test): import time and peak memory of a T x N 4D splat sequence,
and frame-change time during playback (frame_set + depsgraph evaluation of the Time and Splats
modifiers). Targets (issue 6): T=30 x 100k Gaussians imported in < 15 s on 2 cores; a frame
change < 50 ms. Baseline: the format module alone (read_sequence), so the ratio shows what the
Blender side adds.

    .venv/bin/python bench/blender_import.py [--timesteps 30] [--gaussians 100000] [--sh-degree 0]
    .cache/blender/bpy-5.0.1/bin/python bench/blender_import.py      # any bpy: the add-on comes from its zip
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import resource
import sys
import zipfile
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]


def load_addon(folder: Path):
    """The add-on as users install it (the built zip), so any bpy Python can run this bench."""
    spec = importlib.util.spec_from_file_location("fuse4d_build", ROOT / "blender_addon" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    with zipfile.ZipFile(build.build(folder / "dist")) as zf:
        zf.extractall(folder / "pkgs" / "fuse4d_bench_addon")
    sys.path.insert(0, str(folder / "pkgs"))
    return lambda name: importlib.import_module(f"fuse4d_bench_addon.{name}")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timesteps", type=int, default=30)
    p.add_argument("--gaussians", type=int, default=100_000)
    p.add_argument("--sh-degree", type=int, default=0)
    args = p.parse_args()

    import bpy

    addon_dir = tempfile.TemporaryDirectory()
    module = load_addon(Path(addon_dir.name))
    importer, nodes, splatio = module("importer"), module("nodes"), module("splatio")
    Sequence4D, SplatArrays = splatio.Sequence4D, splatio.SplatArrays
    read_sequence, write_sequence = splatio.read_sequence, splatio.write_sequence

    rng = np.random.default_rng(0)
    n, k = args.gaussians, (args.sh_degree + 1) ** 2
    base = SplatArrays(rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), rng.normal(size=(n, 3)) - 4,
                       rng.normal(size=n), rng.normal(size=(n, k, 3)) * 0.3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seq"
        frames = []
        for t in range(args.timesteps):
            f = base.subset(slice(None))
            f.means = base.means + np.float32(0.01 * t)
            frames.append(f)
        write_sequence(folder, Sequence4D(frames=frames, fps=24.0))
        del frames
        bpy.ops.wm.read_factory_settings(use_empty=True)
        rss0 = rss_mb()

        t0 = time.perf_counter()
        read_sequence(folder)
        t_read = time.perf_counter() - t0

        t0 = time.perf_counter()
        obj = importer.import_sequence(folder, frame_start=1)
        bpy.context.view_layer.update()
        t_import = time.perf_counter() - t0
        peak = rss_mb() - rss0

    scene = bpy.context.scene
    solid = nodes.get_input(obj.modifiers[nodes.DISPLAY_MODIFIER], "Solid Colors")  # the importer's default
    results = {}
    for mode in ("ELLIPSOIDS", "POINTS"):
        nodes.set_input(obj.modifiers[nodes.DISPLAY_MODIFIER], "Ellipsoids", mode == "ELLIPSOIDS")
        scene.frame_set(1)
        times = []
        for frame in list(range(2, args.timesteps + 1)) * 2:
            t0 = time.perf_counter()
            scene.frame_set(frame)
            dg = bpy.context.evaluated_depsgraph_get()  # make sure the modifiers ran for this frame
            obj.evaluated_get(dg)
            times.append(time.perf_counter() - t0)
        results[mode] = statistics.median(times) * 1000
        # Sanity: what was evaluated is one timestep (Splats switched off to count points).
        obj.modifiers[nodes.DISPLAY_MODIFIER].show_viewport = False
        shown = len(obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data.points)
        obj.modifiers[nodes.DISPLAY_MODIFIER].show_viewport = True
        assert shown == args.gaussians, shown
    total = args.timesteps * args.gaussians
    print(f"Blender {bpy.app.version_string}")
    print(f"{args.timesteps} timesteps x {args.gaussians} Gaussians (SH degree {args.sh_degree}) = {total:,} points")
    print(f"baseline read_sequence alone : {t_read:6.2f} s")
    print(f"import (read + Blender object): {t_import:6.2f} s  ({t_import / t_read:.1f}x baseline; target < 15 s)")
    print(f"peak memory added by import   : {peak:6.0f} MB (max RSS growth)")
    print(f"Solid Colors (import default) : {'on' if solid else 'off'} "
          f"(on up to {importer.SOLID_COLORS_MAX_SPLATS:,} Gaussians per timestep)")
    for mode, ms in results.items():
        print(f"frame change, {mode.lower():10s}: {ms:6.1f} ms median (target < 50 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
