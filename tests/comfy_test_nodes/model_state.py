# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only: describe everything a patch could leave on a MODEL, so a test can compare the base
model after Fuse4D runs (and interrupts) with the same model before any of them."""
from __future__ import annotations

import hashlib

import torch


def _describe(value):
    """Keys and the names of callables, recursively: what a leftover override or wrapper would show."""
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return type(value).__name__


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_state(patcher) -> dict:
    diffusion_model = patcher.model.diffusion_model
    # functions set on module instances (monkeypatched forwards and the like)
    instance_callables = sorted(f"{mod_name}.{attr}" for mod_name, mod in diffusion_model.named_modules()
                                for attr, v in vars(mod).items()
                                if callable(v) and not isinstance(v, torch.nn.Module))
    return {
        "model_options": _describe(patcher.model_options),
        "wrappers": _describe(patcher.wrappers),
        "callbacks": _describe(patcher.callbacks),
        "weight_patches": len(patcher.patches),
        "object_patches": sorted(patcher.object_patches),
        "instance_callables": instance_callables,
        "weights_sha256": _weights_digest(diffusion_model),
    }
