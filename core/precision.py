# SPDX-License-Identifier: GPL-3.0-or-later
"""Half-precision choice per device: bf16 on Ampere and newer, fp16 before (T4, V100), none on the CPU.

Pre-Ampere GPUs have no bf16 tensor cores: bf16 there also drops attention to the O(L^2) math kernel,
so inference runs in fp16 (what the official VGGT does there)."""
from __future__ import annotations

import torch


def half_dtype(device: torch.device | str) -> torch.dtype | None:
    """The 16-bit dtype to compute in on `device`, or None (full precision: CPU and others)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """Weights' dtype for sampling on `device`: the half dtype on CUDA, fp32 elsewhere."""
    return half_dtype(device) or torch.float32
