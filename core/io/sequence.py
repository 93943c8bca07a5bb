# SPDX-License-Identifier: GPL-3.0-or-later
"""4D splat sequences: a folder of one PLY per timestep plus `manifest.json` (docs/formats.md)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .arrays import SplatArrays
from .atomic import atomic_folder
from .errors import SplatFormatError
from .ply import read_ply, write_ply

FORMAT_NAME = "fuse4d-4d-splat"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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
        "views": seq.views,
        "fps": seq.fps,
        "coordinates": "opencv",  # x right, y down, z forward; world-to-camera matrices
        "frames": [{"t": t, "file": frame_name(t), "count": len(f)} for t, f in enumerate(seq.frames)],
        "cameras": seq.cameras or [],
        "corresponding": bool(seq.corresponding),
        "extra": seq.extra,
    }


def write_sequence(folder: str | os.PathLike, seq: Sequence4D) -> Path:
    """Write the folder atomically: built under a temporary name, then swapped in."""
    if not seq.frames:
        raise ValueError("a 4D sequence needs at least one timestep")
    if seq.corresponding and len({len(f) for f in seq.frames}) > 1:
        raise ValueError("corresponding=True needs the same Gaussian count at every timestep")
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        for t, frame in enumerate(seq.frames):
            write_ply(tmp / frame_name(t), frame)
        (tmp / MANIFEST).write_text(json.dumps(manifest_dict(seq), indent=1))
    return folder


def _safe_member(folder: Path, name: object) -> Path:
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise SplatFormatError(folder / MANIFEST, f"frame file {name!r} must be a relative name inside the folder")
    return folder / name


def read_manifest(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise SplatFormatError(folder, f"no {MANIFEST} (not a 4D splat sequence folder)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplatFormatError(path, f"invalid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise SplatFormatError(path, f"not a {FORMAT_NAME} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise SplatFormatError(path, f"format_version {manifest.get('format_version')} is newer than "
                                     f"this reader ({FORMAT_VERSION})")
    frames = manifest.get("frames")
    if not isinstance(frames, list) or not frames or len(frames) != manifest.get("timesteps"):
        raise SplatFormatError(path, "'frames' must list one entry per timestep")
    return manifest


def read_sequence(folder: str | os.PathLike) -> Sequence4D:
    folder = Path(folder)
    manifest = read_manifest(folder)
    frames = []
    for entry in manifest["frames"]:
        member = _safe_member(folder, entry.get("file") if isinstance(entry, dict) else None)
        if not member.exists():
            raise SplatFormatError(folder / MANIFEST, f"frame file {member.name} is missing")
        arrays = read_ply(member)
        if "count" in entry and entry["count"] != len(arrays):
            raise SplatFormatError(member, f"holds {len(arrays)} Gaussians, the manifest says {entry['count']}")
        frames.append(arrays)
    return Sequence4D(frames=frames, fps=float(manifest.get("fps", 8.0)), views=int(manifest.get("views", 0)),
                      cameras=manifest.get("cameras") or None, corresponding=bool(manifest.get("corresponding")),
                      extra=manifest.get("extra", {}))
