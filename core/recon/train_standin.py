# SPDX-License-Identifier: GPL-3.0-or-later
"""A small stand-in reconstructor with the same structure and outputs as the VGGT-based one
(frame / global-per-timestep / zero-initialised temporal attention, a camera token per frame with
optional camera token replacement, a camera head, a dense depth + 14-channel Gaussian head, centres
from unprojected depth + offset, colour = pixel + offset). The trainer uses it only while the
package's reconstructor model is not importable (model_api picks)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class StandInConfig:
    dim: int = 96
    depth: int = 4          # blocks of (frame, global, temporal) attention
    heads: int = 4
    patch: int = 8
    dense_channels: int = 32
    camera_token_replacement: bool = True
    temporal_attention: bool = True
    depth_init: float = 3.2  # typical scene depth, so an untrained model starts near the scene


class Block(nn.Module):
    """Pre-norm attention + MLP with LayerScale (zero-initialised for temporal layers)."""

    def __init__(self, dim: int, heads: int, init_scale: float = 1.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))
        self.ls1 = nn.Parameter(torch.full((dim,), init_scale))
        self.ls2 = nn.Parameter(torch.full((dim,), init_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.ls1 * self.attn(h, h, h, need_weights=False)[0]
        return x + self.ls2 * self.mlp(self.norm2(x))


def _sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding [h*w, dim] (works at any resolution)."""
    q = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(q) / q))
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ay, ax = y.reshape(-1, 1) * freqs, x.reshape(-1, 1) * freqs
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], 1)


