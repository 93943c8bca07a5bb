# SPDX-License-Identifier: GPL-3.0-or-later
"""Trainer checkpoints as safetensors: model weights and the optimizer state flattened into one
tensor file, plus a JSON beside it (step, stage, config, optimizer hyper-parameters)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CKPT_RE = re.compile(r"ckpt_(\d{7})\.safetensors")


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> ({'optim.<param index>.<name>': tensor}, json-able param groups)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of `flatten_optimizer`: a state dict for `optimizer.load_state_dict`."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(folder: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    info: dict, keep: int = 2) -> Path:
    """ckpt_<step>.safetensors + .json in `folder`; older checkpoints beyond `keep` are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"step": step, **info}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    path = folder / f"ckpt_{step:07d}.safetensors"
    _atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "fuse4d-recon-train"}))
    # The JSON last: a checkpoint counts once its JSON exists.
    _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta, indent=1)))
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints (tensor file + JSON) in step order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CKPT_RE.fullmatch(p.name) and p.with_suffix(".json").is_file()]
    return sorted(found, key=lambda p: int(CKPT_RE.fullmatch(p.name).group(1)))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model state dict, flattened optimizer tensors, json meta)."""
    path = Path(path)
    tensors = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    return model_sd, optim, meta
