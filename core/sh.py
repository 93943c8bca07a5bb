# SPDX-License-Identifier: GPL-3.0-or-later
"""Real spherical harmonics in the 3DGS / gsplat convention (degrees 0-3): evaluation and rotation."""
from __future__ import annotations

import math

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """The (degree+1)^2 basis functions at unit directions [..., 3] -> [..., K]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [C2[0] * x * y, C2[1] * y * z, C2[2] * (2 * zz - xx - yy), C2[3] * x * z, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * x * y * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy),
                C3[5] * z * (xx - yy), C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def sh_degree_of(sh: torch.Tensor) -> int:
    degree = int(round(math.sqrt(sh.shape[-2]))) - 1
    if (degree + 1) ** 2 != sh.shape[-2] or degree > 3:
        raise ValueError(f"{sh.shape[-2]} SH coefficients is not (d+1)^2 for d in 0..3")
    return degree


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour before the +0.5 offset: sh [..., K, 3], unit view directions [..., 3] -> [..., 3]."""
    basis = sh_basis(dirs, sh_degree_of(sh))
    return (basis.unsqueeze(-1) * sh).sum(-2)


def sh_to_rgb(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The renderer's colour: eval + 0.5, clamped at 0 like gsplat."""
    return (eval_sh(sh, dirs) + 0.5).clamp_min(0.0)


def _fibonacci_dirs(n: int, dtype=torch.float64) -> torch.Tensor:
    i = torch.arange(n, dtype=dtype) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5 ** 0.5) * i
    return torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1)


def sh_rotation_matrix(rotation: torch.Tensor, degree: int) -> torch.Tensor:
    """[K, K] matrix X with coefficients' = X @ coefficients, so that the rotated function at
    R d equals the original at d. Each band is solved exactly by least squares on a spread of
    directions (the band is closed under rotation, so the fit is exact)."""
    R = rotation.detach().to(torch.float64).cpu()
    dirs = _fibonacci_dirs(64)
    A = sh_basis(dirs, degree)
    B = sh_basis(dirs @ R, degree)  # rows: Y(R^T d_i)
    X = torch.zeros(A.shape[1], A.shape[1], dtype=torch.float64)
    for l in range(degree + 1):
        band = slice(l * l, (l + 1) ** 2)
        X[band, band] = torch.linalg.lstsq(A[:, band], B[:, band]).solution
    return X


def rotate_sh(sh: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate SH coefficients [N, K, 3] by the 3x3 rotation `rotation`."""
    degree = sh_degree_of(sh)
    if degree == 0:
        return sh.clone()
    X = sh_rotation_matrix(rotation, degree).to(sh)
    return torch.einsum("jk,nkc->njc", X, sh)
