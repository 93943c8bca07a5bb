# SPDX-License-Identifier: GPL-3.0-or-later
"""4D splat sequences: a folder of one PLY per timestep plus `manifest.json` (docs/formats.md)."""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .arrays import SplatArrays
from .atomic import atomic_folder
from .errors import SplatFormatError
from .paths import safe_member
from .ply import read_ply, write_ply

FORMAT_NAME = "fuse4d-4d-splat"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_JSON_BYTES = 64 << 20  # a manifest or job file larger than this is not one


@dataclass
class Sequence4D:
    """T timesteps of Gaussians; optional V cameras (world-to-camera OpenCV `viewmat`, `K`,
    `width`, `height`); `corresponding` says whether Gaussian i is the same particle at every t."""

    frames: list[SplatArrays]
    fps: float = 8.0
    views: int = 0
    cameras: list[dict] | None = None
    corresponding: bool = False
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)


def frame_name(t: int) -> str:
    return f"frame_{t:04d}.ply"


def manifest_dict(seq: Sequence4D) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "timesteps": len(seq.frames),
        "views": int(seq.views),
        "fps": float(seq.fps),
        "coordinates": "opencv",  # x right, y down, z forward; world-to-camera matrices
        "frames": [{"t": t, "file": frame_name(t), "count": len(f)} for t, f in enumerate(seq.frames)],
        "cameras": [_camera_json(c) for c in seq.cameras or []],
        "corresponding": bool(seq.corresponding),
        "extra": seq.extra,
    }


def manifest_text(manifest: dict) -> str:
    """Indented JSON with each row of numbers on one line (matrices stay readable)."""
    def one_line(m: re.Match) -> str:
        if "\n" not in m.group(0):  # inside a JSON string (strings never hold raw newlines)
            return m.group(0)
        return "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"

    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", one_line, json.dumps(manifest, indent=1)) + "\n"


def write_sequence(folder: str | os.PathLike, seq: Sequence4D, progress: Callable[[], object] | None = None) -> Path:
    """Write the folder atomically: built under a temporary name, then swapped in. `progress()` is
    called with no arguments after each timestep's file; it may raise to stop (e.g. a user's
    interrupt), and then nothing is left: neither the new folder nor its temporary."""
    if not seq.frames:
        raise ValueError("a 4D sequence needs at least one timestep")
    if seq.corresponding and len({len(f) for f in seq.frames}) > 1:
        raise ValueError("corresponding=True needs the same Gaussian count at every timestep")
    cameras = [_camera_json(c) for c in seq.cameras or []]
    for i, camera in enumerate(cameras):
        problem = camera_problem(camera)
        if problem:
            raise ValueError(f"camera {i}: {problem}")
    if not math.isfinite(seq.fps) or seq.fps <= 0:
        raise ValueError(f"fps must be positive, got {seq.fps}")
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        for t, frame in enumerate(seq.frames):
            write_ply(tmp / frame_name(t), frame)
            if progress is not None:
                progress()
        (tmp / MANIFEST).write_text(manifest_text(manifest_dict(seq)))
    return folder


def _safe_member(folder: Path, name: object) -> Path:
    return safe_member(folder, name, lambda message: SplatFormatError(folder / MANIFEST, message), "frame file")


