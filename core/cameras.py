# SPDX-License-Identifier: GPL-3.0-or-later
"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), world-to-camera
matrices and intrinsics; orbit paths; conversions to VGGT's pose encoding and to Blender."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .rotations import matrix_to_quat, quat_to_matrix

# The world "up" the suite uses for OpenCV-style worlds (y points down, so up is -y).
WORLD_UP = (0.0, -1.0, 0.0)
# OpenCV-style world (y down) -> Blender world (z up): (x, y, z) -> (x, z, -y); a proper rotation.
OPENCV_TO_BLENDER_WORLD = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
# Camera axes: Blender cameras look down -Z with +Y up; OpenCV looks down +Z with +Y down.
_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class Cameras:
    """C cameras: viewmats [C,4,4] world-to-camera, Ks [C,3,3] pixel intrinsics."""

    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def __getitem__(self, index) -> "Cameras":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Cameras(self.viewmats[index], self.Ks[index], self.width, self.height)

    def to(self, *args, **kwargs) -> "Cameras":
        return Cameras(self.viewmats.to(*args, **kwargs), self.Ks.to(*args, **kwargs), self.width, self.height)

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras for images resized to width x height (intrinsics scaled)."""
        Ks = self.Ks.clone()
        Ks[:, 0] *= width / self.width
        Ks[:, 1] *= height / self.height
        return Cameras(self.viewmats.clone(), Ks, width, height)

    @property
    def camtoworlds(self) -> torch.Tensor:
        return torch.linalg.inv(self.viewmats)

    @property
    def centers(self) -> torch.Tensor:
        return self.camtoworlds[:, :3, 3]

    @staticmethod
    def cat(parts: list["Cameras"]) -> "Cameras":
        if len({(p.width, p.height) for p in parts}) != 1:
            raise ValueError("cameras of different image sizes cannot be concatenated")
        return Cameras(torch.cat([p.viewmats for p in parts]), torch.cat([p.Ks for p in parts]),
                       parts[0].width, parts[0].height)


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> torch.Tensor:
    """Square pixels, principal point at the image centre."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def look_at(eye, target, up=WORLD_UP) -> torch.Tensor:
    """World-to-camera [4,4] of an OpenCV camera at `eye` looking at `target`."""
    eye, target, up = (torch.as_tensor(v, dtype=torch.float32) for v in (eye, target, up))
    z = torch.nn.functional.normalize(target - eye, dim=0)
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-6:  # looking along `up`: any perpendicular will do
        x = torch.linalg.cross(z, torch.tensor([1.0, 0.0, 0.0]) if abs(float(z[0])) < 0.9 else torch.tensor([0.0, 0.0, 1.0]))
    x = torch.nn.functional.normalize(x, dim=0)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    viewmat = torch.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def orbit_cameras(n: int, radius: float, elevation_deg: float = 20.0, arc_deg: float = 360.0,
                  target=(0.0, 0.0, 0.0), fov_deg: float = 50.0, width: int = 256, height: int = 256,
                  start_deg: float = 0.0, up=WORLD_UP) -> Cameras:
    """N cameras on a horizontal arc around `target` (a full circle has no duplicate end view;
    a partial arc is centred on `start_deg` and includes both ends)."""
    if n < 1:
        raise ValueError("an orbit needs at least one camera")
    if arc_deg >= 360.0:
        azimuths = [start_deg + 360.0 * i / n for i in range(n)]
    else:
        azimuths = [start_deg + (arc_deg * (i / (n - 1) - 0.5) if n > 1 else 0.0) for i in range(n)]
    target = torch.as_tensor(target, dtype=torch.float32)
    up_v = torch.nn.functional.normalize(torch.as_tensor(up, dtype=torch.float32), dim=0)
    # A horizontal frame (a, b) perpendicular to up; azimuth 0 looks from -b towards +b.
    b = torch.nn.functional.normalize(torch.linalg.cross(up_v, torch.tensor([1.0, 0.0, 0.0]))
                                      if abs(float(up_v[0])) < 0.9 else torch.tensor([0.0, 0.0, 1.0]), dim=0)
    a = torch.linalg.cross(b, up_v)
    el = math.radians(elevation_deg)
    viewmats = []
    for az in azimuths:
        azr = math.radians(az)
        offset = radius * (math.cos(el) * (math.sin(azr) * a - math.cos(azr) * b) + math.sin(el) * up_v)
        viewmats.append(look_at(target + offset, target, up_v))
    K = intrinsics_from_fov(fov_deg, width, height)
    return Cameras(torch.stack(viewmats), K.expand(n, 3, 3).clone(), width, height)


