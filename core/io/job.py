# SPDX-License-Identifier: GPL-3.0-or-later
"""The "animate a captured scene" job folder, shared by the Blender add-on (which writes it) and
every back end (which reads it): plain JSON.

  JOB/views/view_000.png ...   frozen-time renders of the source splats, one per rig camera
  JOB/cameras.json             {"format": "fuse4d-job", "format_version": 1, "coordinates": "opencv",
                                "views": V, "frames": T, "fps": f, "prompt": str, "source": "source.ply",
                                "cameras": [{"viewmat" 4x4 world-to-camera, "K" 3x3, "width", "height",
                                             "image": "views/view_000.png"}, ...], "extra": {}}
  JOB/source.ply               the source Gaussians (data space = the cameras' world)
  JOB/result/                  the back end's answer: a 4D sequence folder (manifest.json + PLYs,
                               ideally in the job's world; if its manifest lists V cameras the add-on
                               aligns them onto the job's) or a single .ply.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .paths import member_problem
from .sequence import camera_problem, load_json

JOB_FORMAT = "fuse4d-job"
JOB_FILE = "cameras.json"
RESULT_DIR = "result"
_CAMERA_KEYS = {"viewmat", "K", "width", "height", "image"}


def write_job(folder: str | os.PathLike, cameras: list[dict], frames: int, fps: float,
              prompt: str = "", source: str | None = "source.ply", extra: dict | None = None) -> Path:
    """Write JOB/cameras.json atomically (images and source.ply are written by the caller)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    job = {"format": JOB_FORMAT, "format_version": 1, "coordinates": "opencv", "views": len(cameras),
           "frames": int(frames), "fps": float(fps), "prompt": prompt, "source": source,
           "cameras": cameras, "extra": extra or {}}
    tmp = folder / f".{JOB_FILE}.partial"
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, folder / JOB_FILE)
    return folder / JOB_FILE


def read_job(folder: str | os.PathLike) -> dict:
    """The job of a folder, checked: a ValueError names the file and the problem (cameras as in a
    manifest, image and source names inside the folder, frames, fps)."""
    folder = Path(folder)
    path = folder / JOB_FILE
    try:
        job = load_json(path, lambda where, problem: ValueError(f"{where}: {problem}"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no job file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the job file ({exc})") from None
    if not isinstance(job, dict) or job.get("format") != JOB_FORMAT:
        raise ValueError(f"{path}: not a {JOB_FORMAT} file")
    cameras = job.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        raise ValueError(f"{path}: the job lists no cameras")
    for i, cam in enumerate(cameras):
        if not isinstance(cam, dict) or not _CAMERA_KEYS <= set(cam):
            raise ValueError(f"{path}: camera {i} needs {', '.join(sorted(_CAMERA_KEYS))}")
        problem = camera_problem(cam) or _member(folder, cam["image"], "image")
        if problem:
            raise ValueError(f"{path}: camera {i}: {problem}")
    if job.get("source") is not None:
        problem = _member(folder, job["source"], "source")
        if problem:
            raise ValueError(f"{path}: {problem}")
    frames, fps = job.get("frames", 1), job.get("fps", 8.0)
    if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= 10_000:
        raise ValueError(f"{path}: frames must be an integer in 1..10000, got {frames!r}")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"{path}: fps must be a positive number, got {fps!r}")
    if not isinstance(job.get("prompt", ""), str) or not isinstance(job.get("extra", {}), dict):
        raise ValueError(f"{path}: 'prompt' must be a string and 'extra' an object")
    return job


def _member(folder, name, what: str) -> str | None:
    problem = member_problem(folder, name)
    return f"{what} {name!r} {problem}" if problem else None
