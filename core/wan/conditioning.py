# SPDX-License-Identifier: GPL-3.0-or-later
"""Reference-frame conditioning of a V x T latent grid laid out [B, C, V*T, h, w] (view-major).

Three mechanisms, each used identically by the trainer and the sampler:
  * clean-latent replacement (training-free): cells with a reference hold the clean reference latent
    at every step (and, optionally, timestep 0 for their tokens, as Wan 2.2 TI2V does);
  * additive patch-embedding conditioning (the paper's, needs a fine-tuned checkpoint): the patch
    embedding of the reference latents (zeros in other cells, no bias) is added to the noisy latents'
    patch embedding. It reuses the model's own patch_embedding weights: no new weights.
  * channel conditioning (`concat_reference`, Wan I2V-style, the tiny model's): the model input is
    [noisy latents, references, flag] along channels, in_dim = 2C + 1. Each view's frozen-time frame
    fills that view's other cells too, so every token sees its view's t = 0 content at its own place
    and a small model learns "keep the scene, add the motion" in a few thousand steps instead of first
    learning to fetch the reference through attention. (Adding that broadcast to the additive term
    instead would be ambiguous: a linear embedding of noisy + reference cannot tell the two apart.)

`ReferenceConditioning` gives the same model inputs to a host that runs the network itself (the
ComfyUI pack), from the noisy latents, the reference latents and the cell mask.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


def cell_mask(views: int, frames: int, frozen_time: bool, fixed_view: bool, device=None) -> torch.Tensor:
    """Bool [V, T] of conditioned latent cells: row t=0 (frozen time) and/or column v=0 (fixed view)."""
    m = torch.zeros(views, frames, dtype=torch.bool, device=device)
    if frozen_time:
        m[:, 0] = True
    if fixed_view:
        m[0, :] = True
    return m


def reference_term(reference: torch.Tensor, mask: torch.Tensor, broadcast: bool = False) -> torch.Tensor:
    """Latents [B, C, V*T, h, w] whose patch embedding is added: the references on conditioned cells,
    zeros elsewhere; with `broadcast`, a view's unconditioned cells hold its t = 0 reference (if given)."""
    views, frames = mask.shape
    m = mask.reshape(1, 1, -1, 1, 1).to(reference.dtype)
    out = reference * m
    if broadcast and bool(mask[:, 0].any()):
        x = out.unflatten(2, (views, frames))                       # [B, C, V, T, h, w]
        first = x[:, :, :, :1] * mask[:, :1].reshape(1, 1, views, 1, 1, 1).to(x.dtype)
        empty = (~mask).reshape(1, 1, views, frames, 1, 1).to(x.dtype)
        out = (x + first * empty).flatten(2, 3)
    return out


def concat_channels(channels: int, position: bool = False, view_change: bool = False, grid: bool = False,
                    ray_bands: int = 0) -> int:
    """Model input channels of channel conditioning for `channels` latent channels (+ 2 position channels,
    + `channels` for the fixed-view video's change, + 2 grid channels, + 4 per ray band)."""
    return (2 * channels + 1 + (2 if position else 0) + (channels if view_change else 0) + (2 if grid else 0)
            + 4 * ray_bands)


RAY_FAR = 8.0  # world units: where a ray that never meets the plane (sky) is read


def ray_channels(cameras, h: int, w: int, bands: int, height: float) -> torch.Tensor:
    """[V, 4 * bands, h, w]: where each latent pixel's camera ray meets the horizontal plane `height`
    above the ground (OpenCV world, up = -y, ground y = 0), as sin / cos of its x and z at `bands`
    octaves (periods 4, 2, 1, ... world units). Two tokens of different views whose rays meet that
    plane at one point show one place of the stage, so attention finds a view's counterpart of view 0's
    moving object by a plain dot product of these features (the objects of the motion scenes stand
    about that high). The camera enters as input channels only: no attention weights."""
    cams = cameras.resized(w, h)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                            indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)                              # [h, w, 3]
    dirs = pix @ torch.linalg.inv(cams.Ks.float()).transpose(-1, -2)[:, None]          # [V, h, w, 3] camera
    c2w = cams.camtoworlds.float()
    dirs = dirs @ c2w[:, None, :3, :3].transpose(-1, -2)                              # world
    origin = c2w[:, None, None, :3, 3]
    dy = dirs[..., 1]
    lam = (-height - origin[..., 1]) / torch.where(dy.abs() > 1e-6, dy, torch.full_like(dy, 1e-6))
    length = dirs.norm(dim=-1)
    lam = torch.where((lam > 0) & (lam * length < RAY_FAR), lam, RAY_FAR / length)
    hit = origin + lam[..., None] * dirs
    feats = []
    for i in range(bands):
        omega = math.pi / 2 * 2 ** i
        for coord in (hit[..., 0], hit[..., 2]):
            feats += [torch.sin(omega * coord), torch.cos(omega * coord)]
    return torch.stack(feats, 1)


