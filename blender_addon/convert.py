# SPDX-License-Identifier: GPL-3.0-or-later
"""Numpy-only conversions between splat files and Blender (no bpy: unit-testable anywhere).

Convention: point attributes hold the file's values unchanged (OpenCV world: x right, y down,
z forward). The OpenCV -> Blender axis change (x, y, z) -> (x, z, -y), a -90 degree rotation
about X, lives on the object's transform (`OPENCV_TO_BLENDER`), so export writes the attributes
back bit-exactly and the user may move/scale the object freely."""
from __future__ import annotations

import math

import numpy as np

from .splatio import align_cameras, similarity  # noqa: F401 (the add-on's alignment maths)

# (x, y, z)_opencv -> (x, z, -y)_blender as a 4x4 (the object's base matrix_world).
OPENCV_TO_BLENDER = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
OPENCV_TO_BLENDER_EULER = (-math.pi / 2, 0.0, 0.0)
# Blender cameras look down -Z with +Y up; OpenCV cameras look down +Z with +Y down.
FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])
# How many standard deviations the drawn ellipsoid covers (gsplat truncates at 3 sigma too).
SIGMA_EXTENT = 3.0


def f_rest_names(sh_degree: int) -> list[str]:
    return [f"f_rest_{i}" for i in range(3 * ((sh_degree + 1) ** 2 - 1))]


def f_rest_columns(sh: np.ndarray) -> np.ndarray:
    """[N, K, 3] SH -> [N, 3(K-1)] columns in file order (grouped by channel)."""
    n, k = sh.shape[0], sh.shape[1]
    return np.ascontiguousarray(sh[:, 1:].transpose(0, 2, 1).reshape(n, 3 * (k - 1)))


def sh_from_columns(f_dc: np.ndarray, f_rest: np.ndarray) -> np.ndarray:
    """The inverse of `f_rest_columns`: [N,3] DC and [N, 3(K-1)] rest -> [N, K, 3]."""
    n = len(f_dc)
    k = f_rest.shape[1] // 3 + 1
    rest = f_rest.reshape(n, 3, k - 1).transpose(0, 2, 1)
    return np.concatenate([f_dc[:, None, :], rest], axis=1).astype(np.float32)


def camera_to_opencv(cam_world: np.ndarray, object_world: np.ndarray) -> np.ndarray:
    """A Blender camera's matrix_world -> world-to-camera OpenCV viewmat in the object's data space
    (the frame its point attributes live in). Object scale is divided out of the rotation."""
    local = np.linalg.inv(object_world) @ cam_world
    rot = local[:3, :3]
    local[:3, :3] = rot / np.linalg.norm(rot, axis=0, keepdims=True)
    return np.linalg.inv(local @ FLIP_YZ)


def opencv_to_camera(viewmat: np.ndarray, object_world: np.ndarray) -> np.ndarray:
    """The inverse of `camera_to_opencv` (for a uniformly scaled object)."""
    local = np.linalg.inv(np.asarray(viewmat, np.float64)) @ FLIP_YZ
    world = object_world @ local
    world[:3, :3] /= np.linalg.norm(world[:3, :3], axis=0, keepdims=True)
    return world


def intrinsics(lens: float, sensor_width: float, width: int, height: int,
               shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """K of a Blender camera with horizontal sensor fit and square pixels."""
    f = lens / sensor_width * width
    return np.array([[f, 0.0, width / 2 - shift_x * width], [0.0, f, height / 2 + shift_y * width],
                     [0.0, 0.0, 1.0]])


def lens_from_intrinsics(K, width: int, height: int, sensor_width: float = 36.0) -> dict:
    """Blender camera settings (horizontal fit) reproducing K (fx is used; square pixels assumed)."""
    K = np.asarray(K, np.float64)
    return {"lens": K[0, 0] / width * sensor_width, "sensor_width": sensor_width,
            "shift_x": -(K[0, 2] - width / 2) / width, "shift_y": (K[1, 2] - height / 2) / width}


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of w-x-y-z quaternions (broadcasting)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """A 3x3 rotation -> unit w-x-y-z quaternion (Shepperd's method, robust near 180 degrees)."""
    m = np.asarray(rot, np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q)


def transform_splats(arrays, matrix: np.ndarray):
    """Gaussians moved by a similarity 4x4 (rotation, uniform scale, translation) in their own data
    space: means, rotations and log scales change. Spherical-harmonic colour is not rotated (the
    view-dependent part keeps its original orientation). Mirrors and non-uniform scale are refused:
    a Gaussian has no exact form after them."""
    m = np.asarray(matrix, np.float64)
    lin = m[:3, :3]
    norms = np.linalg.norm(lin, axis=0)
    scale = float(norms.mean())
    if not np.allclose(norms, scale, rtol=1e-4) or scale <= 0:
        raise ValueError(f"the object's scale is not uniform ({np.round(norms, 4).tolist()}): apply it or "
                         "export without the transform")
    rot = lin / scale
    if np.linalg.det(rot) < 0:
        raise ValueError("the object's transform mirrors it (negative scale): export without the transform")
    out = arrays.subset(slice(None))
    out.means = (arrays.means @ lin.T + m[:3, 3]).astype(np.float32)
    out.quats = quat_multiply(matrix_to_quat(rot)[None], arrays.quats.astype(np.float64)).astype(np.float32)
    out.log_scales = (arrays.log_scales + math.log(scale)).astype(np.float32)
    return out
