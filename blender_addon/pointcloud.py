# SPDX-License-Identifier: GPL-3.0-or-later
"""Splats <-> Blender point-cloud objects. Every Gaussian property is a named point attribute,
set and read in bulk with foreach_set/foreach_get (never a Python loop over points).

Attributes (values exactly as in the file, OpenCV data space):
  position (x y z), `scale` FLOAT_VECTOR (log scale_0..2), `rot` QUATERNION (w x y z, as stored),
  `opacity` FLOAT (logit), `f_dc` FLOAT_VECTOR (f_dc_0..2), `f_rest_0..M` FLOAT (file order),
  and for 4D sequences `timestep` INT."""
from __future__ import annotations

import bpy
import numpy as np

from .convert import OPENCV_TO_BLENDER_EULER, f_rest_columns, f_rest_names, sh_from_columns
from .splatio import SplatArrays

SPLAT_TAG = "fuse4d_splat"  # custom property marking our objects; value = SH degree


def _new_points_object(name: str, positions: np.ndarray, collection) -> bpy.types.Object:
    """A PointCloud object of len(positions) points. PointCloud datablocks cannot be resized from
    Python in 4.2-4.5, so a vertex-only mesh of the right size is converted."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(positions))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(positions, np.float32).ravel())
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    with bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                                   selected_editable_objects=[obj]):
        result = bpy.ops.object.convert(target="POINTCLOUD")
    if "FINISHED" not in result or obj.type != "POINTCLOUD":
        raise RuntimeError("Blender could not convert the vertex mesh into a point cloud")
    if mesh.users == 0:
        bpy.data.meshes.remove(mesh)
    obj.data.name = name
    return obj


def _set(pc, name: str, kind: str, values: np.ndarray) -> None:
    attr = pc.attributes.get(name) or pc.attributes.new(name, kind, "POINT")
    key = "vector" if kind == "FLOAT_VECTOR" else "value"
    attr.data.foreach_set(key, np.ascontiguousarray(values).ravel())


def _get(pc, name: str, kind: str, width: int, dtype=np.float32) -> np.ndarray:
    attr = pc.attributes.get(name)
    if attr is None:
        raise KeyError(f"point cloud {pc.name!r} has no attribute {name!r} (not a Fuse4D splat object?)")
    out = np.empty(len(pc.points) * width, dtype)
    attr.data.foreach_get("vector" if kind == "FLOAT_VECTOR" else "value", out)
    return out.reshape(-1, width) if width > 1 else out


def create_splat_object(name: str, arrays: SplatArrays, timesteps: np.ndarray | None = None,
                        collection=None) -> bpy.types.Object:
    """A point-cloud object carrying `arrays` (optionally with a per-point `timestep`)."""
    collection = collection or bpy.context.scene.collection
    obj = _new_points_object(name, arrays.means, collection)
    pc = obj.data
    _set(pc, "scale", "FLOAT_VECTOR", arrays.log_scales)
    _set(pc, "rot", "QUATERNION", arrays.quats)
    _set(pc, "opacity", "FLOAT", arrays.opacity_logits)
    _set(pc, "f_dc", "FLOAT_VECTOR", arrays.sh[:, 0])
    rest = f_rest_columns(arrays.sh)
    for i, attr_name in enumerate(f_rest_names(arrays.sh_degree)):
        _set(pc, attr_name, "FLOAT", rest[:, i])
    if timesteps is not None:
        _set(pc, "timestep", "INT", np.asarray(timesteps, np.int32))
    obj[SPLAT_TAG] = arrays.sh_degree
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = OPENCV_TO_BLENDER_EULER
    return obj


def sh_degree_of(pc) -> int:
    rest = sum(1 for a in pc.attributes if a.name.startswith("f_rest_"))
    return {0: 0, 9: 1, 24: 2, 45: 3}.get(rest, 0)


def splat_arrays(pc, timestep: int | None = None) -> SplatArrays:
    """Read a splat point cloud (original, not evaluated) back into arrays; one timestep if given."""
    n = len(pc.points)
    means = _get(pc, "position", "FLOAT_VECTOR", 3)
    degree = sh_degree_of(pc)
    rest = np.empty((n, 3 * ((degree + 1) ** 2 - 1)), np.float32)
    for i, attr_name in enumerate(f_rest_names(degree)):
        rest[:, i] = _get(pc, attr_name, "FLOAT", 1)
    arrays = SplatArrays(means=means, quats=_get(pc, "rot", "QUATERNION", 4),
                         log_scales=_get(pc, "scale", "FLOAT_VECTOR", 3),
                         opacity_logits=_get(pc, "opacity", "FLOAT", 1),
                         sh=sh_from_columns(_get(pc, "f_dc", "FLOAT_VECTOR", 3), rest))
    if timestep is not None and pc.attributes.get("timestep") is not None:
        arrays = arrays.subset(timesteps_of(pc) == timestep)
    return arrays


def timesteps_of(pc) -> np.ndarray:
    return _get(pc, "timestep", "INT", 1, np.int32)
