# SPDX-License-Identifier: GPL-3.0-or-later
"""The editable camera rig around a splat object and its frozen-time renders."""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .compat import engine_id
from .convert import camera_to_opencv, intrinsics

RIG_TAG = "fuse4d_rig_of"


def splat_bounds_local(obj) -> tuple[tuple, tuple]:
    """Data-space centre and half extents of the bulk of the splats (2-98 percentiles)."""
    n = len(obj.data.points)
    pos = np.empty(n * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", pos)
    lo, hi = np.percentile(pos.reshape(n, 3), [2, 98], axis=0) if n else (np.zeros(3), np.ones(3))
    return tuple((lo + hi) / 2), tuple(np.maximum((hi - lo) / 2, 1e-3))


def splat_bounds(obj) -> tuple[Vector, float]:
    """World-space centre and radius of the bulk of the splats (2-98 percentiles: robust to floaters)."""
    n = len(obj.data.points)
    pos = np.empty(n * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", pos)
    pos = pos.reshape(n, 3)
    lo, hi = np.percentile(pos, 2, axis=0), np.percentile(pos, 98, axis=0)
    mw = obj.matrix_world
    corners = [mw @ Vector((x, y, z)) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    centre = sum(corners, Vector()) / 8
    radius = max((c - centre).length for c in corners)
    return centre, max(radius, 1e-3)


def create_rig(obj, views: int = 4, arc_deg: float = 60.0, elevation_deg: float = 15.0,
               distance: float = 2.5, lens: float = 35.0, start_deg: float = 0.0):
    """V cameras on a horizontal arc (world Z up) around `obj`, children of an empty at its centre,
    in their own collection; move/rotate/scale the empty or any camera to edit the rig."""
    centre, radius = splat_bounds(obj)
    coll = bpy.data.collections.new(f"{obj.name} Rig")
    bpy.context.scene.collection.children.link(coll)
    root = bpy.data.objects.new(f"{obj.name} Rig", None)
    root.empty_display_type = "SPHERE"
    root.empty_display_size = radius * 0.1
    root.location = centre
    root[RIG_TAG] = obj.name
    coll.objects.link(root)
    r = radius * distance
    el = math.radians(elevation_deg)
    for i in range(views):
        az = math.radians(start_deg + (arc_deg * (i / (views - 1) - 0.5) if views > 1 else 0.0))
        offset = Vector((r * math.cos(el) * math.sin(az), -r * math.cos(el) * math.cos(az), r * math.sin(el)))
        data = bpy.data.cameras.new(f"{obj.name} View {i}")
        data.lens = lens
        data.sensor_fit = "HORIZONTAL"
        cam = bpy.data.objects.new(f"{obj.name} View {i}", data)
        cam.location = offset
        cam.rotation_euler = (-offset).to_track_quat("-Z", "Y").to_euler()
        cam.parent = root
        cam[RIG_TAG] = obj.name
        coll.objects.link(cam)
    return root


def rig_cameras(obj) -> list:
    """The rig's cameras of `obj`, in view order."""
    cams = [o for o in bpy.data.objects if o.type == "CAMERA" and o.get(RIG_TAG) == obj.name]
    return sorted(cams, key=lambda o: o.name)


def camera_dict(cam, obj, width: int, height: int) -> dict:
    """A rig camera as the job/manifest JSON camera, in `obj`'s data space (OpenCV)."""
    viewmat = camera_to_opencv(np.array(cam.matrix_world), np.array(obj.matrix_world))
    d = cam.data
    K = intrinsics(d.lens, d.sensor_width, width, height, d.shift_x, d.shift_y)
    return {"viewmat": viewmat.tolist(), "K": K.tolist(), "width": width, "height": height}


@contextmanager
def render_settings(scene, camera, filepath: str, width: int, height: int, engine: str,
                    samples: int, only=None):
    """Temporarily point the scene at `camera` with small-render settings (and only `only` visible);
    everything is restored afterwards, also on errors."""
    r = scene.render
    saved = (scene.camera, r.filepath, r.resolution_x, r.resolution_y, r.resolution_percentage, r.engine,
             scene.view_settings.view_transform, r.image_settings.file_format, r.film_transparent)
    saved_samples = (scene.cycles.samples, scene.cycles.transparent_max_bounces, scene.cycles.device) \
        if hasattr(scene, "cycles") else None
    saved_eevee = scene.eevee.taa_render_samples
    hidden = []
    try:
        scene.camera = camera
        r.filepath, r.resolution_x, r.resolution_y, r.resolution_percentage = filepath, width, height, 100
        r.engine = engine = engine_id(engine)
        r.image_settings.file_format = "PNG"
        scene.view_settings.view_transform = "Standard"  # splat colours are display values
        if engine == "CYCLES":
            scene.cycles.samples, scene.cycles.transparent_max_bounces = samples, 256
        else:
            scene.eevee.taa_render_samples = samples
        if only is not None:
            for o in scene.objects:
                if o is not only and o.type not in {"CAMERA", "LIGHT", "EMPTY"} and not o.hide_render:
                    o.hide_render = True
                    hidden.append(o)
        yield
    finally:
        for o in hidden:
            o.hide_render = False
        (scene.camera, r.filepath, r.resolution_x, r.resolution_y, r.resolution_percentage, r.engine,
         scene.view_settings.view_transform, r.image_settings.file_format, r.film_transparent) = saved
        if saved_samples:
            scene.cycles.samples, scene.cycles.transparent_max_bounces, scene.cycles.device = saved_samples
        scene.eevee.taa_render_samples = saved_eevee


def render_view(scene, camera, path: Path, width: int, height: int, engine: str = "CYCLES",
                samples: int = 16, only=None) -> Path:
    """One frozen-time view to a PNG (written to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.png")
    had_result = {i.name for i in bpy.data.images if i.type == "RENDER_RESULT"}
    with render_settings(scene, camera, str(tmp), width, height, engine, samples, only):
        bpy.ops.render.render(write_still=True)
    # Rendering creates a "Render Result" image; one the user did not have is ours to remove,
    # so a job leaves no data-block behind.
    for image in [i for i in bpy.data.images if i.type == "RENDER_RESULT" and i.name not in had_result]:
        bpy.data.images.remove(image)
    tmp.replace(path)
    return path


__all__ = ["Matrix", "camera_dict", "create_rig", "render_view", "rig_cameras", "splat_bounds"]
