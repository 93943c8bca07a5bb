# SPDX-License-Identifier: GPL-3.0-or-later
"""Pixel-aligned Gaussians from VGGT's depth and cameras plus the Gaussian head's 14 residual
channels: offset 3 | opacity 1 | scale 3 | rotation 4 | colour 3 (the paper's head, Splatt3r-style).

With a zero residual (the head's initial state, or `raw=None`, the training-free analytic mode) each
pixel becomes an opaque isotropic Gaussian at its unprojected depth, sized to its pixel footprint
(depth / focal) and coloured by the pixel."""
from __future__ import annotations

import torch

from ..gaussians import Gaussians, quat_multiply, quat_to_matrix, rgb_to_sh0

GAUSSIAN_CHANNELS = 14
_LOG_SCALE_RANGE = 8.0   # residual log-scale clamp: the head cannot blow a splat up by > e^8


def pose_rotation_translation(pose_enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pose_enc [..., 9] -> (R cam-from-world [..., 3, 3], t [..., 3], unit quaternion of R (w, x, y, z))."""
    q = torch.nn.functional.normalize(pose_enc[..., [6, 3, 4, 5]], dim=-1)
    return quat_to_matrix(q), pose_enc[..., :3], q


FOV_RANGE = (0.02, 3.0)  # radians; a FoV outside (e.g. ReLU'd to 0 by an untrained head) is clamped


def safe_pose_encoding(pose_enc: torch.Tensor) -> torch.Tensor:
    """The encoding with its FoV clamped to FOV_RANGE, so intrinsics stay finite."""
    return torch.cat([pose_enc[..., :7], pose_enc[..., 7:].clamp(*FOV_RANGE)], dim=-1)


def focal_lengths(pose_enc: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    pose_enc = safe_pose_encoding(pose_enc)
    fy = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    return fx, fy


def pixel_gaussians(images: torch.Tensor, depth: torch.Tensor, pose_enc: torch.Tensor,
                    raw: torch.Tensor | None = None, opacity_logit: float = 2.0,
                    scale_pixels: float = 1.0) -> Gaussians:
    """images [N, H, W, 3] in [0, 1], depth [N, H, W], pose_enc [N, 9] (VGGT encoding, world = first
    camera), raw [N, H, W, 14] or None -> N*H*W Gaussians in world coordinates (frame-major)."""
    N, H, W = depth.shape
    dtype, device = depth.dtype, depth.device
    if raw is None:
        raw = torch.zeros(N, H, W, GAUSSIAN_CHANNELS, dtype=dtype, device=device)
    R, t, q_pose = pose_rotation_translation(pose_enc.to(dtype))
    fx, fy = focal_lengths(pose_enc.to(dtype), H, W)
    # pixel grid as VGGT unprojects it: integer pixel coordinates, principal point at (W/2, H/2)
    u = torch.arange(W, dtype=dtype, device=device).view(1, 1, W)
    v = torch.arange(H, dtype=dtype, device=device).view(1, H, 1)
    fx_, fy_ = fx.view(N, 1, 1), fy.view(N, 1, 1)
    cam = torch.stack([(u - W / 2) / fx_ * depth, (v - H / 2) / fy_ * depth, depth], dim=-1)
    footprint = (depth * 2.0 / (fx_ + fy_)).unsqueeze(-1)          # pixel size in world units
    cam = cam + raw[..., 0:3] * footprint
    world = torch.einsum("nji,nhwj->nhwi", R, cam - t.view(N, 1, 1, 3))  # R^T (x - t)
    opacity = raw[..., 3] + opacity_logit
    log_scales = torch.log(footprint.clamp_min(1e-8) * scale_pixels) + raw[..., 4:7].clamp(-_LOG_SCALE_RANGE,
                                                                                             _LOG_SCALE_RANGE)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=device)
    q_local = torch.nn.functional.normalize(raw[..., 7:11] + identity, dim=-1)
    q_c2w = q_pose * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=dtype, device=device)  # inverse rotation
    quats = quat_multiply(q_c2w.view(N, 1, 1, 4).expand_as(q_local), q_local)
    colours = images.to(dtype) + raw[..., 11:14]
    return Gaussians(world.reshape(-1, 3), quats.reshape(-1, 4), log_scales.reshape(-1, 3),
                     opacity.reshape(-1), rgb_to_sh0(colours).reshape(-1, 1, 3))