def read_manifest(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise SplatFormatError(folder, f"no {MANIFEST} (not a 4D splat sequence folder)")
    manifest = load_json(path, SplatFormatError)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise SplatFormatError(path, f"not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise SplatFormatError(path, f"format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise SplatFormatError(path, f"format_version {manifest.get('format_version')} is newer than "
                                     f"this reader ({FORMAT_VERSION})")
    frames = manifest.get("frames")
    if not isinstance(frames, list) or not frames or len(frames) != manifest.get("timesteps"):
        raise SplatFormatError(path, "'frames' must list one entry per timestep")
    if manifest.get("coordinates", "opencv") != "opencv":
        raise SplatFormatError(path, f"coordinate convention {manifest.get('coordinates')!r} is not supported "
                                     "(only 'opencv': x right, y down, z forward)")
    fps = manifest.get("fps", 8.0)
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise SplatFormatError(path, f"fps must be a positive number, got {fps!r}")
    views = manifest.get("views", 0)
    if not isinstance(views, int) or isinstance(views, bool) or views < 0:
        raise SplatFormatError(path, f"views must be a non-negative integer, got {views!r}")
    cameras = manifest.get("cameras") or []
    if not isinstance(cameras, list):
        raise SplatFormatError(path, "'cameras' must be a list")
    for i, camera in enumerate(cameras):
        problem = camera_problem(camera)
        if problem:
            raise SplatFormatError(path, f"camera {i}: {problem}")
    for t, entry in enumerate(frames):
        if not isinstance(entry, dict):
            raise SplatFormatError(path, f"frames[{t}] must be an object with 'file'")
        count = entry.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise SplatFormatError(path, f"frames[{t}]: count must be a non-negative integer, got {count!r}")
        _safe_member(folder, entry.get("file"))
    if not isinstance(manifest.get("extra", {}), dict):
        raise SplatFormatError(path, "'extra' must be an object")
    return manifest


def load_json(path: Path, error) -> object:
    """A small JSON file (manifest, job), or error(path, problem) for anything else."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(path, f"larger than {MAX_JSON_BYTES >> 20} MiB: not a manifest")
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(path, f"invalid JSON ({exc})") from None
    except RecursionError:
        raise error(path, "invalid JSON (nested too deeply)") from None


def _camera_json(camera: dict) -> dict:
    """Plain JSON values for a camera given with numpy/torch matrices or numpy integers."""
    out = dict(camera)
    for key in ("viewmat", "K"):
        if key in out and not isinstance(out[key], list):
            out[key] = np.asarray(out[key], np.float64).tolist()
    for key in ("width", "height"):
        if isinstance(out.get(key), np.integer):
            out[key] = int(out[key])
    return out


def _matrix_ok(value: object, rows: int, cols: int) -> bool:
    return (isinstance(value, list) and len(value) == rows
            and all(isinstance(r, list) and len(r) == cols and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r)
                for r in value))


def camera_problem(camera: object) -> str | None:
    """Why a camera entry (manifest, job, cameras_json) is unusable, or None: shapes, finite
    numbers, and no degenerate camera (a singular rotation, a non-positive focal length)."""
    problem = _camera_problem(camera)
    if problem:
        return problem
    rotation = np.asarray(camera["viewmat"], np.float64)
    if not np.allclose(rotation[3], [0, 0, 0, 1]):
        return "'viewmat' must have a last row of 0 0 0 1"
    det = np.linalg.det(rotation[:3, :3])
    if not abs(det) > 1e-12:
        return f"degenerate camera: 'viewmat' rotation is singular (determinant {det:.3g})"
    K = np.asarray(camera["K"], np.float64)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        return f"degenerate camera: focal lengths must be positive (fx {K[0, 0]:.6g}, fy {K[1, 1]:.6g})"
    if not np.allclose(K[2], [0, 0, 1]):
        return "'K' must be a pinhole matrix (last row 0 0 1)"
    return None


def _camera_problem(camera: object) -> str | None:
    """Why a manifest camera entry is unusable, or None (shapes and value types)."""
    if not isinstance(camera, dict):
        return "must be an object with viewmat, K, width, height"
    if not _matrix_ok(camera.get("viewmat"), 4, 4):
        return "'viewmat' must be a 4x4 list of finite numbers (world-to-camera, OpenCV)"
    if not _matrix_ok(camera.get("K"), 3, 3):
        return "'K' must be a 3x3 list of finite numbers"
    for key in ("width", "height"):
        value = camera.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1 << 16:
            return f"'{key}' must be a positive integer (at most 65536)"
    return None


def numbered_plys(folder: str | os.PathLike) -> list[Path]:
    """The .ply files of a folder in the order of the last number in their names (frame_2 < frame_10)."""
    folder = Path(folder)
    plys = [p for p in folder.glob("*.ply") if not p.name.startswith(".")]
    numbered = [(int(m[-1]), p.name, p) for p in plys if (m := re.findall(r"\d+", p.stem))]
    if len(numbered) != len(plys):
        unnumbered = sorted(p.name for p in plys if not re.search(r"\d", p.stem))
        raise SplatFormatError(folder, f"{unnumbered[0]} has no frame number in its name")
    return [p for _, _, p in sorted(numbered)]


def read_ply_folder(folder: str | os.PathLike, fps: float = 8.0) -> Sequence4D:
    """A folder of numbered PLYs without a manifest, one timestep each (fps given by the caller)."""
    folder = Path(folder)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    plys = numbered_plys(folder)
    if not plys:
        raise SplatFormatError(folder, f"neither a {MANIFEST} nor numbered .ply files")
    frames = [read_ply(p) for p in plys]
    # Equal counts do not prove that Gaussian i is the same particle: corresponding stays False.
    return Sequence4D(frames=frames, fps=float(fps))


def read_sequence(folder: str | os.PathLike) -> Sequence4D:
    folder = Path(folder)
    manifest = read_manifest(folder)
    frames = []
    for entry in manifest["frames"]:
        member = _safe_member(folder, entry.get("file"))
        try:
            if not member.is_file():
                raise SplatFormatError(folder / MANIFEST, f"frame file {member.name} is missing")
            arrays = read_ply(member)
        except OSError as exc:  # e.g. a name too long for the file system (found by fuzzing)
            raise SplatFormatError(folder / MANIFEST, f"frame file {str(member.name)[:80]!r} cannot be "
                                                      f"read ({exc.strerror})") from None
        if "count" in entry and entry["count"] != len(arrays):
            raise SplatFormatError(member, f"holds {len(arrays)} Gaussians, the manifest says {entry['count']}")
        frames.append(arrays)
    if manifest.get("corresponding") and len({len(f) for f in frames}) > 1:
        raise SplatFormatError(folder / MANIFEST, "corresponding=true but the timesteps hold different "
                                                  "Gaussian counts")
    return Sequence4D(frames=frames, fps=float(manifest.get("fps", 8.0)), views=int(manifest.get("views", 0)),
                      cameras=manifest.get("cameras") or None, corresponding=bool(manifest.get("corresponding")),
                      extra=manifest.get("extra", {}))
