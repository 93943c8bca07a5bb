# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only: hold one node of one prompt at a known progress step until the test interrupts it.

The test arms the gate by writing ARM_FILE into ComfyUI's temp folder (prompt id, node id, step,
and the name of a marker file) and then queues that prompt. Every ComfyUI progress bar update
(the pack's per-view / per-timestep steps, the sampler's steps) passes through here: when the
armed prompt's node reaches the step, the gate disarms, writes the marker (the test's cue to POST
/interrupt) and waits until ComfyUI's interrupt flag is set. It returns *after* the bar's own
update, so what stops the node is the next interrupt check of the node's own loop."""
from __future__ import annotations

import json
import os
import time

ARM_FILE = "fuse4d_interrupt_gate.json"
HOLD_SECONDS = 120  # never hang a server: a gate nobody interrupts lets the node run on


def _arm_path() -> str:
    import folder_paths

    return os.path.join(folder_paths.get_temp_directory(), ARM_FILE)


def _armed_for(prompt_id: str, node_id: str, value: int) -> dict | None:
    path = _arm_path()
    try:
        with open(path) as f:
            arm = json.load(f)
    except (OSError, ValueError):
        return None
    if (arm.get("prompt_id"), str(arm.get("node_id"))) != (prompt_id, node_id) or value < arm.get("after", 1):
        return None
    os.unlink(path)  # fire once
    return arm


def _hold(arm: dict) -> None:
    import comfy.model_management
    import folder_paths

    marker = os.path.join(folder_paths.get_temp_directory(), os.path.basename(arm["reached"]))
    with open(marker + ".tmp", "w") as f:
        f.write("reached")
    os.replace(marker + ".tmp", marker)
    deadline = time.monotonic() + HOLD_SECONDS
    while not comfy.model_management.processing_interrupted() and time.monotonic() < deadline:
        time.sleep(0.02)


def install() -> None:
    """Wrap ComfyUI's ProgressBar.update_absolute (once) with the gate."""
    import comfy.utils
    from comfy_execution.utils import get_executing_context

    original = comfy.utils.ProgressBar.update_absolute
    if getattr(original, "fuse4d_gate", False):
        return

    def update_absolute(self, value, total=None, preview=None):
        original(self, value, total, preview)
        context = get_executing_context()
        if context is not None:
            arm = _armed_for(context.prompt_id, str(context.node_id), self.current)
            if arm is not None:
                _hold(arm)

    update_absolute.fuse4d_gate = True
    comfy.utils.ProgressBar.update_absolute = update_absolute
