# SPDX-License-Identifier: GPL-3.0-or-later
"""EWA projection of 3D Gaussians to the image plane, in gsplat's conventions
(quaternions w x y z, linear scales, world-to-camera viewmats, pixel intrinsics, eps2d = 0.3)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rotations import quat_to_matrix

EPS2D = 0.3          # the low-pass filter added to the 2D covariance diagonal (pixels^2)
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
RADIUS_SIGMAS = 3.33  # gsplat's per-axis bounding radius
ALPHA_MIN = 1.0 / 255.0


@dataclass
class Projected:
    """Per-Gaussian screen-space quantities for one camera (N Gaussians)."""

    means2d: torch.Tensor   # [N, 2] pixels
    conics: torch.Tensor    # [N, 3] upper triangle of the inverse 2D covariance (a, b, c)
    depths: torch.Tensor    # [N] camera-space z
    radii: torch.Tensor     # [N, 2] integer bounding half-sizes; 0 = culled
    means_cam: torch.Tensor  # [N, 3]


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space 3D covariances R S S^T R^T, [N, 3, 3]."""
    M = quat_to_matrix(quats) * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def project(means: torch.Tensor, covars: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor,
            width: int, height: int, opacities: torch.Tensor | None = None) -> Projected:
    """EWA projection like gsplat's `fully_fused_projection`. With `opacities`, the bounding radius is
    opacity-aware as in gsplat's CUDA kernel (no farther than where alpha falls below 1/255) and
    Gaussians fainter than 1/255 are culled; without, it is 3.33 sigma like gsplat's torch reference."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t
    cc = R @ covars @ R.T
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tz_safe = torch.where(tz > NEAR_PLANE, tz, torch.ones_like(tz))
    # Clamp the Jacobian's view angle like gsplat (keeps off-screen Gaussians from exploding).
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    ux = torch.clamp(tx / tz_safe, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    uy = torch.clamp(ty / tz_safe, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zeros = torch.zeros_like(tz)
    J = torch.stack([fx / tz_safe, zeros, -fx * ux / tz_safe,
                     zeros, fy / tz_safe, -fy * uy / tz_safe], -1).reshape(-1, 2, 3)
    cov2d = J @ cc @ J.transpose(-1, -2)
    a = cov2d[:, 0, 0] + EPS2D
    c = cov2d[:, 1, 1] + EPS2D
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * tx / tz_safe + cx, fy * ty / tz_safe + cy], -1)
    with torch.no_grad():
        extend = torch.full_like(a, RADIUS_SIGMAS)
        valid = (tz > NEAR_PLANE) & (tz < FAR_PLANE) & (a * c - b * b > 0)
        if opacities is not None:
            o = opacities.detach()
            extend = torch.minimum(extend, torch.sqrt(2 * torch.log((o / ALPHA_MIN).clamp_min(1.0))))
            valid &= o >= ALPHA_MIN
        radii = torch.stack([torch.ceil(extend * a.sqrt()), torch.ceil(extend * c.sqrt())], -1)
        inside = ((means2d[:, 0] + radii[:, 0] > 0) & (means2d[:, 0] - radii[:, 0] < width)
                  & (means2d[:, 1] + radii[:, 1] > 0) & (means2d[:, 1] - radii[:, 1] < height))
        radii = torch.where((valid & inside)[:, None], radii, torch.zeros_like(radii)).long()
    return Projected(means2d, conics, tz, radii, mc)
