# SPDX-License-Identifier: GPL-3.0-or-later
"""Exponential moving average of trained weights: a tiny diffusion model trained for a few thousand
steps samples noticeably better from its EMA than from its last iterate."""
from __future__ import annotations

import torch


class EMA:
    """Shadow copies of the named parameters, updated after every optimizer step with the decay
    warmed up as min(decay, (1 + n) / (10 + n)) so early shadows are not stuck at the init."""

    def __init__(self, module: torch.nn.Module, names: list[str], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        wanted = set(names)
        self.params = {n: p for n, p in module.named_parameters() if n in wanted}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}
        self.decay, self.updates = float(decay), 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach(), 1.0 - d)
        self.updates += 1

    def full_state(self) -> dict[str, torch.Tensor]:
        """Plain CPU tensors (gathers sharded DTensors: a collective, call on every rank)."""
        out = {}
        for n, t in self.shadow.items():
            t = t.full_tensor() if _is_dtensor(t) else t
            out[n] = t.detach().cpu().contiguous()
        return out

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor], updates: int) -> None:
        for n, t in self.shadow.items():
            if n not in state:
                raise ValueError(f"EMA checkpoint lacks {n}")
            src = state[n]
            if _is_dtensor(t):  # FSDP2: shard the full tensor the way the parameter is sharded
                from torch.distributed.tensor import distribute_tensor

                t.copy_(distribute_tensor(src.to(device=t.device, dtype=t.dtype), t.device_mesh, t.placements))
            else:
                t.copy_(src.to(device=t.device, dtype=t.dtype))
        self.updates = int(updates)


def _is_dtensor(t: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return False
    return isinstance(t, DTensor)
