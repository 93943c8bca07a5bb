# SPDX-License-Identifier: GPL-3.0-or-later
"""Attention forward that also returns the log-sum-exp, and the matching backward.

Both take [batch, heads, L, D] tensors with arbitrary batch/head/sequence strides (the merge passes
overlapping strided views of its key buffers). The backward is given the *final* output and LSE, so
calling it on a subset of keys yields that subset's exact share of the gradient:
dS = P * (dP - rowsum(dO * O)), P = exp(S*scale - lse).

- "cpu_flash": the fused CPU flash-attention ops of ATen (fast, never materialises scores).
- "cuda_flash": ATen's CUDA flash-attention ops (fp16/bf16, head dim <= 256, multiple of 8): they
  return the LSE and take it back in the backward exactly like the CPU op.
- "cuda_efficient": ATen's CUDA memory-efficient ops (also fp32); their LSE is padded to 32 rows.
- "math": chunked matmuls on any device (memory bounded by the chunk size).
On CUDA the default kernel is checked once per (device, dtype) on a small case against "math"; a
kernel that fails (or raises later, e.g. for an unsupported head dim) falls back to "math" with one
logged warning, so a first run never stops on a missing kernel.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)
CUDA_KERNELS = ("cuda_flash", "cuda_efficient")
_CHUNK_ELEMENTS = 1 << 24  # scores per chunk in the math kernel (64 MB in fp32)


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """LSEs are kept in the accumulation type (what the CPU flash kernel uses)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def default_kernel(device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """cpu_flash on the CPU; on CUDA the flash (fp16/bf16) or efficient (fp32) op once it has passed its
    check on this device; math otherwise (and for float64)."""
    if device.type == "cpu":
        return "cpu_flash"
    if device.type == "cuda" and dtype != torch.float64:
        name = "cuda_flash" if dtype in (torch.float16, torch.bfloat16) else "cuda_efficient"
        if kernel_works(name, device, dtype):
            return name
    return "math"


_CHECKED: dict = {}      # (kernel, device, dtype) -> bool
_WARNED: set = set()
_PLACEHOLDERS: dict = {}  # (kernel, device) -> rng tensors as the forward op returns them (unused: no dropout)


def _fallback(kernel: str, error: Exception) -> None:
    if isinstance(error, torch.OutOfMemoryError):
        raise error
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if (kernel, reason) not in _WARNED:
        _WARNED.add((kernel, reason))
        log.warning("fused attention: the %s kernel failed (%s); using the exact 'math' kernel instead", kernel,
                    reason)


def kernel_works(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Run `kernel` once on a small case (values, LSE and the backward of a key subset) against math."""
    key = (kernel, str(device), dtype)
    if key not in _CHECKED:
        try:
            g = torch.Generator(device=device).manual_seed(0)
            q, k, v, dout = (torch.randn(2, 3, 72, 64, generator=g, device=device).to(dtype) for _ in range(4))
            out, lse = _cuda_forward(q, k, v, 0.125, kernel)
            ref_out, ref_lse = _math_forward(q, k, v, 0.125)
            grads = _cuda_backward(dout, q, k[:, :, :40], v[:, :, :40], out, lse, 0.125, kernel)
            ref_grads = _math_backward(dout, q, k[:, :, :40], v[:, :, :40], ref_out, ref_lse, 0.125)
            tol = 1e-3 if dtype == torch.float32 else 3e-2
            pairs = [(out, ref_out), (lse, ref_lse)] + list(zip(grads, ref_grads))
            worst = max(float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)) for a, b in pairs)
            if worst > tol:
                raise RuntimeError(f"relative error {worst:.2g} against the math kernel exceeds {tol}")
            _CHECKED[key] = True
        except Exception as error:  # noqa: BLE001 - any failure means "do not use this kernel"
            _fallback(kernel, error)
            _CHECKED[key] = False
    return _CHECKED[key]


def _placeholders(kernel: str, device: torch.device):
    """The rng-state tensors the forward op returns without dropout, to hand back to its backward."""
    key = (kernel, str(device))
    if key not in _PLACEHOLDERS:
        x = torch.zeros(1, 1, 8, 64, dtype=torch.float16, device=device)
        if kernel == "cuda_flash":
            res = torch.ops.aten._scaled_dot_product_flash_attention(x, x, x, 0.0, False, False)
            _PLACEHOLDERS[key] = (res[6], res[7])
        else:
            res = torch.ops.aten._scaled_dot_product_efficient_attention(x, x, x, None, True, 0.0, False)
            _PLACEHOLDERS[key] = (res[2], res[3])
    return _PLACEHOLDERS[key]


def _cuda_forward(q, k, v, scale: float, kernel: str):
    L = q.shape[2]
    if kernel == "cuda_flash":
        res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
    else:
        res = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)
    return res[0], res[1][..., :L].float()


def _cuda_backward(dout, q, k, v, out, lse, scale: float, kernel: str):
    seed, offset = _placeholders(kernel, q.device)
    lse = lse.float()
    if kernel == "cuda_flash":
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            dout, q, k, v, out, lse.contiguous(), None, None, q.shape[2], k.shape[2], 0.0, False, seed, offset,
            scale=scale)
    rows = -(-q.shape[2] // 32) * 32  # the efficient op keeps its LSE padded to 32 rows
    padded = torch.zeros(*lse.shape[:-1], rows, dtype=torch.float32, device=lse.device)
    padded[..., :q.shape[2]] = lse
    dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
        dout, q, k, v, None, out, padded, seed, offset, 0.0, [True, True, True, False], False, scale=scale)
    return dq, dk, dv


def attention_with_lse(q, k, v, scale: float, kernel: str):
    """Return (out [B,H,L,D], lse [B,H,L] in lse_dtype)."""
    if kernel == "cpu_flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
        return out, lse.to(lse_dtype(q.dtype))
    if kernel in CUDA_KERNELS:
        try:
            return _cuda_forward(q, k, v, scale, kernel)
        except RuntimeError as error:
            _fallback(kernel, error)
            kernel = "math"
    if kernel == "math":
        return _math_forward(q, k, v, scale)
    raise ValueError(f"unknown attention kernel {kernel!r}; use 'cpu_flash', 'cuda_flash', 'cuda_efficient' "
                     "or 'math'")


def attention_backward(dout, q, k, v, out, lse, scale: float, kernel: str):
    """Gradients (dq, dk, dv) of the keys k, v given the merged out and lse (all keys)."""
    if kernel == "cpu_flash":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse.contiguous(), 0.0, False, scale=scale)
    if kernel in CUDA_KERNELS:
        try:
            return _cuda_backward(dout, q, k, v, out, lse, scale, kernel)
        except RuntimeError as error:
            _fallback(kernel, error)
            kernel = "math"
    if kernel == "math":
        return _math_backward(dout, q, k, v, out, lse, scale)
    raise ValueError(f"unknown attention kernel {kernel!r}; use 'cpu_flash', 'cuda_flash', 'cuda_efficient' "
                     "or 'math'")


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
