# SPDX-License-Identifier: GPL-3.0-or-later
"""Reference-frame conditioning of a V x T latent grid laid out [B, C, V*T, h, w] (view-major).

Two mechanisms, both used identically by the trainer and the sampler:
  * clean-latent replacement (training-free): cells with a reference hold the clean reference latent
    at every step (and, optionally, timestep 0 for their tokens, as Wan 2.2 TI2V does);
  * additive patch-embedding conditioning (the paper's, needs a fine-tuned checkpoint): the patch
    embedding of the reference latents (zeros in other cells, no bias) is added to the noisy latents'
    patch embedding. It reuses the model's own patch_embedding weights: no new weights.
"""
from __future__ import annotations

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
