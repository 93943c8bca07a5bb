# SPDX-License-Identifier: GPL-3.0-or-later
"""Optional dependencies (the package's extras), imported only where a feature needs them.

A ComfyUI install gets only what ComfyUI itself has; gsplat, diffusers and transformers are extras.
A missing one is one clear line naming the extra and what it enables, never an import traceback.
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType

log = logging.getLogger("fuse4d")

# module -> (extra of pyproject.toml, what it enables)
EXTRAS: dict[str, tuple[str, str]] = {
    "gsplat": ("gsplat", "CUDA rendering with gsplat"),
    "diffusers": ("wan", "Wan video models through diffusers (the demo, animate-scene and train-video commands)"),
    "transformers": ("wan", "the umT5 text encoder through transformers (prompts for the Wan models)"),
}


class MissingExtra(RuntimeError):
    """An optional dependency a feature needs is not installed (the message is one line)."""


def missing_message(module: str) -> str:
    extra, feature = EXTRAS[module]
    return (f"{feature} needs the '{module}' package, which is not installed: install Fuse4D's "
            f"'{extra}' extra (pip install 'fuse4d[{extra}]', or pip install {module} into this environment)")


def require(module: str) -> ModuleType:
    """Import an optional dependency, or raise MissingExtra with the line that says how to get it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the package is there but one of its own imports failed: not ours to word
            raise
        raise MissingExtra(missing_message(module)) from None


def available(module: str) -> bool:
    try:
        require(module)
    except MissingExtra:
        return False
    return True


_told: set[str] = set()


def note_fallback(module: str, fallback: str) -> None:
    """Say once per process that a feature runs without its extra, and how it runs instead."""
    if module not in _told:
        _told.add(module)
        log.warning("Fuse4D: %s; %s", missing_message(module), fallback)