def fixed_view_change(reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, C, V*T, h, w]: in every view's cell at time t, how the fixed-view video (view 0) changed
    from t = 0 to t; zeros unless view 0's whole video and its t = 0 frame are given. The row broadcast
    tells a token its own view at t = 0; this tells it, at its own pixel, how the given view moved at
    its time. Where that motion lands in the other views is still the attention's to find."""
    views, frames = mask.shape
    if not bool(mask[0].all()):
        return torch.zeros_like(reference)
    col = reference.unflatten(2, (views, frames))[:, :, 0]                  # [B, C, T, h, w]
    change = col - col[:, :, :1]
    return change[:, :, None].expand(-1, -1, views, -1, -1, -1).flatten(2, 3)


def position_channels(frames: int, h: int, w: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[1, 2, frames, h, w]: the latent pixel's x and y in [-1, 1], the same in every frame and view.
    Wan's RoPE is relative only; these tell a from-scratch model where in the image a token sits, which
    a fixed camera rig's view-to-view correspondence depends on (no new attention weights)."""
    ys = torch.linspace(-1, 1, h, dtype=dtype, device=device)
    xs = torch.linspace(-1, 1, w, dtype=dtype, device=device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))            # [2, h, w]: x, y
    return grid[None, :, None].expand(1, 2, frames, h, w)


