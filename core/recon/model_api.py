# SPDX-License-Identifier: GPL-3.0-or-later
"""The trainer's view of the reconstructor (VGGT4D): build it from a preset, split its parameters
into backbone / head / temporal groups, run it on one V x T sample, load weights. One adapter, so the
trainer does not depend on the model's internals."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..gaussians import Gaussians
from .config import VGGTConfig, preset
from .model import VGGT4D, parameter_group


FORMAT = "fuse4d-recon"   # safetensors metadata "format" of a Fuse4D reconstructor checkpoint


@dataclass
class Prediction:
    gaussians: list[Gaussians]              # per timestep, all views, first-camera frame
    pose_encoding: torch.Tensor             # [V, T, 9] (translation, quaternion xyzw, fov h, fov w)
    depth: torch.Tensor                     # [V, T, H, W]


def unwrap(model: torch.nn.Module) -> VGGT4D:
    return getattr(model, "module", model)


def build(name: str, camera_token_replacement: bool = True, temporal_attention: bool = True,
          overrides: dict | None = None) -> VGGT4D:
    """VGGT4D of preset `name` ('tiny', 'full') + config overrides + the two ablation switches."""
    cfg = preset(name, **{**(overrides or {}), "camera_token_replacement": camera_token_replacement,
                          "temporal_attention": temporal_attention})
    return VGGT4D(cfg)


def model_config(model: torch.nn.Module) -> dict:
    return {"architecture": "VGGT4D", **unwrap(model).cfg.to_dict()}


def save_reconstructor(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Weights (safetensors) with the model's config as JSON in the metadata, so that
    `load_reconstructor` needs nothing else."""
    from .weights import save_weights

    meta = {"format": FORMAT, "config": json.dumps(model_config(model)), **(metadata or {})}
    return save_weights(unwrap(model), path, meta)


def build_from_config(config: dict) -> VGGT4D:
    config = dict(config)
    arch = config.pop("architecture", "VGGT4D")
    if arch != "VGGT4D":
        raise ValueError(f"unknown reconstructor architecture {arch!r}")
    return VGGT4D(VGGTConfig.from_dict(config))


@torch.no_grad()
def init_from_scratch(model: torch.nn.Module, depth: float, fov: float) -> None:
    """Priors for a model trained without VGGT weights: the camera head starts at identity pose and
    field of view `fov` (radians) whatever its tokens, the depth head at `depth`. Without it a random
    camera head can start with its FoV ReLU'd to zero (no gradient) and renders miss their targets."""
    m = unwrap(model)
    if m.camera_head is not None:
        last = m.camera_head.pose_branch.fc2
        last.weight.mul_(0.01)
        # the head sums one delta per refinement iteration; each starts as bias
        prior = torch.tensor([0, 0, 0, 0, 0, 0, 1, fov, fov], dtype=last.bias.dtype)
        last.bias.copy_(prior / m.camera_head.iterations)
    if m.depth_head is not None:
        last = m.depth_head.scratch.output_conv2[2]
        last.weight.mul_(0.01)
        last.bias[0] = float(torch.log(torch.tensor(depth)))


def parameter_groups(model: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """The model's own split: 'head' (Gaussian head), 'temporal' (temporal layers), 'backbone' (the rest)."""
    groups: dict[str, list] = {"head": [], "temporal": [], "backbone": []}
    for name, p in unwrap(model).named_parameters():
        groups[parameter_group(name)].append((name, p))
    return groups


def predict(model: torch.nn.Module, images: torch.Tensor, analytic: bool = False) -> Prediction:
    """images [V, T, H, W, 3] in [0, 1] (H, W multiples of the patch) -> per-timestep Gaussians of
    all views, pose encodings and depth, through VGGT4D (`model` may be wrapped in DDP)."""
    grid = images.permute(0, 1, 4, 2, 3)[None]                       # [1, V, T, 3, H, W]
    heads = ("camera", "depth") if analytic else ("camera", "depth", "gaussian")
    out = model(grid, heads=heads)
    gaussians = unwrap(model).gaussians(grid, out, analytic=analytic)[0]
    return Prediction(gaussians, out["pose_enc"][0], out["depth"][0, ..., 0])


def load_weights(model: torch.nn.Module, path: str) -> None:
    from .weights import load_vggt_weights

    load_vggt_weights(unwrap(model), path)
