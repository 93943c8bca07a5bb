# SPDX-License-Identifier: GPL-3.0-or-later
"""Attention forward that also returns the log-sum-exp, and the matching backward.

Both take [batch, heads, L, D] tensors with arbitrary batch/head/sequence strides (the merge passes
overlapping strided views of its key buffers). The backward is given the *final* output and LSE, so
calling it on a subset of keys yields that subset's exact share of the gradient:
dS = P * (dP - rowsum(dO * O)), P = exp(S*scale - lse).

- "cpu_flash": the fused CPU flash-attention ops of ATen (fast, never materialises scores).
- "math": chunked matmuls on any device (memory bounded by the chunk size).
"""
from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 24  # scores per chunk in the math kernel (64 MB in fp32)


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """LSEs are kept in the accumulation type (what the CPU flash kernel uses)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def default_kernel(device: torch.device) -> str:
    return "cpu_flash" if device.type == "cpu" else "math"


def attention_with_lse(q, k, v, scale: float, kernel: str):
    """Return (out [B,H,L,D], lse [B,H,L] in lse_dtype)."""
    if kernel == "cpu_flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
        return out, lse.to(lse_dtype(q.dtype))
    if kernel == "math":
        return _math_forward(q, k, v, scale)
    raise ValueError(f"unknown attention kernel {kernel!r}; use 'cpu_flash' or 'math'")


def attention_backward(dout, q, k, v, out, lse, scale: float, kernel: str):
    """Gradients (dq, dk, dv) of the keys k, v given the merged out and lse (all keys)."""
    if kernel == "cpu_flash":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse.contiguous(), 0.0, False, scale=scale)
    if kernel == "math":
        return _math_backward(dout, q, k, v, out, lse, scale)
    raise ValueError(f"unknown attention kernel {kernel!r}; use 'cpu_flash' or 'math'")


def _row_chunk(q: torch.Tensor, k: torch.Tensor) -> int:
    per_row = q.shape[0] * q.shape[1] * k.shape[2]
    return max(1, min(q.shape[2], _CHUNK_ELEMENTS // max(per_row, 1)))


def _math_forward(q, k, v, scale):
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    kt, vf = k.to(acc).transpose(-1, -2), v.to(acc)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=lse_dtype(q.dtype), device=q.device)
    step = _row_chunk(q, k)
    for i in range(0, q.shape[2], step):
        s = (q[:, :, i:i + step].to(acc) @ kt) * scale
        m = torch.logsumexp(s, dim=-1)
        out[:, :, i:i + step] = (torch.exp(s - m[..., None]) @ vf).to(q.dtype)
        lse[:, :, i:i + step] = m
    return out, lse


def _math_backward(dout, q, k, v, out, lse, scale):
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    kf, vf = k.to(acc), v.to(acc)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.zeros(k.shape, dtype=acc, device=k.device)
    dv = torch.zeros(v.shape, dtype=acc, device=v.device)
    delta = (dout.to(acc) * out.to(acc)).sum(-1)  # rowsum(dO * O) with the merged O
    step = _row_chunk(q, k)
    for i in range(0, q.shape[2], step):
        qc, doc = q[:, :, i:i + step].to(acc), dout[:, :, i:i + step].to(acc)
        p = torch.exp((qc @ kf.transpose(-1, -2)) * scale - lse[:, :, i:i + step, None].to(acc))
        ds = p * (doc @ vf.transpose(-1, -2) - delta[:, :, i:i + step, None])
        dq[:, :, i:i + step] = ((ds @ kf) * scale).to(q.dtype)
        dk += (ds.transpose(-1, -2) @ qc) * scale
        dv += p.transpose(-1, -2) @ doc
    return dq, dk.to(k.dtype), dv.to(v.dtype)
