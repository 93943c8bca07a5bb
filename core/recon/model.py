# SPDX-License-Identifier: GPL-3.0-or-later
"""The VGGT-based feed-forward 4D reconstructor (paper stage 2).

Input grid convention (same as the video model): view-major images [B, V, T, 3, H, W] in [0, 1]
(an unbatched [V, T, 3, H, W] is accepted). Every output is [B, V, T, ...]. At each timestep, view 0
is VGGT's "first frame": its camera defines the world frame of that timestep's Gaussians; with camera
token replacement every timestep shares the t = 0 cameras, hence one world frame for the sequence.

The parameter names are VGGT-1B's (aggregator.*, camera_head.*, depth_head.*, point_head.*), plus
aggregator.temporal_blocks.* and gaussian_head.* for the paper's additions."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn

from ..cameras import Cameras, from_vggt_pose_encoding
from ..gaussians import Gaussians
from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import VGGTConfig
from .dpt import DPTHead, activate_dense
from .gaussian_head import GAUSSIAN_CHANNELS, pixel_gaussians, safe_pose_encoding


def parameter_group(name: str) -> str:
    """'temporal' (temporal layers), 'head' (Gaussian head) or 'backbone' (everything VGGT has)."""
    if name.startswith("aggregator.temporal_blocks."):
        return "temporal"
    if name.startswith("gaussian_head."):
        return "head"
    return "backbone"


def replace_camera_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [B, T, V, P, C]: every view's camera token (index 0) at every t := its token at t = 0.
    In place (no copy of the layer) unless autograd needs the input; returns the result."""
    if tokens.requires_grad and torch.is_grad_enabled():
        cam = tokens[:, :1, :, :1].expand(-1, tokens.shape[1], -1, -1, -1)
        return torch.cat([cam, tokens[:, :, :, 1:]], dim=3)
    tokens[:, 1:, :, 0] = tokens[:, :1, :, 0]
    return tokens


