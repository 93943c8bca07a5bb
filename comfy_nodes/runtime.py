# SPDX-License-Identifier: GPL-3.0-or-later
"""Small bridges to ComfyUI's progress bars, interrupts and devices (one place, so loops stay short)."""
from __future__ import annotations

import comfy.model_management
import comfy.utils


class Steps:
    """A ComfyUI progress bar that also checks for an interrupt before every step."""

    def __init__(self, total: int):
        self.bar = comfy.utils.ProgressBar(max(int(total), 1))

    def check(self) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()

    def done(self, n: int = 1) -> None:
        self.bar.update(n)

    def tick(self, *_args, **_kwargs) -> None:
        """A progress callback for the core (called after each unit of work): stops on an interrupt
        there, so the core's cleanup (temporary folders) runs before the node ends."""
        self.check()
        self.done()


def torch_device():
    return comfy.model_management.get_torch_device()


def intermediate_device():
    return comfy.model_management.intermediate_device()
