# SPDX-License-Identifier: GPL-3.0-or-later
"""Repeated Blender imports in one bpy process (not a test): nothing may pile up.

    .venv/bin/python bench/blender_repeat.py [--cycles 50] [--gaussians 20000] [--timesteps 4]

Each cycle imports a 4D sequence and a static PLY with the add-on's importer, evaluates a frame,
then removes what it made (objects, then orphan data purged, as an undo would leave the file).
Headless bpy has no undo stack (ed.undo needs a window), so removal stands in for undo. Measured:
datablock counts after every cycle against the first (must be equal: no leaked meshes, point clouds,
node groups, materials), resident memory (VmRSS) after the first and the last cycle, time per cycle."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def counts(bpy) -> dict:
    return {name: len(getattr(bpy.data, name)) for name in ("objects", "meshes", "pointclouds", "node_groups",
                                                           "materials", "collections", "actions")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--gaussians", type=int, default=20_000)
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--json")
    args = p.parse_args()

    import bpy

    from fuse4d.blender_addon import importer
    from fuse4d.core.io import Sequence4D, SplatArrays, write_ply, write_sequence

    rng = np.random.default_rng(0)
    n = args.gaussians
    base = SplatArrays(rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), rng.normal(size=(n, 3)) - 4,
                       rng.normal(size=n), rng.normal(size=(n, 1, 3)) * 0.3)
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seq"
        write_sequence(folder, Sequence4D(frames=[base] * args.timesteps, fps=24.0))
        ply = write_ply(Path(tmp) / "static.ply", base)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        for cycle in range(args.cycles):
            started = time.perf_counter()
            made_before = set(bpy.data.objects)
            importer.import_sequence(folder, frame_start=1)
            importer.import_ply(ply)
            bpy.context.scene.frame_set(2)
            bpy.context.view_layer.update()
            for obj in [o for o in bpy.data.objects if o not in made_before]:
                bpy.data.objects.remove(obj, do_unlink=True)
            bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)
            now = counts(bpy)
            first = first or now
            rows.append({"cycle": cycle, "seconds": round(time.perf_counter() - started, 3), "rss_mib": round(rss_mib(), 1),
                         "leaked": {k: now[k] - first[k] for k in now if now[k] != first[k]}})
    result = {"cycles": args.cycles, "gaussians": n, "timesteps": args.timesteps,
              "rss_first_mib": rows[0]["rss_mib"], "rss_last_mib": rows[-1]["rss_mib"],
              "rss_max_mib": max(r["rss_mib"] for r in rows),
              "seconds_per_cycle_median": sorted(r["seconds"] for r in rows)[len(rows) // 2],
              "cycles_with_leaked_datablocks": sum(1 for r in rows if r["leaked"]),
              "leaked_last": rows[-1]["leaked"]}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result, "cycles": rows}, indent=1) + "\n")
    return 0 if not result["cycles_with_leaked_datablocks"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