class StandInReconstructor(nn.Module):
    def __init__(self, cfg: StandInConfig = StandInConfig()):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embed = nn.Conv2d(3, d, cfg.patch, cfg.patch)
        self.camera_token = nn.Parameter(torch.randn(2, 1, d) * 0.02)  # [first view, other views]
        self.frame_blocks = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.depth))
        self.temporal_blocks = nn.ModuleList(Block(d, cfg.heads, init_scale=0.0) for _ in range(cfg.depth)) \
            if cfg.temporal_attention else nn.ModuleList()
        self.camera_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 9))
        c = cfg.dense_channels
        self.dense_proj = nn.Linear(2 * d, c * cfg.patch * cfg.patch)
        self.dense_conv = nn.Sequential(nn.Conv2d(c + 3, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1),
                                        nn.GELU())
        self.depth_out = nn.Conv2d(c, 1, 3, padding=1)
        self.gaussian_head = nn.Conv2d(c, 14, 3, padding=1)
        nn.init.zeros_(self.gaussian_head.weight)
        nn.init.zeros_(self.gaussian_head.bias)
        nn.init.zeros_(self.depth_out.weight)
        nn.init.zeros_(self.depth_out.bias)
        with torch.no_grad():  # camera head starts at identity rotation and a 45 degree field of view
            self.camera_head[-1].weight.mul_(0.01)
            self.camera_head[-1].bias.copy_(torch.tensor([0, 0, 0, 0, 0, 0, 1, 0.785, 0.785]))

    def forward(self, images: torch.Tensor) -> dict:
        """images [V, T, H, W, 3] in [0, 1] -> dict(tokens-derived outputs) for one sample."""
        V, T, H, W, _ = images.shape
        p, d = self.cfg.patch, self.cfg.dim
        if H % p or W % p:
            raise ValueError(f"image size {W}x{H} must be a multiple of the patch size {p}")
        h, w = H // p, W // p
        x = images.reshape(V * T, H, W, 3).permute(0, 3, 1, 2)
        tok = self.patch_embed(x * 2 - 1).flatten(2).transpose(1, 2) + _sincos_2d(h, w, d).to(x)  # [VT, S, d]
        cam = self.camera_token[(torch.arange(V, device=x.device) > 0).long()]                     # [V, 1, d]
        cam = cam[:, None].expand(V, T, 1, d).reshape(V * T, 1, d)
        tok = torch.cat([cam, tok], 1)
        S = tok.shape[1]
        layers = []
        for i in range(self.cfg.depth):
            tok = self.frame_blocks[i](tok)                                                    # per frame
            g = tok.reshape(V, T, S, d).transpose(0, 1).reshape(T, V * S, d)                   # per timestep
            tok = self.global_blocks[i](g).reshape(T, V, S, d).transpose(0, 1).reshape(V * T, S, d)
            if self.cfg.temporal_attention:                                                    # per view & token
                t_ = tok.reshape(V, T, S, d).permute(0, 2, 1, 3).reshape(V * S, T, d)
                tok = self.temporal_blocks[i](t_).reshape(V, S, T, d).permute(0, 2, 1, 3).reshape(V * T, S, d)
            layers.append(tok)
        cam_tok = tok[:, 0].reshape(V, T, d)
        if self.cfg.camera_token_replacement:
            cam_tok = cam_tok[:, :1].expand(V, T, d)
        pose = self.camera_head(cam_tok)                                                       # [V, T, 9]
        feats = torch.cat([layers[len(layers) // 2 - 1], layers[-1]], -1)[:, 1:]              # [VT, S, 2d]
        dense = self.dense_proj(feats).reshape(V * T, h, w, -1, p, p)
        dense = dense.permute(0, 3, 1, 4, 2, 5).reshape(V * T, -1, H, W)
        dense = self.dense_conv(torch.cat([dense, x], 1))
        depth = self.cfg.depth_init * torch.exp(self.depth_out(dense)[:, 0].clamp(-5, 5)).reshape(V, T, H, W)
        raw = self.gaussian_head(dense).permute(0, 2, 3, 1).reshape(V, T, H, W, 14)
        return {"pose_encoding": pose, "depth": depth, "gaussian_raw": raw}


def pose_to_cameras(pose: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable VGGT-style pose encoding [..., 9] -> (viewmats [..., 4, 4], Ks [..., 3, 3])."""
    t, q, fov_h, fov_w = pose[..., :3], F.normalize(pose[..., 3:7], dim=-1), pose[..., 7], pose[..., 8]
    x, y, z, w = q.unbind(-1)
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(*q.shape[:-1], 3, 3)
    viewmats = torch.zeros(*pose.shape[:-1], 4, 4, dtype=pose.dtype, device=pose.device)
    viewmats[..., :3, :3] = R
    viewmats[..., :3, 3] = t
    viewmats[..., 3, 3] = 1
    Ks = torch.zeros(*pose.shape[:-1], 3, 3, dtype=pose.dtype, device=pose.device)
    Ks[..., 0, 0] = (width / 2) / torch.tan(fov_w.clamp(0.1, 3.0) / 2)
    Ks[..., 1, 1] = (height / 2) / torch.tan(fov_h.clamp(0.1, 3.0) / 2)
    Ks[..., 0, 2], Ks[..., 1, 2], Ks[..., 2, 2] = width / 2, height / 2, 1.0
    return viewmats, Ks


def gaussians_from_outputs(images: torch.Tensor, out: dict, analytic: bool = False):
    """Per-timestep Gaussians (all views) in the first camera's frame: centres = unprojected depth
    + offset, colour = pixel + offset; `analytic` ignores the Gaussian head (opaque, isotropic)."""
    from ..gaussians import Gaussians, inverse_sigmoid, rgb_to_sh0

    V, T, H, W, _ = images.shape
    viewmats, Ks = pose_to_cameras(out["pose_encoding"], W, H)                # [V, T, 4, 4]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=images.dtype, device=images.device) + 0.5,
                            torch.arange(W, dtype=images.dtype, device=images.device) + 0.5, indexing="ij")
    fx, fy = Ks[..., 0, 0][..., None, None], Ks[..., 1, 1][..., None, None]
    depth = out["depth"]
    cam_pts = torch.stack([(xs - W / 2) / fx * depth, (ys - H / 2) / fy * depth, depth], -1)  # [V,T,H,W,3]
    R, tr = viewmats[..., :3, :3], viewmats[..., :3, 3]
    world = torch.einsum("vtji,vthwj->vthwi", R, cam_pts - tr[:, :, None, None, :])         # R^T (p - t)
    raw = out["gaussian_raw"]
    footprint = (depth / fx)[..., None]                                         # one pixel at that depth
    if analytic:
        raw = torch.zeros_like(raw)
    means = world + raw[..., 0:3] * footprint * 4
    opacity = torch.sigmoid(raw[..., 3] + 4.0)
    log_scales = torch.log(footprint * 0.75) + raw[..., 4:7].clamp(-4, 3)
    quats = F.normalize(raw[..., 7:11] + torch.tensor([1.0, 0, 0, 0], device=raw.device), dim=-1)
    colors = (images + raw[..., 11:14] * 0.5).clamp(0.0, 1.0)
    frames = []
    for t in range(T):
        sl = (slice(None), t)
        frames.append(Gaussians(means[sl].reshape(-1, 3), quats[sl].reshape(-1, 4), log_scales[sl].reshape(-1, 3),
                                inverse_sigmoid(opacity[sl].reshape(-1), 1e-4), rgb_to_sh0(colors[sl].reshape(-1, 3))[:, None]))
    return frames
