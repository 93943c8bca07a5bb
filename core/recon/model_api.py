# SPDX-License-Identifier: GPL-3.0-or-later
"""The trainer's view of a reconstructor: build it from a preset, split its parameters into
backbone / head / temporal groups, run it on a V x T grid, load weights. One adapter, so the trainer
does not depend on a model's internals."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..gaussians import Gaussians


@dataclass
class Prediction:
    gaussians: list[Gaussians]              # per timestep, all views, first-camera frame
    pose_encoding: torch.Tensor | None      # [V, T, 9] (translation, quaternion xyzw, fov h, fov w)
    depth: torch.Tensor | None              # [V, T, H, W]


def build(preset: str, camera_token_replacement: bool = True, temporal_attention: bool = True,
          overrides: dict | None = None) -> torch.nn.Module:
    from .train_standin import StandInConfig, StandInReconstructor

    if preset not in ("tiny", "standin"):
        raise ValueError(f"model preset {preset!r} is not available in this build (tiny)")
    cfg = StandInConfig(camera_token_replacement=camera_token_replacement, temporal_attention=temporal_attention)
    cfg = dataclasses.replace(cfg, **(overrides or {}))
    return StandInReconstructor(cfg)


def model_config(model: torch.nn.Module) -> dict:
    model = getattr(model, "module", model)
    return {"architecture": type(model).__name__, **dataclasses.asdict(model.cfg)}


def build_from_config(config: dict) -> torch.nn.Module:
    from .train_standin import StandInConfig, StandInReconstructor

    config = dict(config)
    arch = config.pop("architecture", "StandInReconstructor")
    if arch != "StandInReconstructor":
        raise ValueError(f"unknown reconstructor architecture {arch!r}")
    return StandInReconstructor(StandInConfig(**config))


def parameter_groups(model: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """'head' = Gaussian head (+ the dense decoder it reads), 'temporal' = temporal layers,
    'backbone' = everything else (patch embed, frame/global blocks, camera and depth heads)."""
    model = getattr(model, "module", model)
    groups: dict[str, list] = {"head": [], "temporal": [], "backbone": []}
    for name, p in model.named_parameters():
        if name.startswith("gaussian_head."):
            groups["head"].append((name, p))
        elif name.startswith("temporal"):
            groups["temporal"].append((name, p))
        else:
            groups["backbone"].append((name, p))
    return groups


def predict(model: torch.nn.Module, images: torch.Tensor, analytic: bool = False) -> Prediction:
    """images [V, T, H, W, 3] in [0, 1] -> per-timestep Gaussians + cameras + depth."""
    from .train_standin import gaussians_from_outputs

    out = model(images)
    return Prediction(gaussians_from_outputs(images, out, analytic=analytic), out["pose_encoding"], out["depth"])


def load_weights(model: torch.nn.Module, path: str) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    missing, unexpected = getattr(model, "module", model).load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
