# SPDX-License-Identifier: GPL-3.0-or-later
"""Exact fused view-time attention as two dense attentions over disjoint key sets, merged by LSE.

For a query at (view v, time t) the allowed keys split into
  (a) same view, every time:          one dense attention per view over its T*S tokens;
  (b) same time, the OTHER V-1 views: one dense attention per (v, t) over (V-1)*S tokens.
out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b, lse = logaddexp(lse_a, lse_b).

Work is V*T*S^2*(T + V - 1) instead of (V*T*S)^2, and nothing of size N^2 is ever stored.
Set (b) needs no per-view gather: keys are copied once in time-major order with the first V-1 views
repeated after the last ([.., T, 2V-1, S, D]); the keys of views v+1 .. v+V-1 (mod V) are then the
contiguous slice starting at view v+1, so all V key sets are one overlapping strided view and (b) is a
single kernel call. The backward (an autograd.Function: the CPU flash op's LSE is not differentiable)
feeds the merged out and lse to the attention backward of each key set; each returns its exact share.
Set (b)'s backward runs per query view and chunk of time steps to bound memory (see merge_backward).
"""
from __future__ import annotations

import torch

from .kernels import CUDA_KERNELS, attention_backward, attention_with_lse, default_kernel
from .layout import check_layout


def _same_view(x: torch.Tensor, V: int, T: int, S: int) -> torch.Tensor:
    """[B, H, N, D] (contiguous) -> [B*H*V, 1, T*S, D]: one sequence per (batch, head, view), a view.

    One "head" per batch entry makes the CPU kernel's outputs and gradients (allocated [B, L, H, D])
    land directly in our contiguous layout, so no copy is needed to bring them back."""
    B, H, _, D = x.shape
    return x.view(B * H * V, 1, T * S, D)


def _time_major(x: torch.Tensor, V: int, T: int, S: int) -> torch.Tensor:
    """[B, H, N, ...] -> contiguous [B, H, T, V, S, ...] (one copy)."""
    B, H = x.shape[:2]
    return x.reshape(B, H, V, T, S, *x.shape[3:]).transpose(2, 3).contiguous()


def _queries_b(x_tm: torch.Tensor) -> torch.Tensor:
    """Time-major [B, H, T, V, S, D] -> [V, B*H*T, S, D] (a view): batch = query view."""
    B, H, T, V, S, D = x_tm.shape
    return x_tm.view(B * H * T, V, S, D).transpose(0, 1)


def _keys_b(x: torch.Tensor, V: int, T: int, S: int) -> torch.Tensor:
    """[B, H, N, D] -> overlapping view [V, B*H*T, (V-1)*S, D]: row v holds views v+1..v+V-1 at each t."""
    B, H, _, D = x.shape
    tm = x.view(B, H, V, T, S, D).transpose(2, 3)
    wrapped = torch.empty(B, H, T, 2 * V - 1, S, D, dtype=x.dtype, device=x.device)
    wrapped[:, :, :, :V] = tm
    wrapped[:, :, :, V:] = wrapped[:, :, :, :V - 1]  # contiguous source: a cheap second copy
    return wrapped.as_strided((V, B * H * T, (V - 1) * S, D), (S * D, (2 * V - 1) * S * D, D, 1), S * D)