# --- VGGT pose encoding: [T (3), quaternion x y z w (4), fov_h, fov_w] ------------------------

def _matrix_to_quat_xyzw(R: torch.Tensor) -> torch.Tensor:

    return torch.stack([matrix_to_quat(r)[[1, 2, 3, 0]] for r in R.reshape(-1, 3, 3)]).reshape(R.shape[:-2] + (4,))


def to_vggt_pose_encoding(cameras: Cameras) -> torch.Tensor:
    """[C, 9] encodings (extrinsics = camera-from-world, principal point assumed centred)."""
    R, T = cameras.viewmats[:, :3, :3], cameras.viewmats[:, :3, 3]
    fov_h = 2 * torch.atan(cameras.height / 2 / cameras.Ks[:, 1, 1])
    fov_w = 2 * torch.atan(cameras.width / 2 / cameras.Ks[:, 0, 0])
    quat = _matrix_to_quat_xyzw(R.double()).to(T)
    return torch.cat([T, quat, fov_h[:, None], fov_w[:, None]], -1)


def from_vggt_pose_encoding(encoding: torch.Tensor, width: int, height: int) -> Cameras:
    """The inverse of `to_vggt_pose_encoding` for images of width x height pixels."""

    enc = encoding.reshape(-1, 9)
    T, q, fov_h, fov_w = enc[:, :3], enc[:, 3:7], enc[:, 7], enc[:, 8]
    viewmats = torch.eye(4, dtype=enc.dtype, device=enc.device).repeat(len(enc), 1, 1)
    viewmats[:, :3, :3] = quat_to_matrix(q[:, [3, 0, 1, 2]])
    viewmats[:, :3, 3] = T
    Ks = torch.zeros(len(enc), 3, 3, dtype=enc.dtype, device=enc.device)
    Ks[:, 0, 0] = (width / 2) / torch.tan(fov_w / 2)
    Ks[:, 1, 1] = (height / 2) / torch.tan(fov_h / 2)
    Ks[:, 0, 2], Ks[:, 1, 2], Ks[:, 2, 2] = width / 2, height / 2, 1.0
    return Cameras(viewmats, Ks, width, height)


# --- Blender -------------------------------------------------------------------------------
# Blender cameras look down their local -Z with +Y up (OpenCV: +Z forward, +Y down), so
# cam-to-world(Blender) = cam-to-world(OpenCV) @ diag(1, -1, -1, 1). Intrinsics follow Blender's
# view plane: the sensor size spans the "fit" image dimension (AUTO: the larger one), shifts are
# fractions of that dimension, pixel aspect x:y stretches the vertical focal length.

def _fit_is_horizontal(sensor_fit: str, width: float, height: float) -> bool:
    fit = sensor_fit.upper()
    if fit not in ("AUTO", "HORIZONTAL", "VERTICAL"):
        raise ValueError(f"unknown Blender sensor_fit {sensor_fit!r} (AUTO, HORIZONTAL or VERTICAL)")
    return fit == "HORIZONTAL" or (fit == "AUTO" and width >= height)


def intrinsics_from_blender(lens: float, width: int, height: int, sensor_width: float = 36.0,
                            sensor_height: float = 24.0, sensor_fit: str = "AUTO", shift_x: float = 0.0,
                            shift_y: float = 0.0, pixel_aspect_x: float = 1.0,
                            pixel_aspect_y: float = 1.0) -> torch.Tensor:
    """3x3 pixel intrinsics K of a Blender perspective camera (lens and sensor in mm)."""
    aspect = pixel_aspect_y / pixel_aspect_x
    horizontal = _fit_is_horizontal(sensor_fit, width * pixel_aspect_x, height * pixel_aspect_y)
    # The fit dimension in (x-)pixel units, and the sensor size that spans it.
    fit_px = float(width) if horizontal else aspect * height
    sensor = sensor_width if horizontal or sensor_fit.upper() == "AUTO" else sensor_height
    fx = lens / sensor * fit_px
    fy = fx / aspect
    cx = width / 2 - shift_x * fit_px
    cy = height / 2 + shift_y * fit_px / aspect
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def blender_lens_from_intrinsics(K: torch.Tensor, width: int, height: int, sensor_width: float = 36.0) -> dict:
    """Blender camera settings reproducing K (horizontal sensor fit; non-square pixels go to
    the pixel aspect, an off-centre principal point to the shifts)."""
    fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    return {"lens": fx / width * sensor_width, "sensor_width": sensor_width, "sensor_fit": "HORIZONTAL",
            "pixel_aspect_x": 1.0, "pixel_aspect_y": fx / fy,
            "shift_x": -(cx - width / 2) / width, "shift_y": (cy - height / 2) / width * (fx / fy),
            "resolution": [int(width), int(height)]}


