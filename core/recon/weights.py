# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading VGGT checkpoints (facebook/VGGT-1B, VGGT-1B-Commercial, or ours) by their own key names.

A published `model.pt` is converted once to safetensors with `torch.load(weights_only=True)`; nothing
else is ever unpickled. Checkpoint keys we have no module for (the track head) are reported, never
dropped silently; a file that does not fit raises with the missing, unexpected and mis-shaped keys."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..weights_file import CONVERT_HINT, WeightsFileError, check_safetensors, convert_to_safetensors

log = logging.getLogger(__name__)

# modules of VGGT-1B we deliberately do not build
UNUSED_PREFIXES = ("track_head.",)
# our additions: a VGGT checkpoint does not have them; they keep their (identity / analytic) init
ADDED_PREFIXES = ("aggregator.temporal_blocks.", "gaussian_head.")


class WeightsError(WeightsFileError):
    pass


@dataclass
class LoadReport:
    path: str
    loaded: int = 0
    unused: list[str] = field(default_factory=list)        # known, deliberately not built (track head)
    added_kept_init: list[str] = field(default_factory=list)  # paper additions absent from the file

    def summary(self) -> str:
        return (f"{self.path}: loaded {self.loaded} tensors; {len(self.unused)} unused checkpoint keys "
                f"(track head); {len(self.added_kept_init)} added parameters keep their initialisation")


def _list(keys, n: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _check_path(path: Path) -> None:
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix in (".pt", ".pth", ".bin"):
        raise WeightsError(f"{path}: pickled checkpoints are not read directly; {CONVERT_HINT}")


def read_header(path: str | Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """(metadata, {key: shape}) of a safetensors file, without reading any tensor."""
    path = Path(path)
    _check_path(path)
    try:
        check_safetensors(path)  # a pickle renamed .safetensors, a lying header: refused here
    except WeightsFileError as exc:
        raise WeightsError(str(exc)) from None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc


def convert(src: str | Path, dst: str | Path) -> Path:
    """One-off conversion of a published VGGT model.pt (a bare state dict) to safetensors
    (what `fuse4d convert-weights` does)."""
    try:
        return convert_to_safetensors(src, dst)
    except WeightsFileError as exc:
        raise WeightsError(str(exc)) from None


def load_vggt_weights(model: torch.nn.Module, path: str | Path, strict_additions: bool = False) -> LoadReport:
    """Load a VGGT(-compatible) safetensors file into `model` (values cast to the model's dtype).
    Tensors are read one at a time, so loading VGGT-1B needs little memory beyond the model."""
    model = getattr(model, "module", model)
    _, state = read_header(path)                                   # key -> shape
    own = model.state_dict()
    unused = [k for k in state if k not in own and k.startswith(UNUSED_PREFIXES)]
    unexpected = [k for k in state if k not in own and not k.startswith(UNUSED_PREFIXES)]
    absent = [k for k in own if k not in state]
    added = [k for k in absent if k.startswith(ADDED_PREFIXES) and not strict_additions]
    missing = [k for k in absent if k not in added]
    misshaped = [f"{k} file {state[k]} vs model {tuple(own[k].shape)}"
                 for k in state if k in own and state[k] != tuple(own[k].shape)]
    if missing or unexpected or misshaped:
        parts = [f"{path}: does not fit this model"]
        if missing:
            parts.append(f"missing {len(missing)}: {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_list(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped {len(misshaped)}: {_list(misshaped)}")
        raise WeightsError("\n  ".join(parts))
    from safetensors import safe_open

    with torch.no_grad(), safe_open(str(path), framework="pt") as f:
        for k in state:
            if k in own:
                own[k].copy_(f.get_tensor(k))
    report = LoadReport(str(path), loaded=len(state) - len(unused), unused=sorted(unused),
                        added_kept_init=sorted(added))
    if unused:
        log.warning("%s: %d checkpoint keys are not used (%s)", path, len(unused), _list(unused, 3))
    return report


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    from ..io import atomic_output

    model = getattr(model, "module", model)
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path
