# SPDX-License-Identifier: GPL-3.0-or-later
"""Open and save any splat file the suite knows, chosen by extension (numpy only)."""
from __future__ import annotations

from pathlib import Path

from .io import (
    Sequence4D,
    SplatArrays,
    read_glb,
    read_ply,
    read_ply_folder,
    read_sequence,
    read_splat,
    read_spz,
    read_usd,
    write_glb,
    write_ply,
    write_sequence,
    write_splat,
    write_spz,
    write_usd,
)

READERS = {".ply": read_ply, ".splat": read_splat, ".spz": read_spz, ".glb": read_glb, ".gltf": read_glb,
           ".usd": read_usd, ".usda": read_usd, ".usdc": read_usd}
WRITERS = {".ply": write_ply, ".splat": write_splat, ".spz": write_spz, ".glb": write_glb}
# Formats that hold a whole 4D sequence in one file (time samples); the others get one file per timestep.
SEQUENCE_WRITERS = {".usd": write_usd, ".usda": write_usd, ".usdc": write_usd}


def is_sequence_path(path: Path) -> bool:
    return path.is_dir() or path.name == "manifest.json" or (not path.suffix and not path.exists())


def read_any(path: str | Path, fps: float = 8.0) -> SplatArrays | Sequence4D:
    """A static splat file, a USD stage (static or time-sampled), or a 4D sequence (its folder or
    its manifest.json; a folder of numbered PLYs without one plays at `fps`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir() and not (path / "manifest.json").exists():
        return read_ply_folder(path, fps)
    if path.is_dir() or path.name == "manifest.json":
        return read_sequence(path.parent if path.is_file() else path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown splat format {path.suffix!r} (known: {', '.join(READERS)}, or a sequence folder)")
    return reader(path)


def write_any(path: str | Path, data: SplatArrays | Sequence4D) -> list[Path]:
    """Write `data` to `path`. A sequence written to a single-file format becomes one file per
    timestep (`name_t0000.ext`); a static splat written to a folder becomes a 1-step sequence."""
    path = Path(path)
    if is_sequence_path(path):
        seq = data if isinstance(data, Sequence4D) else Sequence4D(frames=[data])
        write_sequence(path, seq)
        return [path]
    if path.suffix.lower() in SEQUENCE_WRITERS:
        return [SEQUENCE_WRITERS[path.suffix.lower()](path, data)]
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        known = ", ".join([*WRITERS, *SEQUENCE_WRITERS])
        raise ValueError(f"{path}: unknown output format {path.suffix!r} (known: {known}, or a folder)")
    if isinstance(data, Sequence4D):
        if len(data.frames) == 1:
            writer(path, data.frames[0])
            return [path]
        outputs = [path.with_name(f"{path.stem}_t{t:04d}{path.suffix}") for t in range(len(data.frames))]
        for out, frame in zip(outputs, data.frames):
            writer(out, frame)
        return outputs
    writer(path, data)
    return [path]