def to_blender(cameras: Cameras, world: torch.Tensor | None = OPENCV_TO_BLENDER_WORLD,
               sensor_width: float = 36.0) -> list[dict]:
    """Per camera: Blender `matrix_world` (4x4 nested lists) and lens settings
    (`blender_lens_from_intrinsics`). `world` maps our world into Blender's (default: y-down
    OpenCV world to Blender's z-up world; None: identity)."""
    out = []
    W = torch.eye(4, dtype=torch.float64) if world is None else world.to(torch.float64)
    for viewmat, K in zip(cameras.viewmats, cameras.Ks):
        c2w = W @ torch.linalg.inv(viewmat.double()) @ _FLIP_YZ.double()
        item = {"matrix_world": c2w.tolist()}
        item.update(blender_lens_from_intrinsics(K, cameras.width, cameras.height, sensor_width))
        out.append(item)
    return out


def from_blender(items: list[dict], world: torch.Tensor | None = OPENCV_TO_BLENDER_WORLD) -> Cameras:
    """The inverse of `to_blender`; also reads dicts with Blender's own defaults left out
    (sensor_fit AUTO, sensor 36 x 24 mm, no shift, square pixels)."""
    if not items:
        raise ValueError("no Blender cameras given")
    width, height = (int(v) for v in items[0]["resolution"])
    W = torch.eye(4, dtype=torch.float64) if world is None else world.to(torch.float64)
    viewmats, Ks = [], []
    for i, it in enumerate(items):
        if [int(v) for v in it["resolution"]] != [width, height]:
            raise ValueError(f"Blender camera {i}: resolution {it['resolution']} differs from camera 0 "
                             f"({width}x{height}); Cameras holds one image size")
        c2w = torch.linalg.inv(W) @ torch.tensor(it["matrix_world"], dtype=torch.float64) @ _FLIP_YZ.double()
        viewmats.append(torch.linalg.inv(c2w).float())
        Ks.append(intrinsics_from_blender(
            it["lens"], width, height, it.get("sensor_width", 36.0), it.get("sensor_height", 24.0),
            it.get("sensor_fit", "AUTO"), it.get("shift_x", 0.0), it.get("shift_y", 0.0),
            it.get("pixel_aspect_x", 1.0), it.get("pixel_aspect_y", 1.0)))
    return Cameras(torch.stack(viewmats), torch.stack(Ks), width, height)


# --- JSON (the sequence manifest's camera entries) -------------------------------------------

def cameras_to_dicts(cameras: Cameras) -> list[dict]:
    return [{"viewmat": cameras.viewmats[i].tolist(), "K": cameras.Ks[i].tolist(),
             "width": cameras.width, "height": cameras.height} for i in range(len(cameras))]


def _plain(camera):
    """numpy / torch matrices and integers as the JSON values the checks expect."""
    if not isinstance(camera, dict):
        return camera
    out = dict(camera)
    for key in ("viewmat", "K", "width", "height"):
        if hasattr(out.get(key), "tolist") and not isinstance(out[key], list):
            out[key] = out[key].tolist()
    return out


def cameras_from_dicts(items: list[dict]) -> Cameras:
    """Cameras from manifest/job-style entries; a ValueError names the first unusable one."""
    from .io.sequence import camera_problem

    if not isinstance(items, list) or not items:
        raise ValueError("no cameras (expected a non-empty list of camera objects)")
    items = [_plain(c) for c in items]
    for i, item in enumerate(items):
        problem = camera_problem(item)
        if problem:
            raise ValueError(f"camera {i}: {problem}")
    return Cameras(torch.tensor([c["viewmat"] for c in items], dtype=torch.float32),
                   torch.tensor([c["K"] for c in items], dtype=torch.float32),
                   int(items[0]["width"]), int(items[0]["height"]))


def cameras_from_json_text(text: str) -> Cameras:
    """Cameras given as JSON text (a ComfyUI node input, a Blender rig): ValueError for anything else."""
    import json

    try:
        items = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"cameras JSON does not parse ({type(exc).__name__}: {exc})"[:300]) from None
    return cameras_from_dicts(items)
