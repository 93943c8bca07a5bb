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


def _new_points_object(name: str, count: int, collection) -> bpy.types.Object:
    """A PointCloud object of `count` points (at the origin; positions are set afterwards).
    Python cannot resize a PointCloud datablock (4.2-5.0) and 4.2's object.convert cannot make
    one, so a Geometry Nodes "Points" modifier of that count is applied: one path everywhere."""
    pc = bpy.data.pointclouds.new(name)
    obj = bpy.data.objects.new(name, pc)
    collection.objects.link(obj)
    tree = bpy.data.node_groups.new(".fuse4d points", "GeometryNodeTree")
    try:
        tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        points = tree.nodes.new("GeometryNodePoints")
        points.inputs["Count"].default_value = count
        tree.links.new(points.outputs[0], tree.nodes.new("NodeGroupOutput").inputs[0])
        mod = obj.modifiers.new("points", "NODES")
        mod.node_group = tree
        with bpy.context.temp_override(object=obj, active_object=obj):
            result = bpy.ops.object.modifier_apply(modifier=mod.name)
    finally:
        bpy.data.node_groups.remove(tree)
    if "FINISHED" not in result or len(obj.data.points) != count:
        raise RuntimeError(f"Blender could not make a point cloud of {count} points")
    if obj.data is not pc and pc.users == 0:
        bpy.data.pointclouds.remove(pc)
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
    obj = _new_points_object(name, len(arrays), collection)
    pc = obj.data
    _set(pc, "position", "FLOAT_VECTOR", arrays.means)
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
