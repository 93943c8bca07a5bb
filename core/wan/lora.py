# SPDX-License-Identifier: GPL-3.0-or-later
"""Low-rank adapters on the self-attention projections (q, k, v, out) of a Wan transformer."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

SELF_ATTN_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / rank) * B(A(x)); B starts at zero so the adapted model equals the base."""

    def __init__(self, base: nn.Linear, rank: int = 16, alpha: float | None = None):
        super().__init__()
        self.base = base
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        self.lora_A = nn.Parameter(torch.empty(self.rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        base.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t().to(x.dtype) @ self.lora_B.t().to(x.dtype)) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        lin.weight.copy_(self.base.weight + self.scale * (self.lora_B @ self.lora_A).to(self.base.weight.dtype))
        if self.base.bias is not None:
            lin.bias.copy_(self.base.bias)
        return lin


def _projections(model: nn.Module):
    for block in model.blocks:
        attn = block.attn1
        yield attn, "to_q", attn.to_q
        yield attn, "to_k", attn.to_k
        yield attn, "to_v", attn.to_v
        yield attn.to_out, 0, attn.to_out[0]


def _set(parent, key, module):
    if isinstance(key, int):
        parent[key] = module
    else:
        setattr(parent, key, module)


def add_lora(model: nn.Module, rank: int = 16, alpha: float | None = None) -> list[str]:
    """Wrap every self-attention projection with a LoRALinear; freezes the whole model except the adapters.
    Returns the names of the trainable parameters."""
    model.requires_grad_(False)
    for parent, key, lin in list(_projections(model)):
        if not isinstance(lin, LoRALinear):
            _set(parent, key, LoRALinear(lin, rank, alpha))
    return [n for n, p in model.named_parameters() if p.requires_grad]


def merge_lora(model: nn.Module) -> None:
    """Fold adapters into plain Linear layers (state-dict keys back to the base layout)."""
    for parent, key, lin in list(_projections(model)):
        if isinstance(lin, LoRALinear):
            _set(parent, key, lin.merged())


def freeze_all_but_self_attention(model: nn.Module) -> list[str]:
    """Self-attention-only fine-tuning (the paper): q, k, v, out of every attn1 train, all else frozen."""
    model.requires_grad_(False)
    for _, _, lin in _projections(model):
        lin.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]