class VGGT4D(nn.Module):
    def __init__(self, cfg: VGGTConfig | None = None):
        super().__init__()
        cfg = cfg or VGGTConfig()
        cfg.validate()
        self.cfg = cfg
        dim = cfg.token_dim
        self.aggregator = Aggregator(cfg)

        def dpt(out_dim: int) -> DPTHead:
            return DPTHead(dim, out_dim, cfg.patch_size, cfg.dpt_features, cfg.dpt_out_channels,
                           cfg.dpt_layers, cfg.dpt_frames_chunk)

        self.camera_head = (CameraHead(dim, cfg.camera_trunk_depth, cfg.camera_heads, cfg.camera_iterations)
                            if cfg.enable_camera else None)
        self.depth_head = dpt(2) if cfg.enable_depth else None
        self.point_head = dpt(4) if cfg.enable_point else None
        self.gaussian_head = dpt(GAUSSIAN_CHANNELS) if cfg.enable_gaussian else None
        if self.gaussian_head is not None:
            # a zero residual makes the untrained head the analytic depth-based Gaussians
            last = self.gaussian_head.scratch.output_conv2[2]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    # ------------------------------------------------------------------------------------
    def _autocast(self, device: torch.device):
        """bf16 on Ampere and newer, fp16 before (bf16 there has no tensor cores and no fused attention)."""
        from ..precision import half_dtype

        dtype = half_dtype(device)
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def encode(self, images: torch.Tensor, after_layer: Callable[[], object] | None = None
               ) -> list[torch.Tensor | None]:
        """images [B, V, T, 3, H, W] in [0, 1] -> the aggregator layers the heads read, each
        [B, T, V, P, 2C] in the compute dtype (fp32 on the CPU, the autocast dtype on CUDA: half the
        memory of fp32 copies; the heads cast what they read), None for layers no head reads, camera
        tokens already replaced. `after_layer()` runs after each aggregator layer (it may raise)."""
        B, V, T = images.shape[:3]
        grid = images.transpose(1, 2)                                     # [B, T, V, 3, H, W]
        with self._autocast(images.device):
            layers = self.aggregator(grid, keep=self.cfg.kept_layers(), after_layer=after_layer)
        if self.cfg.camera_token_replacement and T > 1:
            layers = [None if x is None else replace_camera_tokens(x) for x in layers]
        return layers

    def decode(self, layers: list[torch.Tensor | None], H: int, W: int, heads: tuple[str, ...] | None = None,
               timesteps: slice = slice(None), frames_chunk: int | None = None) -> dict:
        """The heads on encoded layers, for the timesteps in `timesteps` (all by default): a dict of
        [B, V, t, ...] tensors (see `forward`). Decoding a few timesteps at a time bounds head memory;
        `frames_chunk` overrides how many frames the dense heads run at once (cfg.dpt_frames_chunk)."""
        wanted = set(heads) if heads is not None else {"camera", "depth", "point", "gaussian"}
        last = layers[-1]
        B, T_all, V = last.shape[:3]
        chosen = range(T_all)[timesteps]
        sel = slice(chosen.start, chosen.stop, chosen.step) if len(chosen) else slice(0, 0)
        T = len(chosen)
        layers = [None if x is None else x[:, sel] for x in layers]

        def to_bvt(x: torch.Tensor) -> torch.Tensor:                    # [B*T*V, ...] -> [B, V, T, ...]
            return x.reshape(B, T, V, *x.shape[1:]).transpose(1, 2)

        out: dict = {}
        with torch.autocast(last.device.type, enabled=False):
            if self.camera_head is not None and "camera" in wanted:
                # after replacement all timesteps carry t=0's camera tokens: run the head once, share it
                shared = self.cfg.camera_token_replacement and T_all > 1
                cam_tokens = last[:, :1, :, 0] if shared else layers[-1][:, :, :, 0]
                encs = [e.reshape(B, -1, V, 9).expand(B, T, V, 9).transpose(1, 2)
                        for e in self.camera_head(cam_tokens.reshape(-1, V, cam_tokens.shape[-1]).float())]
                out["pose_enc"], out["pose_enc_list"] = encs[-1], encs
            flat = [None if x is None else x.reshape(B * T * V, *x.shape[3:]) for x in layers]
            start = self.aggregator.patch_start_idx
            if self.depth_head is not None and "depth" in wanted:
                d, conf = activate_dense(self.depth_head(flat, start, H, W, frames_chunk), "exp")
                out["depth"], out["depth_conf"] = to_bvt(d), to_bvt(conf)
            if self.point_head is not None and "point" in wanted:
                p, conf = activate_dense(self.point_head(flat, start, H, W, frames_chunk), "inv_log")
                out["world_points"], out["world_points_conf"] = to_bvt(p), to_bvt(conf)
            if self.gaussian_head is not None and "gaussian" in wanted:
                out["gaussian_raw"] = to_bvt(self.gaussian_head(flat, start, H, W, frames_chunk))
        return out

    def forward(self, images: torch.Tensor, heads: tuple[str, ...] | None = None) -> dict:
        """images [B, V, T, 3, H, W] (or [V, T, 3, H, W]) in [0, 1] -> dict of [B, V, T, ...] tensors:
        pose_enc (9), pose_enc_list, depth (.., H, W, 1), depth_conf, world_points (.., 3),
        world_points_conf, gaussian_raw (.., 14). `heads` restricts which heads run."""
        if images.dim() == 5:
            images = images[None]
        if images.dim() != 6 or images.shape[3] != 3:
            raise ValueError(f"expected images [B, V, T, 3, H, W], got {tuple(images.shape)}")
        return self.decode(self.encode(images), images.shape[-2], images.shape[-1], heads)

    def forward_vggt(self, images: torch.Tensor) -> dict:
        """Official VGGT calling convention: images [S, 3, H, W] or [B, S, 3, H, W] -> [B, S, ...]."""
        if images.dim() == 4:
            images = images[None]
        out = self(images[:, :, None], heads=("camera", "depth", "point"))
        return {k: ([e[:, :, 0] for e in v] if isinstance(v, list) else v[:, :, 0]) for k, v in out.items()}

    # ------------------------------------------------------------------------------------
    def gaussians(self, images: torch.Tensor, out: dict, analytic: bool = False) -> list[list[Gaussians]]:
        """Per sample, per timestep: the Gaussians of all V views (view-major, pixel-major inside a view).
        analytic=True ignores the Gaussian head (training-free mode)."""
        if images.dim() == 5:
            images = images[None]
        B, V, T, _, H, W = images.shape
        raw = None if analytic or "gaussian_raw" not in out else out["gaussian_raw"]
        result = []
        for b in range(B):
            per_t = []
            for t in range(T):
                per_t.append(pixel_gaussians(
                    images[b, :, t].permute(0, 2, 3, 1), out["depth"][b, :, t, ..., 0], out["pose_enc"][b, :, t],
                    None if raw is None else raw[b, :, t], self.cfg.gaussian_opacity_logit,
                    self.cfg.gaussian_scale_pixels))
            result.append(per_t)
        return result

    @staticmethod
    def cameras(out: dict, width: int, height: int) -> list[list[Cameras]]:
        """Per sample, per timestep: the V predicted cameras (world = view 0's camera; FoV clamped)."""
        enc = safe_pose_encoding(out["pose_enc"])
        return [[from_vggt_pose_encoding(enc[b, :, t].detach().float(), width, height)
                 for t in range(enc.shape[2])] for b in range(enc.shape[0])]
