# SPDX-License-Identifier: GPL-3.0-or-later
"""DPT dense head of VGGT (keys depth_head.* / point_head.*): four aggregator layers -> LayerNorm ->
1x1 projections -> resampling to 4x, 2x, 1x, 1/2x the patch grid -> RefineNet fusion -> upsampling
to the image -> small conv head. Frames are processed in chunks to bound memory."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def uv_embedding(h: int, w: int, channels: int, aspect: float, dtype, device) -> torch.Tensor:
    """Sine-cosine embedding [channels, h, w] of a centred UV grid normalised by the diagonal."""
    diag = (aspect ** 2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    xs = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, steps=w, dtype=dtype, device=device)
    ys = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, steps=h, dtype=dtype, device=device)
    quarter = channels // 4
    omega = torch.arange(quarter, dtype=torch.float64, device=device) / quarter
    omega = 1.0 / 100.0 ** omega

    def sincos(t: torch.Tensor) -> torch.Tensor:
        a = t.reshape(-1, 1).double() * omega
        return torch.cat([a.sin(), a.cos()], dim=1).float()

    # separable: the u half depends on the column only, the v half on the row only, so the float64
    # work (VGGT's precision) is O((h + w) * channels), not one value per pixel
    eu, ev = sincos(xs), sincos(ys)                                     # [w, C/2], [h, C/2]
    emb = torch.cat([eu[None].expand(h, w, -1), ev[:, None].expand(h, w, -1)], dim=-1)
    return emb.permute(2, 0, 1).to(dtype)


def relu_residual(x: torch.Tensor, conv1: nn.Conv2d, conv2: nn.Conv2d) -> torch.Tensor:
    # VGGT's residual unit applies an in-place ReLU to its input, so the skip carries relu(x).
    r = F.relu(x)
    return conv2(F.relu(conv1(r))) + r


class ResidualUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_residual(x, self.conv1, self.conv2)


class FusionBlock(nn.Module):
    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualUnit(features)
        self.resConfUnit2 = ResidualUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size or (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


class Scratch(nn.Module):
    def __init__(self, in_channels, features: int, out_dim: int):
        super().__init__()
        for i, ch in enumerate(in_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features, has_residual=False)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(32, out_dim, 1))


class DPTHead(nn.Module):
    def __init__(self, dim_in: int, out_dim: int, patch_size: int = 14, features: int = 256,
                 out_channels=(256, 512, 1024, 1024), layers=(4, 11, 17, 23), frames_chunk: int = 8):
        super().__init__()
        self.patch_size = patch_size
        self.layers = tuple(layers)
        self.frames_chunk = frames_chunk
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, oc, 1) for oc in out_channels])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
        ])
        self.scratch = Scratch(out_channels, features, out_dim)

    def _with_pos(self, x: torch.Tensor, aspect: float) -> torch.Tensor:
        return x + 0.1 * uv_embedding(x.shape[-2], x.shape[-1], x.shape[1], aspect, x.dtype, x.device)[None]

    def _chunk(self, feats: list[torch.Tensor], H: int, W: int) -> torch.Tensor:
        """feats: the selected layers' patch tokens [n, h*w, C] -> raw output [n, out_dim, H, W]."""
        h, w = H // self.patch_size, W // self.patch_size
        maps = []
        for i, x in enumerate(feats):
            x = self.norm(x)
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], h, w)
            x = self._with_pos(self.projects[i](x), W / H)
            maps.append(self.resize_layers[i](x))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i + 1}_rn")(m) for i, m in enumerate(maps))
        out = s.refinenet4(l4, size=l3.shape[2:])
        out = s.refinenet3(out, l3, size=l2.shape[2:])
        out = s.refinenet2(out, l2, size=l1.shape[2:])
        out = s.refinenet1(out, l1)
        out = s.output_conv1(out)
        out = F.interpolate(out, size=(h * self.patch_size, w * self.patch_size), mode="bilinear", align_corners=True)
        return s.output_conv2(self._with_pos(out, W / H))

    def forward(self, tokens: list[torch.Tensor | None], patch_start: int, H: int, W: int,
                frames_chunk: int | None = None) -> torch.Tensor:
        """tokens: per layer [N, P, C] (N frames) -> raw per-pixel outputs [N, H, W, out_dim], computed
        `frames_chunk` frames at a time (default the configured chunk; 0 = all at once)."""
        n = tokens[self.layers[0]].shape[0]
        step = (self.frames_chunk if frames_chunk is None else frames_chunk) or n
        outs = []
        for a in range(0, n, step):
            feats = [tokens[i][a:a + step, patch_start:].float() for i in self.layers]  # fp32 per chunk
            outs.append(self._chunk(feats, H, W).permute(0, 2, 3, 1))
        return torch.cat(outs, dim=0)


def activate_dense(raw: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """raw [..., k+1] -> (values [..., k], confidence [...] = 1 + exp(last channel))."""
    values, conf = raw[..., :-1], raw[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    elif activation == "inv_log":
        values = torch.sign(values) * torch.expm1(values.abs())
    else:
        raise ValueError(f"unknown dense activation {activation!r}")
    return values, 1 + conf.exp()