def _from_b(x: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """[V, B*H*T, S, ...] -> view [B, H, V, T, S, ...]."""
    x = x.unflatten(1, (B, H, T))
    return x.permute(1, 2, 0, 3, *range(4, x.dim()))


def merge_forward(q, k, v, V: int, T: int, scale: float, kernel: str):
    """Return merged out [B, H, N, D] (contiguous) and lse [B, H, V, T, S]."""
    B, H, N, D = q.shape
    S = N // (V * T)
    out_a, lse_a = attention_with_lse(_same_view(q, V, T, S), _same_view(k, V, T, S), _same_view(v, V, T, S),
                                      scale, kernel)
    out_a = out_a.reshape(B, H, V, T, S, D)
    lse_a = lse_a.reshape(B, H, V, T, S)
    if kernel in CUDA_KERNELS:
        out_b, lse_b = _set_b_per_view(q, k, v, V, T, S, scale, kernel)
    else:
        out_b, lse_b = attention_with_lse(_queries_b(_time_major(q, V, T, S)), _keys_b(k, V, T, S),
                                          _keys_b(v, V, T, S), scale, kernel)
        out_b, lse_b = _from_b(out_b, B, H, T), _from_b(lse_b, B, H, T)
    lse = torch.logaddexp(lse_a, lse_b)
    out = torch.empty(B, H, V, T, S, D, dtype=q.dtype, device=q.device)
    torch.mul(out_a, torch.exp(lse_a - lse).unsqueeze(-1).to(q.dtype), out=out)
    out.addcmul_(out_b, torch.exp(lse_b - lse).unsqueeze(-1).to(q.dtype))
    return out.view(B, H, N, D), lse.contiguous()


def _set_b_per_view(q, k, v, V: int, T: int, S: int, scale: float, kernel: str):
    """Set (b) one query view at a time with plain contiguous keys (the CUDA ops get the simple strides
    they are tested with; gathered keys stay ~k in size instead of (V-1)x): [B, H, V, T, S, ...]."""
    B, H, _, D = q.shape
    q6, k6, v6 = (x.view(B, H, V, T, S, D) for x in (q, k, v))
    out_b = torch.empty(B, H, V, T, S, D, dtype=q.dtype, device=q.device)
    lse_b = torch.empty(B, H, V, T, S, dtype=torch.float32, device=q.device)
    every = slice(None)
    for view in range(V):
        o, lse = attention_with_lse(q6[:, :, view].flatten(0, 1).contiguous(), _other_views(k6, view, every),
                                    _other_views(v6, view, every), scale, kernel)
        out_b[:, :, view] = o.reshape(B, H, T, S, D)
        lse_b[:, :, view] = lse.reshape(B, H, T, S)
    return out_b, lse_b


def _other_views(x6: torch.Tensor, view: int, times: slice) -> torch.Tensor:
    """[B, H, V, T, S, D] -> [B*H, t, (V-1)*S, D]: views view+1 .. view+V-1 (mod V) at each t (a copy)."""
    B, H, V, _, S, D = x6.shape
    x6 = x6[:, :, :, times]
    t = x6.shape[3]
    out = torch.empty(B, H, t, V - 1, S, D, dtype=x6.dtype, device=x6.device)
    out[:, :, :, :V - 1 - view] = x6[:, :, view + 1:].transpose(2, 3)
    out[:, :, :, V - 1 - view:] = x6[:, :, :view].transpose(2, 3)
    return out.view(B * H, t, (V - 1) * S, D)


def _add_other_views(acc6: torch.Tensor, g: torch.Tensor, view: int, times: slice) -> None:
    """Inverse of _other_views: add a [B*H, t, (V-1)*S, D] key gradient onto acc6 [B, H, V, T, S, D]."""
    B, H, V, _, S, D = acc6.shape
    acc6 = acc6[:, :, :, times]
    g = g.reshape(B, H, acc6.shape[3], V - 1, S, D).transpose(2, 3)
    acc6[:, :, view + 1:] += g[:, :, :V - 1 - view]
    acc6[:, :, :view] += g[:, :, V - 1 - view:]


def merge_backward(dout, q, k, v, out, lse, V: int, T: int, scale: float, kernel: str):
    """Exact gradients of q, k, v (contiguous [B, H, N, D]).

    Set (b) runs per query view and chunk of time steps: the kernel returns key gradients per key set,
    (V-1)x the size of the keys they belong to, so chunking keeps them (and the gathered keys) at about
    half of k each instead of (V-1)x."""
    B, H, N, D = q.shape
    S = N // (V * T)
    dq, dk, dv = attention_backward(
        _same_view(dout, V, T, S), _same_view(q, V, T, S), _same_view(k, V, T, S), _same_view(v, V, T, S),
        _same_view(out, V, T, S), lse.view(B * H * V, 1, T * S), scale, kernel)
    dq, dk, dv = (g.reshape(B, H, V, T, S, D) for g in (dq, dk, dv))  # views here: accumulate in place
    q6, k6, v6, out6, dout6 = (x.view(B, H, V, T, S, D) for x in (q, k, v, out, dout))
    # time steps per chunk: gathered keys of a chunk ~ half of k (fewer, larger kernel calls pay less
    # thread wake-up on a loaded machine; the memory bound stays far below the dense mask's)
    step = max(1, (T * V) // (2 * (V - 1)))
    for view in range(V):
        for t0 in range(0, T, step):
            times = slice(t0, min(T, t0 + step))

            def own(x6):  # the CUDA ops get plain contiguous inputs; the CPU ones take the view as is
                x = x6[:, :, view, times].flatten(0, 1)
                return x.contiguous() if kernel in CUDA_KERNELS else x

            dq_v, dk_o, dv_o = attention_backward(
                own(dout6), own(q6), _other_views(k6, view, times), _other_views(v6, view, times), own(out6),
                own(lse), scale, kernel)
            dq[:, :, view, times] += dq_v.reshape(B, H, -1, S, D)
            _add_other_views(dk, dk_o, view, times)
            _add_other_views(dv, dv_o, view, times)
    return dq.reshape(B, H, N, D), dk.reshape(B, H, N, D), dv.reshape(B, H, N, D)


class _MergeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, V: int, T: int, scale: float, kernel: str):
        out, lse = merge_forward(q, k, v, V, T, scale, kernel)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout = (V, T, scale, kernel)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        V, T, scale, kernel = ctx.layout
        dq, dk, dv = merge_backward(dout.contiguous(), q, k, v, out, lse, V, T, scale, kernel)
        return dq, dk, dv, None, None, None, None


def merge_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, views: int, frames: int,
                    scale: float | None = None, kernel: str | None = None) -> torch.Tensor:
    """Exact fused view-time attention by LSE merge; differentiable in q, k, v.

    `kernel`: "cpu_flash" (default on CPU), "cuda_flash" (default on CUDA for fp16/bf16), "cuda_efficient"
    (CUDA fp32) or "math" (chunked, any device; the CUDA fallback); see kernels.default_kernel.
    With views == 1 set (b) is empty and this is dense attention over each view.
    """
    check_layout(q, k, v, views, frames)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    kernel = kernel or default_kernel(q.device, q.dtype)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if views == 1:  # one key set: plain dense attention, gradients from autograd
        from .reference import dense_attention
        return dense_attention(q, k, v, scale=scale)
    return _MergeAttention.apply(q, k, v, int(views), int(frames), scale, kernel)
