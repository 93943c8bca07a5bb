# SPDX-License-Identifier: GPL-3.0-or-later
"""`SplatArrays`: N Gaussians as plain numpy arrays (what every file format reads and writes)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SH_C0 = 0.28209479177387814


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings for large |x| (tanh form)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def sh_degree_for(coefficients: int) -> int:
    degree = int(round(math.sqrt(coefficients))) - 1
    if (degree + 1) ** 2 != coefficients or not 0 <= degree <= 3:
        raise ValueError(f"{coefficients} SH coefficients per channel is not (d+1)^2 for a degree d in 0..3")
    return degree


@dataclass
class SplatArrays:
    """means [N,3]; quats [N,4] as (w,x,y,z); log_scales [N,3]; opacity_logits [N];
    sh [N,K,3] with K = (d+1)^2 (sh[:,0] is the DC term; coefficient k of channel c is sh[:,k,c])."""

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray

    def __post_init__(self) -> None:
        # float32 views are kept as they are (a reader may hand out views of one block).
        n = len(self.means)
        self.means = np.asarray(self.means, np.float32).reshape(n, 3)
        self.quats = np.asarray(self.quats, np.float32).reshape(n, 4)
        self.log_scales = np.asarray(self.log_scales, np.float32).reshape(n, 3)
        self.opacity_logits = np.asarray(self.opacity_logits, np.float32).reshape(n)
        sh = np.asarray(self.sh, np.float32)
        # -1 cannot be inferred for zero Gaussians: take K from the array's own shape then
        k = -1 if n else (sh.shape[1] if sh.ndim == 3 else max(sh.shape[-1] // 3, 1) if sh.ndim == 2 else 1)
        self.sh = sh.reshape(n, k, 3)
        sh_degree_for(self.sh.shape[1])

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return sh_degree_for(self.sh.shape[1])

    @property
    def colors(self) -> np.ndarray:
        """Base (view-independent) RGB, 0.5 + C0 * DC."""
        return 0.5 + SH_C0 * self.sh[:, 0]

    @property
    def opacities(self) -> np.ndarray:
        return sigmoid(self.opacity_logits)

    def subset(self, index) -> "SplatArrays":
        return SplatArrays(self.means[index], self.quats[index], self.log_scales[index],
                           self.opacity_logits[index], self.sh[index])

    def nonfinite(self) -> str | None:
        """Where NaN/inf values are (how many, in which fields and Gaussians), or None if none.
        The one policy: readers and writers refuse such data with this message, never pass it on."""
        if not len(self):
            return None
        fields = ("means", "quats", "log_scales", "opacity_logits", "sh")
        bad = {f: ~np.isfinite(getattr(self, f)).reshape(len(self), -1).all(1) for f in fields}
        rows = np.flatnonzero(np.logical_or.reduce(list(bad.values())))
        if not len(rows):
            return None
        where = ", ".join(f"{f} {int(m.sum())}" for f, m in bad.items() if m.any())
        first = ", ".join(str(int(i)) for i in rows[:5]) + (" ..." if len(rows) > 5 else "")
        return f"{len(rows)} of {len(self)} Gaussians hold NaN or infinite values ({where}; first: {first})"

    def is_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (self.means, self.quats, self.log_scales,
                                                   self.opacity_logits, self.sh))

    @staticmethod
    def concatenate(parts: list["SplatArrays"]) -> "SplatArrays":
        k = max(p.sh.shape[1] for p in parts)
        sh = [np.pad(p.sh, ((0, 0), (0, k - p.sh.shape[1]), (0, 0))) for p in parts]
        return SplatArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                             ("means", "quats", "log_scales", "opacity_logits")), np.concatenate(sh))