def grid_channels(views: int, frames: int, h: int, w: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[1, 2, views * frames, h, w]: the cell's view and time index, each spread over [-1, 1]. RoPE gives
    only the offset between two tokens, so without these a token of view 2 cannot tell itself from one
    of view 1, and where view 0's content lands in its own image depends on which view it is (a fixed
    rig's view-to-view correspondence). Inputs only: no attention weights."""
    v = torch.linspace(-1, 1, views, dtype=dtype, device=device) if views > 1 else torch.zeros(1, dtype=dtype,
                                                                                            device=device)
    t = torch.linspace(-1, 1, frames, dtype=dtype, device=device) if frames > 1 else torch.zeros(1, dtype=dtype,
                                                                                              device=device)
    vt = torch.stack(torch.meshgrid(v, t, indexing="ij")).reshape(2, views * frames)   # [2, V*T]
    return vt[None, :, :, None, None].expand(1, 2, views * frames, h, w)


def concat_input(x: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, position: bool = False,
                 view_change: bool = False, grid: bool = False, rays: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C, V*T, h, w] noisy latents -> [B, 2C + 1 (+ 2) (+ C) (+ 2), V*T, h, w]: + references (broadcast
    over each view's time from its t = 0 cell) + a flag channel, 1 on conditioned cells (+ position
    channels) (+ the fixed-view video's change, `fixed_view_change`) (+ the cell's view and time,
    `grid_channels`) (+ each view's `ray_channels` [V, R, h, w], the same at every time)."""
    B, _, F_, h, w = x.shape
    ref = reference_term(reference.to(x.dtype), mask, broadcast=True)
    ref = ref.expand(B, -1, -1, -1, -1) if ref.shape[0] == 1 else ref
    flag = mask.reshape(1, 1, F_, 1, 1).to(x.dtype).expand(B, 1, F_, h, w)
    parts = [x, ref, flag]
    if position:
        parts.append(position_channels(F_, h, w, x.dtype, x.device).expand(B, -1, -1, -1, -1))
    if view_change:
        change = fixed_view_change(reference.to(x.dtype), mask)
        parts.append(change.expand(B, -1, -1, -1, -1) if change.shape[0] == 1 else change)
    if grid:
        parts.append(grid_channels(*mask.shape, h, w, x.dtype, x.device).expand(B, -1, -1, -1, -1))
    if rays is not None:
        frames = mask.shape[1]
        r = rays.to(x.device, x.dtype).transpose(0, 1).repeat_interleave(frames, dim=1)   # [R, V*T, h, w]
        parts.append(r[None].expand(B, -1, -1, -1, -1))
    return torch.cat(parts, dim=1)


def frame_mask(mask: torch.Tensor) -> torch.Tensor:
    """[V, T] cell mask -> [1, 1, V*T, 1, 1] float mask broadcastable over latents."""
    return mask.reshape(1, 1, -1, 1, 1).float()


def replace_clean(x: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Latents with conditioned cells set to the clean reference, bit-exactly."""
    return torch.where(mask.reshape(1, 1, -1, 1, 1), reference.to(x.dtype), x)


def token_timesteps(mask: torch.Tensor, timestep: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Per-token timesteps [B, V*T*S]: 0 on conditioned cells, `timestep` [B] elsewhere."""
    keep = (~mask.reshape(-1)).to(timestep.dtype).repeat_interleave(tokens_per_frame)
    return timestep[:, None] * keep[None, :]


class ConditionedPatchEmbedding(nn.Conv3d):
    """The model's patch embedding (same Parameters, same state-dict keys) plus the reference term."""

    def __init__(self, base: nn.Conv3d):
        nn.Module.__init__(self)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode", "transposed", "output_padding", "_reversed_padding_repeated_twice"):
            setattr(self, name, getattr(base, name))
        self.weight, self.bias = base.weight, base.bias
        self.reference: torch.Tensor | None = None  # [B, C, F, H, W], zeros outside conditioned cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.reference is None:
            return out
        ref = self.reference.to(dtype=x.dtype, device=x.device)
        if ref.shape[1:] != x.shape[1:]:
            raise ValueError(f"reference latents {tuple(ref.shape)} do not match the input {tuple(x.shape)}")
        if ref.shape[0] != x.shape[0]:
            ref = ref.expand(x.shape[0], *ref.shape[1:])
        return out + F.conv3d(ref, self.weight, None, self.stride)


def install_patch_conditioning(model: nn.Module) -> ConditionedPatchEmbedding:
    """Swap model.patch_embedding for the conditioned version (idempotent; weights shared)."""
    if not isinstance(model.patch_embedding, ConditionedPatchEmbedding):
        model.patch_embedding = ConditionedPatchEmbedding(model.patch_embedding)
    return model.patch_embedding


def set_reference(model: nn.Module, reference: torch.Tensor | None) -> None:
    """Reference latents (zeros elsewhere) for the next forward passes; None switches the term off."""
    if isinstance(model.patch_embedding, ConditionedPatchEmbedding):
        model.patch_embedding.reference = reference
    elif reference is not None:
        raise RuntimeError("patch-embedding conditioning is not installed on this model")


# ---------------------------------------------------------------- hosts that run the network themselves

@dataclass(frozen=True)
class ReferenceConditioning:
    """How a trained model takes its reference frames, for a host that runs the network itself (ComfyUI
    through the pack) and hands over the noisy latents, the reference latents and the cell mask: the
    model input and timesteps the trainer and `generate_4d` feed.

    * clean-latent replacement always: conditioned cells hold the clean reference;
    * `patch_embed`: the reference term is added to the input instead of to the patch embedding's output.
      The patch embedding is a linear convolution whose stride is its kernel and the reference term is
      embedded without bias, so conv(x) + conv_nobias(r) = conv(x + r): the same network function (to
      float rounding) with no hook on the embedding itself;
    * `concat`: the input channels of `concat_input` (ray channels need cameras: not here);
    * `per_token_timestep`: timestep 0 on conditioned cells, given per latent frame ([B, V*T]; a frame's
      tokens share it, as `token_timesteps` gives them).
    """
    patch_embed: bool = False
    concat: bool = False
    position: bool = False
    view_change: bool = False
    grid: bool = False
    per_token_timestep: bool = False

    @classmethod
    def of(cls, video_config) -> "ReferenceConditioning":
        """From a VideoModelConfig; ray channels are refused (they read the views' cameras)."""
        if video_config.concat_reference and video_config.ray_bands:
            raise ValueError(f"this model reads the views' cameras ({video_config.ray_bands} ray bands in its "
                             f"input channels); only the Fuse4D sampler gives it cameras")
        concat = bool(video_config.concat_reference)
        return cls(patch_embed=bool(video_config.patch_embed_conditioning), concat=concat,
                   position=concat and bool(video_config.position_channels),
                   view_change=concat and bool(video_config.view_change_channels),
                   grid=concat and bool(video_config.grid_channels),
                   per_token_timestep=bool(video_config.per_token_timestep))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReferenceConditioning":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown reference conditioning settings {unknown}")
        return cls(**{k: bool(v) for k, v in d.items()})

    def in_channels(self, channels: int) -> int:
        """Model input channels for `channels` latent channels."""
        return concat_channels(channels, self.position, self.view_change, self.grid) if self.concat else channels

    def model_input(self, x: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Noisy latents [B, C, V*T, h, w] + reference latents ([B or 1, C, V*T, h, w]; only conditioned
        cells are read) + cell mask [V, T] -> the model input (C or `in_channels(C)` channels)."""
        if self.patch_embed and self.concat:
            raise ValueError("patch-embedding and channel conditioning together: no Fuse4D model trains so")
        if reference.shape[1:] != x.shape[1:] or reference.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"reference latents {tuple(reference.shape)} do not match the latents {tuple(x.shape)}")
        if mask.numel() != x.shape[2]:
            raise ValueError(f"a cell mask of {mask.numel()} cells for {x.shape[2]} latent frames")
        reference = reference.to(x.device, x.dtype)
        x = replace_clean(x, reference, mask)
        if self.concat:
            return concat_input(x, reference, mask, self.position, self.view_change, self.grid)
        if self.patch_embed:
            x = x + reference_term(reference, mask)
        return x

    def timesteps(self, timestep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B] timesteps -> [B] (as given) or, with per-token timesteps, [B, V*T]: 0 on conditioned cells."""
        if not self.per_token_timestep or not bool(mask.any()):
            return timestep
        keep = (~mask.reshape(-1)).to(device=timestep.device, dtype=timestep.dtype)
        return timestep[:, None] * keep[None, :]


def cells_from_noise_mask(noise_mask: torch.Tensor, views: int) -> torch.Tensor:
    """The [V, T] cell mask of an inpainting-style mask [B, 1 or C, V*T, h, w] (1 = to generate, 0 = known,
    what samplers keep): a cell is conditioned when its whole latent frame is known. A frame known only in
    part, or batch rows that disagree, cannot be given to a Fuse4D model: ValueError."""
    if noise_mask.ndim != 5:
        raise ValueError(f"a noise mask [B, C, frames, h, w] was expected; got {tuple(noise_mask.shape)}")
    frames = noise_mask.shape[2]
    if views < 1 or frames % views:
        raise ValueError(f"the noise mask has {frames} latent frames, not a multiple of views={views}")
    m = noise_mask.detach().float().transpose(1, 2).flatten(2)           # [B, F, C*h*w]
    known, unknown = m.amax(dim=2) <= 1e-6, m.amin(dim=2) >= 1 - 1e-6
    partial = ~(known | unknown)
    if bool(partial.any()):
        frame = int(partial.any(dim=0).nonzero()[0])
        raise ValueError(f"latent frame {frame} (view {frame // (frames // views)}) is known only in part (noise "
                         f"mask values {float(m[:, frame].amin()):.3g}..{float(m[:, frame].amax()):.3g}): a "
                         f"Fuse4D model takes reference frames as whole latent frames (4D Reference Frames)")
    if not bool((known == known[:1]).all()):
        raise ValueError("the batch's noise masks differ in which frames are known: one reference layout per batch")
    return known[0].reshape(views, frames // views).to(noise_mask.device)
