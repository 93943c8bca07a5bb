# SPDX-License-Identifier: GPL-3.0-or-later
"""Timesteps on the timeline: the Time modifier's "Frame Index" input is keyframed (one constant
key per timestep), so retiming is ordinary F-curve editing and it all lives in the .blend."""
from __future__ import annotations

import math

from .compat import find_fcurve
from .nodes import BLEND_GROUP, input_path, set_input

MODES = ("HOLD", "LOOP")


def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def keyframe_timesteps(obj, modifier, timesteps: int, frame_start: float = 1, mode: str = "HOLD",
                       frames_per_step: float = 1.0) -> None:
    """Timestep t shows from frame `frame_start + t * frames_per_step` (the scene's fps over the
    sequence's keeps real time); before/after the range the first/last one holds (HOLD) or the
    sequence repeats (LOOP)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not frames_per_step > 0:
        raise ValueError(f"frames_per_step must be positive, got {frames_per_step}")
    blend = modifier.node_group.name == BLEND_GROUP  # a float Time, linear between the keys
    name = "Time" if blend else "Frame Index"
    path = input_path(modifier, name)
    # LOOP gets one more key (timestep 0 again; Time = T when blending, which wraps to 0) so the
    # cycle's period is exactly T steps long.
    for t in range(timesteps + (mode == "LOOP")):
        set_input(modifier, name, float(t) if blend else t % timesteps)
        obj.keyframe_insert(data_path=path, frame=frame_start + t * frames_per_step)
    curve = find_fcurve(obj, path)
    for key in curve.keyframe_points:
        key.interpolation = "LINEAR" if blend else "CONSTANT"
    curve.extrapolation = "CONSTANT"
    for m in list(curve.modifiers):
        curve.modifiers.remove(m)
    if mode == "LOOP":
        curve.modifiers.new("CYCLES")
    obj["fuse4d_frame_start"] = frame_start
    obj["fuse4d_timesteps"] = timesteps
    obj["fuse4d_frames_per_step"] = float(frames_per_step)


def last_frame(frame_start: float, timesteps: int, frames_per_step: float) -> int:
    """The last scene frame still inside the sequence (the last timestep shows one step long)."""
    return int(round(frame_start + timesteps * frames_per_step)) - 1


def set_scene_timing(scene, fps: float, frame_start: int, timesteps: int) -> None:
    """Scene fps (fractional rates through fps_base) and frame range from a manifest."""
    whole = max(1, round(fps))
    scene.render.fps = whole
    scene.render.fps_base = whole / fps
    scene.frame_start = frame_start
    scene.frame_end = frame_start + timesteps - 1


def timestep_at(obj, frame: float) -> int:
    """The timestep shown at `frame` (evaluates the keyframed input, as the depsgraph does)."""
    from .nodes import TIME_MODIFIER

    mod = obj.modifiers[TIME_MODIFIER]
    if mod.node_group.name == BLEND_GROUP:
        value = find_fcurve(obj, input_path(mod, "Time")).evaluate(frame)
        return int(math.floor(value + 1e-6)) % int(obj.get("fuse4d_timesteps", 1))
    curve = find_fcurve(obj, input_path(mod, "Frame Index"))
    return int(round(curve.evaluate(frame)))


__all__ = ["MODES", "keyframe_timesteps", "last_frame", "scene_fps", "set_scene_timing", "timestep_at"]
