# SPDX-License-Identifier: GPL-3.0-or-later
"""Import/export functions behind the operators (callable from scripts and tests)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import bpy
import numpy as np

from . import nodes, timeline
from .convert import OPENCV_TO_BLENDER, transform_splats
from .pointcloud import SPLAT_TAG, create_splat_object, splat_arrays, timesteps_of
from .splatio import (STATIC_READERS, STATIC_WRITERS, USD_SUFFIXES, Sequence4D, SplatArrays, atomic_output,
                      read_ply_folder, read_sequence, read_usd, write_sequence, write_usd)

# Cycles stops at 8 transparent bounces by default: deeper splats render black. View transforms
# other than Standard (AgX, Filmic) re-tone the splats' display colours. Solid shading shows each
# splat's colour with the Attribute colour type (RNA id 'VERTEX' in 4.2-5.3), not its default Material.
CYCLES_TRANSPARENT_BOUNCES = 256
VIEW_TRANSFORM = "Standard"
SOLID_COLOR_TYPE = "VERTEX"
SOLID_COLORS_MAX_SPLATS = 10_000  # realising costs ~0.35 s/100k splats per frame change: larger sequences start with Solid Colors off
_DATA = ("objects", "meshes", "pointclouds", "materials", "node_groups", "actions")


@contextmanager
def nothing_left_on_failure():
    """Every data-block created inside is removed again if the block raises (no half-built object)."""
    before = {kind: set(getattr(bpy.data, kind)) for kind in _DATA}
    try:
        yield
    except BaseException:
        for kind in _DATA:  # objects first: their data then has no users left
            for block in set(getattr(bpy.data, kind)) - before[kind]:
                getattr(bpy.data, kind).remove(block)
        raise


def prepare_scene(scene) -> list[str]:
    """The render settings splats need, changed only where the scene's value is short of them;
    returns what was changed (for the import report)."""
    changed = []
    cycles = getattr(scene, "cycles", None)
    if cycles is not None and cycles.transparent_max_bounces < CYCLES_TRANSPARENT_BOUNCES:
        changed.append(f"Cycles transparent bounces {cycles.transparent_max_bounces} -> {CYCLES_TRANSPARENT_BOUNCES}")
        cycles.transparent_max_bounces = CYCLES_TRANSPARENT_BOUNCES
    if scene.view_settings.view_transform != VIEW_TRANSFORM:
        changed.append(f"view transform {scene.view_settings.view_transform} -> {VIEW_TRANSFORM}")
        scene.view_settings.view_transform = VIEW_TRANSFORM
    return changed


def prepare_viewports() -> list[str]:
    """Solid shading in every 3D view of the file (all workspaces) shows the colour attribute, i.e.
    the splat colours (nodes.SOLID_COLOR); returns what was changed (for the import report)."""
    old = {}
    for screen in bpy.data.screens:
        for area in screen.areas:
            for space in area.spaces:
                if space.type == "VIEW_3D" and space.shading.color_type != SOLID_COLOR_TYPE:
                    items = space.shading.bl_rna.properties["color_type"].enum_items
                    old[items[space.shading.color_type].name] = items[SOLID_COLOR_TYPE].name
                    space.shading.color_type = SOLID_COLOR_TYPE
    return [f"Solid view colour {' / '.join(sorted(old))} -> {next(iter(old.values()))}"] if old else []


def make_active(obj) -> None:
    """The new object alone selected and active, so Export and the sidebar act on it."""
    layer = bpy.context.view_layer
    if layer.objects.get(obj.name) is None:
        return
    for o in layer.objects:
        o.select_set(False)
    obj.select_set(True)
    layer.objects.active = obj


def solid_colors_default(counts: list[int]) -> tuple[bool, str]:
    """Whether a sequence's display starts with Solid Colors on (its largest timestep has at most
    SOLID_COLORS_MAX_SPLATS Gaussians, so realising at every frame change stays cheap enough for
    playback), and the import report's note when it does not. Static imports realise once: always on."""
    largest = max(counts, default=0)
    if largest <= SOLID_COLORS_MAX_SPLATS:
        return True, ""
    return False, (f"Solid Colors off for playback speed ({largest} splats per timestep); "
                   "turn on in the Fuse4D panel")


def _finish(obj, adjust_scene: bool) -> None:
    changes = prepare_scene(bpy.context.scene) + prepare_viewports() if adjust_scene else []
    obj["fuse4d_scene_changes"] = "; ".join(changes)
    make_active(obj)


