# SPDX-License-Identifier: GPL-3.0-or-later
"""Custom ComfyUI socket types of the pack, and the payloads that travel on them."""
from __future__ import annotations

from dataclasses import dataclass, field

from comfy_api.latest import io

# Sockets (the strings are what the frontend shows and what links must match).
Gaussians4D = io.Custom("GAUSSIANS_4D")
Grid4D = io.Custom("FUSE4D_GRID")
Cameras4D = io.Custom("FUSE4D_CAMERAS")
Reconstructor = io.Custom("FUSE4D_RECONSTRUCTOR")
# Newer ComfyUI (mid-2026 on) has a core Splat type; older ones get ours.
SplatType = getattr(io, "Splat", None) or io.Custom("FUSE4D_SPLAT")
HAS_CORE_SPLAT = hasattr(io, "Splat")


@dataclass
class GridInfo:
    """How a batch of V*T images (or latent frames) is laid out: view-major, then time."""

    views: int
    frames: int
    width: int = 0
    height: int = 0
    batch: int = 1

    def check_count(self, count: int, what: str = "IMAGE") -> None:
        if count != self.views * self.frames * self.batch:
            raise ValueError(f"{what} holds {count} images, but the 4D grid is {self.views} views x "
                             f"{self.frames} frames (x batch {self.batch}) = "
                             f"{self.views * self.frames * self.batch}")


@dataclass
class Animated4D:
    """What flows on GAUSSIANS_4D: one Gaussian set per timestep (core `Gaussians`), the V cameras."""

    frames: list  # list[fuse4d.core.gaussians.Gaussians]
    cameras: object | None = None  # fuse4d.core.cameras.Cameras
    fps: float = 8.0
    corresponding: bool = False
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)
