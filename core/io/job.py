# SPDX-License-Identifier: GPL-3.0-or-later
"""The "animate a captured scene" job folder, shared by the Blender add-on (which writes it) and
every back end (which reads it): plain JSON, no numpy needed.

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
import os
from pathlib import Path

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
    """The job of a folder, checked: a ValueError names the file and the problem."""
    path = Path(folder) / JOB_FILE
    try:
        job = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no job file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the job file ({exc})") from None
    if not isinstance(job, dict) or job.get("format") != JOB_FORMAT:
        raise ValueError(f"{path}: not a {JOB_FORMAT} file")
    cameras = job.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        raise ValueError(f"{path}: the job lists no cameras")
    for i, cam in enumerate(cameras):
        if not isinstance(cam, dict) or not _CAMERA_KEYS <= set(cam):
            raise ValueError(f"{path}: camera {i} needs {', '.join(sorted(_CAMERA_KEYS))}")
    return job
