# SPDX-License-Identifier: GPL-3.0-or-later
"""Animate a captured scene: one job = render the rig's views, hand them to a back end, import
the answer. `AnimateJob.step()` does one short piece of work per call (the modal operator calls it
on a timer, tests call it in a loop), so Blender's UI never waits on the back end."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import importer
from .backends import RESULT_DIR, Backend, write_job
from .splatio import align_cameras
from .rig import camera_dict, render_view, rig_cameras
from .splatio import Sequence4D, read_ply, read_sequence

STATES = ("CHECK", "RENDER", "SUBMIT", "WAIT", "IMPORT", "DONE", "CANCELLED", "FAILED")


class AnimateJob:
    def __init__(self, source, backend: Backend, job_dir: str | Path | None = None, frames: int = 8,
                 fps: float = 8.0, prompt: str = "", width: int = 256, height: int = 256,
                 engine: str = "CYCLES", samples: int = 16, cameras: list | None = None,
                 hide_source: bool = False):
        self.source = source
        self.backend = backend
        self.cameras = cameras if cameras is not None else rig_cameras(source)
        if not self.cameras:
            raise ValueError(f"{source.name!r} has no camera rig: create one first")
        self.job_dir = Path(job_dir or tempfile.mkdtemp(prefix="fuse4d_job_"))
        self.frames, self.fps, self.prompt = frames, fps, prompt
        self.width, self.height, self.engine, self.samples = width, height, engine, samples
        self.hide_source = hide_source
        self.scene = bpy.context.scene
        self.state = "CHECK"
        self.progress = 0.0
        self.message = "checking the back end"
        self.result = None  # the imported object when DONE
        self._next_view = 0
        self._camera_json: list[dict] = []

    @property
    def finished(self) -> bool:
        return self.state in ("DONE", "CANCELLED", "FAILED")

    def step(self) -> str:
        """Advance by one unit of work; errors end the job in FAILED with a message."""
        try:
            getattr(self, f"_step_{self.state.lower()}", lambda: None)()
        except Exception as exc:  # shown to the user in the panel / operator report
            self.backend.cancel() if self.state == "WAIT" else None
            self.state, self.message = "FAILED", f"{type(exc).__name__}: {exc}"
        return self.state

    def _step_check(self) -> None:
        """Before rendering anything: a missing interpreter or server fails the job at once."""
        self.backend.check()
        self.state, self.message = "RENDER", "rendering views"

    def _step_render(self) -> None:
        i = self._next_view
        cam = self.cameras[i]
        name = f"views/view_{i:03d}.png"
        render_view(self.scene, cam, self.job_dir / name, self.width, self.height, self.engine, self.samples,
                    only=self.source)
        entry = camera_dict(cam, self.source, self.width, self.height)
        entry["image"] = name
        self._camera_json.append(entry)
        self._next_view += 1
        self.progress = 0.2 * self._next_view / len(self.cameras)
        self.message = f"rendered view {self._next_view}/{len(self.cameras)}"
        if self._next_view == len(self.cameras):
            self.state = "SUBMIT"

    def _step_submit(self) -> None:
        timestep = importer.current_timestep(self.source)
        importer.export_ply(self.source, self.job_dir / "source.ply", timestep)
        write_job(self.job_dir, self._camera_json, self.frames, self.fps, self.prompt,
                  extra={"source_object": self.source.name})
        shutil.rmtree(self.job_dir / RESULT_DIR, ignore_errors=True)
        self.backend.start(self.job_dir)
        self.state, self.message = "WAIT", "back end started"

    def _step_wait(self) -> None:
        status = self.backend.poll()
        self.progress = 0.2 + 0.75 * status.progress
        self.message = status.message or self.message
        if status.state == "done":
            self.state = "IMPORT"
        elif status.state in ("failed", "cancelled"):
            self.state = "FAILED" if status.state == "failed" else "CANCELLED"

    def _step_import(self) -> None:
        self.result = import_result(self.job_dir / RESULT_DIR, self.source, self._camera_json,
                                    frame_start=self.scene.frame_current)
        if self.hide_source:  # the result sits exactly where the source is
            self.source.hide_set(True)
            self.source.hide_render = True
        self.state, self.progress, self.message = "DONE", 1.0, f"imported {self.result.name}"

    def cancel(self) -> None:
        """Stop now. Nothing was added to the scene before IMPORT, so there is nothing to undo."""
        if not self.finished:
            self.backend.cancel()
            self.state, self.message = "CANCELLED", "cancelled"


def read_result(folder: Path) -> Sequence4D:
    if (folder / "manifest.json").exists():
        return read_sequence(folder)
    plys = sorted(folder.glob("*.ply"))
    if not plys:
        raise ValueError(f"{folder}: the back end produced neither a manifest.json nor a .ply")
    return Sequence4D(frames=[read_ply(p) for p in plys])


def import_result(folder: Path, source, job_cameras: list[dict], frame_start: int = 1):
    """The back end's sequence as a new animated object over the source, in the source's collection,
    starting at `frame_start`; aligned by the source's transform and, if the result carries
    the cameras, by the similarity mapping its cameras onto the job's."""
    seq = read_result(Path(folder))
    align = align_cameras([c["viewmat"] for c in seq.cameras or []], [c["viewmat"] for c in job_cameras])
    collection = source.users_collection[0] if source.users_collection else bpy.context.scene.collection
    scene = bpy.context.scene
    with importer.nothing_left_on_failure():
        # One timestep per frame: the job asked for `frames` at the scene's pace.
        obj = importer.sequence_object(seq, f"{source.name} animated", frame_start=frame_start, retime=False,
                                       collection=collection, adjust_scene=False)
        obj.matrix_world = Matrix((np.array(source.matrix_world) @ align).tolist())
        obj["fuse4d_source_object"] = source.name
    scene.frame_end = max(scene.frame_end, frame_start + len(seq) - 1)
    return obj
