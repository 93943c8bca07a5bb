# SPDX-License-Identifier: GPL-3.0-or-later
"""`Gaussians` (N Gaussians as torch tensors) and `GaussianSequence` (a 4D splat)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from .io import Sequence4D, SplatArrays
from .rotations import matrix_to_quat, quat_multiply, quat_to_matrix  # noqa: F401  (re-exported)
from .sh import C0, rotate_sh


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * C0 + 0.5


@dataclass
class Gaussians:
    """N Gaussians: means [N,3], quats [N,4] (w,x,y,z), log_scales [N,3], opacity_logits [N],
    sh [N,K,3] with K = (d+1)^2, d in 0..3 (sh[:,0] is the DC term)."""

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor

    def __len__(self) -> int:
        return self.means.shape[0]

    def nonfinite(self) -> str | None:
        """Where NaN/inf values are (how many Gaussians, which fields, the first indices), or None;
        the same policy as SplatArrays.nonfinite: such Gaussians are refused, never rendered."""
        with torch.no_grad():
            bad = {f.name: ~torch.isfinite(getattr(self, f.name)).reshape(len(self), -1).all(1)
                   for f in fields(self)} if len(self) else {}
            if not bad or not any(bool(m.any()) for m in bad.values()):
                return None
            rows = torch.nonzero(torch.stack(list(bad.values())).any(0)).flatten().tolist()
        where = ", ".join(f"{name} {int(m.sum())}" for name, m in bad.items() if m.any())
        first = ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")
        return f"{len(rows)} of {len(self)} Gaussians hold NaN or infinite values ({where}; first: {first})"

    # activations -------------------------------------------------------------------------
    @property
    def scales(self) -> torch.Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rotations_normalized(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.quats, dim=-1)

    @property
    def colors_dc(self) -> torch.Tensor:
        return sh0_to_rgb(self.sh[:, 0])

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    @classmethod
    def from_activated(cls, means, quats, scales, opacities, colors) -> "Gaussians":
        """Build from activated values (linear scales, 0-1 opacities, RGB colours)."""
        return cls(means, quats, scales.clamp_min(1e-12).log(), inverse_sigmoid(opacities),
                   rgb_to_sh0(colors)[:, None, :])

    # conversion --------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, arrays: SplatArrays, device=None) -> "Gaussians":
        # Readers may hand out strided views of one block; tensors should be dense for kernels.
        return cls(*(torch.as_tensor(np.ascontiguousarray(getattr(arrays, f.name)), device=device)
                     for f in fields(cls)))

    def to_arrays(self) -> SplatArrays:
        return SplatArrays(*(getattr(self, f.name).detach().float().cpu().numpy() for f in fields(self)))

    def to(self, *args, **kwargs) -> "Gaussians":
        return Gaussians(*(getattr(self, f.name).to(*args, **kwargs) for f in fields(self)))

    def detach(self) -> "Gaussians":
        return Gaussians(*(getattr(self, f.name).detach() for f in fields(self)))

    # editing -----------------------------------------------------------------------------
    def __getitem__(self, index) -> "Gaussians":
        return Gaussians(*(getattr(self, f.name)[index] for f in fields(self)))

    @staticmethod
    def cat(parts: list["Gaussians"]) -> "Gaussians":
        k = max(p.sh.shape[1] for p in parts)
        padded = [torch.nn.functional.pad(p.sh, (0, 0, 0, k - p.sh.shape[1])) for p in parts]
        return Gaussians(*(torch.cat([getattr(p, f) for p in parts]) for f in
                           ("means", "quats", "log_scales", "opacity_logits")), torch.cat(padded))

    def with_sh_degree(self, degree: int) -> "Gaussians":
        k = (degree + 1) ** 2
        sh = self.sh[:, :k] if k <= self.sh.shape[1] else torch.nn.functional.pad(
            self.sh, (0, 0, 0, k - self.sh.shape[1]))
        return Gaussians(self.means, self.quats, self.log_scales, self.opacity_logits, sh)

    def transform(self, rotation: torch.Tensor, translation: torch.Tensor, scale: float = 1.0) -> "Gaussians":
        """The similarity x -> scale * R x + t applied to the scene: centres, orientations,
        sizes and view-dependent colour (SH rotated up to degree 3)."""
        R = torch.as_tensor(rotation, dtype=self.means.dtype, device=self.means.device)
        t = torch.as_tensor(translation, dtype=self.means.dtype, device=self.means.device).reshape(3)
        if R.shape != (3, 3):
            raise ValueError(f"rotation must be 3x3, got {tuple(R.shape)}")
        R64 = R.detach().to(torch.float64)
        if not (torch.allclose(R64 @ R64.T, torch.eye(3, dtype=torch.float64, device=R.device), atol=1e-4)
                and float(torch.linalg.det(R64)) > 0):
            raise ValueError("rotation must be a proper rotation matrix (orthonormal, det +1); "
                             "pass uniform scale separately and no reflections")
        if not float(scale) > 0:
            raise ValueError("scale must be positive")
        q = matrix_to_quat(R).to(self.quats)
        return Gaussians(
            means=float(scale) * self.means @ R.T + t,
            quats=quat_multiply(q.expand_as(self.quats), self.quats),
            log_scales=self.log_scales + math.log(float(scale)),
            opacity_logits=self.opacity_logits,
            sh=rotate_sh(self.sh, R),
        )


@dataclass
class GaussianSequence:
    """A 4D splat: one Gaussians per timestep, optional cameras (core.cameras.Cameras), fps."""

    frames: list[Gaussians]
    fps: float = 8.0
    cameras: object | None = None
    corresponding: bool = False
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def to_sequence4d(self) -> Sequence4D:
        from .cameras import cameras_to_dicts

        cams = cameras_to_dicts(self.cameras) if self.cameras is not None else None
        return Sequence4D(frames=[f.to_arrays() for f in self.frames], fps=self.fps,
                          views=len(cams or []), cameras=cams, corresponding=self.corresponding, extra=self.extra)

    @classmethod
    def from_sequence4d(cls, seq: Sequence4D) -> "GaussianSequence":
        from .cameras import cameras_from_dicts

        return cls([Gaussians.from_arrays(f) for f in seq.frames], seq.fps,
                   cameras_from_dicts(seq.cameras) if seq.cameras else None, seq.corresponding, seq.extra)
