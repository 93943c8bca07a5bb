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


def core_splat_class():
    """The payload class of core ComfyUI's Splat socket (newer releases: `Types.SPLAT`, a batch of
    activated Gaussians with positions / scales / rotations (wxyz) / opacities / sh), or None."""
    try:
        import comfy_api.latest as latest
    except ImportError:  # pragma: no cover - always importable inside ComfyUI
        return None
    found = getattr(getattr(latest, "Types", None), "SPLAT", None)
    if found is None:
        try:
            from comfy_api.latest._util import SPLAT as found  # where the class is defined
        except ImportError:
            found = None
    return found


# Feature detection: a ComfyUI with a core Splat socket *and* its payload class gets its own type,
# so our static-splat nodes connect to its splat nodes (RenderSplat, SplatToFile3D, ...); older ones
# (v0.3.75 included) get ours.
CORE_SPLAT = core_splat_class() if hasattr(io, "Splat") else None
HAS_CORE_SPLAT = CORE_SPLAT is not None
SplatType = io.Splat if HAS_CORE_SPLAT else io.Custom("FUSE4D_SPLAT")


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