def read_static(path: Path) -> SplatArrays:
    """A static splat file by extension (.ply/.glb/.gltf/.spz/.splat, or a USD stage's first sample)."""
    suffix = path.suffix.lower()
    if suffix in USD_SUFFIXES:
        data = read_usd(path)
        return data.frames[0] if isinstance(data, Sequence4D) else data
    if suffix not in STATIC_READERS:
        raise ValueError(f"{path}: unknown splat format {suffix!r} (known: {', '.join([*STATIC_READERS, *USD_SUFFIXES])})")
    return STATIC_READERS[suffix](path)


def import_ply(path: str | os.PathLike, name: str | None = None, ellipsoids: bool = True,
               scale_multiplier: float = 1.0, viewport_subsample: float = 1.0, collection=None,
               adjust_scene: bool = True):
    """A static splat file (3DGS .ply, glTF KHR_gaussian_splatting, SPZ, .splat, USD) as one splat object."""
    path = Path(path)
    arrays = read_static(path)
    with nothing_left_on_failure():
        obj = create_splat_object(name or path.stem, arrays, collection=collection)
        obj["fuse4d_source"] = str(path)
        nodes.add_display(obj, ellipsoids, scale_multiplier, viewport_subsample, solid_colors=True)
    _finish(obj, adjust_scene)
    return obj


def sequence_object(seq: Sequence4D, name: str, frame_start: int = 1, mode: str = "HOLD",
                    retime: bool = True, set_scene: bool = False, ellipsoids: bool = True,
                    scale_multiplier: float = 1.0, viewport_subsample: float = 1.0, collection=None,
                    adjust_scene: bool = True, interpolate: bool = False):
    """All timesteps in ONE point cloud with a `timestep` attribute; the Time modifier keeps the
    keyframed timestep (see docs/blender.md for why). Timing: `set_scene` switches the scene to the
    sequence's fps and range (one frame per timestep); otherwise `retime` keys the timesteps at the
    scene's fps (real time kept), or one per frame without it. `interpolate` blends corresponding
    Gaussians between timesteps (sub-frame time: motion blur, slow motion)."""
    counts = [len(f) for f in seq.frames]
    if interpolate and not (seq.corresponding and len(set(counts)) == 1):
        raise ValueError("interpolation needs corresponding Gaussians (the manifest's corresponding: true, "
                         "same count at every timestep)")
    scene = bpy.context.scene
    if set_scene:
        step = 1.0
    else:
        step = timeline.scene_fps(scene) / seq.fps if retime else 1.0
    arrays = SplatArrays.concatenate(seq.frames) if len(seq.frames) > 1 else seq.frames[0]
    steps = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    with nothing_left_on_failure():
        obj = create_splat_object(name, arrays, timesteps=steps, collection=collection)
        del arrays
        time_mod = nodes.add_time(obj, interpolate)
        if interpolate:
            nodes.set_input(time_mod, "Count", counts[0])
            nodes.set_input(time_mod, "Timesteps", len(counts))
        solid_colors, obj["fuse4d_import_note"] = solid_colors_default(counts)
        nodes.add_display(obj, ellipsoids, scale_multiplier, viewport_subsample, solid_colors)
        timeline.keyframe_timesteps(obj, time_mod, len(counts), frame_start, mode, step)
        obj["fuse4d_fps"] = float(seq.fps)
        obj["fuse4d_views"] = int(seq.views)
        obj["fuse4d_corresponding"] = bool(seq.corresponding)
    if set_scene:
        timeline.set_scene_timing(scene, seq.fps, frame_start, len(counts))
    _finish(obj, adjust_scene)
    return obj


def read_any_sequence(path: Path, fps: float = 8.0) -> tuple[Sequence4D, str]:
    """A USD stage (time samples), or a sequence folder (given as the folder or any file in it): its
    manifest.json, or else its numbered PLYs at `fps`. Returns the sequence and a name for it."""
    if path.suffix.lower() in USD_SUFFIXES:
        data = read_usd(path)
        return (data if isinstance(data, Sequence4D) else Sequence4D(frames=[data])), path.stem
    folder = path.parent if path.is_file() else path
    if (folder / "manifest.json").exists():
        return read_sequence(folder), folder.name
    return read_ply_folder(folder, fps), folder.name


