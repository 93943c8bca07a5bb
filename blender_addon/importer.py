# SPDX-License-Identifier: GPL-3.0-or-later
"""Import/export functions behind the operators (callable from scripts and tests)."""
from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from . import nodes, timeline
from .pointcloud import create_splat_object, splat_arrays
from .splatio import Sequence4D, SplatArrays, read_ply, read_sequence, write_ply


def import_ply(path: str | os.PathLike, name: str | None = None, ellipsoids: bool = True,
               scale_multiplier: float = 1.0, viewport_subsample: float = 1.0, collection=None):
    """A static 3DGS .ply as one splat object."""
    path = Path(path)
    arrays = read_ply(path)
    obj = create_splat_object(name or path.stem, arrays, collection=collection)
    obj["fuse4d_source"] = str(path)
    nodes.add_display(obj, ellipsoids, scale_multiplier, viewport_subsample)
    return obj


def sequence_object(seq: Sequence4D, name: str, frame_start: int = 1, mode: str = "HOLD",
                    set_scene: bool = True, ellipsoids: bool = True, scale_multiplier: float = 1.0,
                    viewport_subsample: float = 1.0, collection=None):
    """All timesteps in ONE point cloud with a `timestep` attribute; the Time modifier keeps the
    keyframed timestep (see docs/blender.md for why)."""
    counts = [len(f) for f in seq.frames]
    arrays = SplatArrays.concatenate(seq.frames) if len(seq.frames) > 1 else seq.frames[0]
    steps = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    obj = create_splat_object(name, arrays, timesteps=steps, collection=collection)
    del arrays
    time_mod = nodes.add_time(obj)
    nodes.add_display(obj, ellipsoids, scale_multiplier, viewport_subsample)
    timeline.keyframe_timesteps(obj, time_mod, len(counts), frame_start, mode)
    obj["fuse4d_fps"] = float(seq.fps)
    obj["fuse4d_views"] = int(seq.views)
    if set_scene:
        timeline.set_scene_timing(bpy.context.scene, seq.fps, frame_start, len(counts))
    return obj


def import_sequence(folder: str | os.PathLike, name: str | None = None, **options):
    """A 4D splat sequence folder (or its manifest.json) as one animated splat object."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    obj = sequence_object(read_sequence(folder), name or folder.name, **options)
    obj["fuse4d_source"] = str(folder)
    return obj


def export_ply(obj, path: str | os.PathLike, timestep: int | None = None) -> Path:
    """Write a splat object's Gaussians (one timestep of a sequence if given) in its data space."""
    if obj.type != "POINTCLOUD" or "fuse4d_splat" not in obj:
        raise ValueError(f"{obj.name!r} is not a Fuse4D splat object")
    return write_ply(path, splat_arrays(obj.data, timestep))


def current_timestep(obj, frame: int | None = None) -> int | None:
    if obj.data.attributes.get("timestep") is None or nodes.TIME_MODIFIER not in obj.modifiers:
        return None
    return timeline.timestep_at(obj, bpy.context.scene.frame_current if frame is None else frame)