def import_sequence(path: str | os.PathLike, name: str | None = None, fps: float = 8.0, **options):
    """A 4D splat sequence (a folder / its manifest.json, a folder of numbered PLYs at `fps`, or a
    time-sampled USD stage) as one animated splat object."""
    path = Path(path)
    seq, default_name = read_any_sequence(path, fps)
    obj = sequence_object(seq, name or default_name, **options)
    obj["fuse4d_source"] = str(path.parent if path.name == "manifest.json" else path)
    return obj


def _check(obj) -> None:
    if obj is None or obj.type != "POINTCLOUD" or SPLAT_TAG not in obj:
        raise ValueError(f"{getattr(obj, 'name', obj)!r} is not a Fuse4D splat object")


def evaluated_splats(obj, all_timesteps: bool = False) -> SplatArrays | list[SplatArrays]:
    """The Gaussians as the modifier stack leaves them (crop/filter and user modifiers applied),
    without the display modifier; the current timestep, or every timestep in a list."""
    switched = [m for m in obj.modifiers if m.show_viewport and (
        m.name == nodes.DISPLAY_MODIFIER or (all_timesteps and m.name == nodes.TIME_MODIFIER))]
    for m in switched:
        m.show_viewport = False
    try:
        pc = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        if len(pc.points) == 0 or pc.attributes.get("rot") is None:
            raise ValueError(f"{obj.name!r}: its modifiers leave no Gaussians to export")
        if all_timesteps:
            full = splat_arrays(pc)
            steps = timesteps_of(pc) if pc.attributes.get("timestep") is not None else np.zeros(len(full), np.int32)
            count = int(obj.get("fuse4d_timesteps", steps.max() + 1))
            frames = [full.subset(steps == t) for t in range(count)]
        else:
            frames = [splat_arrays(pc)]
    finally:
        for m in switched:
            m.show_viewport = True
    return frames if all_timesteps else frames[0]


def data_transform(obj) -> np.ndarray:
    """The object's transform beyond the import's fixed axis change, in the data (OpenCV) space."""
    return np.linalg.inv(OPENCV_TO_BLENDER) @ np.array(obj.matrix_world)


def export_ply(obj, path: str | os.PathLike, timestep: int | None = None, apply_modifiers: bool = True,
               apply_transform: bool = False) -> Path:
    """Write a splat object's Gaussians: the current timestep as evaluated (modifiers applied), or
    the stored attributes of `timestep` without modifiers; optionally moved by the object's transform."""
    _check(obj)
    arrays = evaluated_splats(obj) if apply_modifiers else splat_arrays(obj.data, timestep)
    if apply_transform:
        arrays = transform_splats(arrays, data_transform(obj))
    path = Path(path)
    writer = STATIC_WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ValueError(f"{path}: unknown splat format {path.suffix!r} (known: {', '.join(STATIC_WRITERS)})")
    writer(path, arrays)
    return path


def export_sequence(obj, folder: str | os.PathLike, apply_modifiers: bool = True,
                    apply_transform: bool = False) -> Path:
    """A sequence object as a 4D splat folder (manifest + one PLY per timestep), or as one
    time-sampled USD stage when `folder` ends in .usd/.usda/.usdc; with its fps."""
    _check(obj)
    if apply_modifiers:
        frames = evaluated_splats(obj, all_timesteps=True)
    else:
        count = int(obj.get("fuse4d_timesteps", 1))
        frames = [splat_arrays(obj.data, t) for t in range(count)] if count > 1 else [splat_arrays(obj.data)]
    if apply_transform:
        matrix = data_transform(obj)
        frames = [transform_splats(f, matrix) for f in frames]
    corresponding = bool(obj.get("fuse4d_corresponding")) and len({len(f) for f in frames}) == 1
    seq = Sequence4D(frames=frames, fps=float(obj.get("fuse4d_fps", 8.0)), corresponding=corresponding)
    if Path(folder).suffix.lower() in USD_SUFFIXES:
        return write_usd(folder, seq)
    return write_sequence(folder, seq)


def current_timestep(obj, frame: int | None = None) -> int | None:
    if obj.data.attributes.get("timestep") is None or nodes.TIME_MODIFIER not in obj.modifiers:
        return None
    return timeline.timestep_at(obj, bpy.context.scene.frame_current if frame is None else frame)


__all__ = ["atomic_output", "export_ply", "export_sequence", "import_ply", "import_sequence", "make_active",
           "nothing_left_on_failure", "prepare_scene", "prepare_viewports", "sequence_object", "solid_colors_default"]
