# SPDX-License-Identifier: GPL-3.0-or-later
"""Fused view-time attention: every backend equals the masked dense reference in value and gradient."""
import pytest
import torch
import torch.nn.functional as F

from fuse4d.core.attention import (ParallelSyncAttention, available_backends, dense_attention,
                                   fused_positions, fused_view_time_attention, merge_attention,
                                   reference_attention, sequential_attention, time_attention,
                                   view_attention, view_time_mask)

TOL = 1e-5
# (batch, heads, views, frames, h, w, head_dim): V=1, T=1, non-square grids, several heads and batches
LAYOUTS = [
    (2, 3, 3, 4, 2, 3, 16),
    (1, 2, 1, 5, 3, 2, 8),
    (2, 2, 4, 1, 2, 5, 8),
    (1, 4, 5, 3, 1, 7, 32),
    (1, 1, 2, 2, 4, 4, 64),
    (2, 2, 6, 2, 3, 1, 8),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def make_qkv(batch, heads, views, frames, h, w, dim, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    n = views * frames * h * w
    return [torch.randn(batch, heads, n, dim, generator=g).requires_grad_(grad) for _ in range(3)]


def value_and_grads(fn, q, k, v, seed=1):
    out = fn(q, k, v)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return out.detach(), torch.autograd.grad(out, (q, k, v), dout)


def explicit_attention(q, k, v, views, frames):
    """float64 softmax over the allowed keys, with the mask written from (view, time) pairs directly."""
    n, s = q.shape[2], q.shape[2] // (views * frames)
    cell = [(i // s // frames, i // s % frames) for i in range(n)]
    allowed = torch.tensor([[a[0] == b[0] or a[1] == b[1] for b in cell] for a in cell])
    scores = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v.double()


def test_reference_matches_explicit_mask():
    q, k, v = make_qkv(1, 2, 3, 2, 2, 3, 8, grad=False)
    assert rel(reference_attention(q, k, v, 3, 2).double(), explicit_attention(q, k, v, 3, 2)) < TOL


def test_mask_sparsity():
    m = view_time_mask(8, 16, 3)
    assert m.shape == (384, 384) and m.dtype == torch.bool
    assert m.float().mean().item() == pytest.approx((8 + 16 - 1) / (8 * 16))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: "B{}H{}V{}T{}_{}x{}_D{}".format(*l))
@pytest.mark.parametrize("kernel", ["cpu_flash", "math"])
def test_merge_equals_reference(layout, kernel):
    views, frames = layout[2], layout[3]
    q, k, v = make_qkv(*layout)
    ref, ref_grads = value_and_grads(lambda a, b, c: reference_attention(a, b, c, views, frames), q, k, v)
    out, grads = value_and_grads(lambda a, b, c: merge_attention(a, b, c, views, frames, kernel=kernel), q, k, v)
    assert rel(out, ref) <= TOL
    for name, g, r in zip("qkv", grads, ref_grads):
        assert rel(g, r) <= TOL, f"d{name}"


@pytest.mark.parametrize("layout", LAYOUTS[:4], ids=lambda l: "B{}H{}V{}T{}_{}x{}_D{}".format(*l))
def test_auto_backend_equals_reference(layout):
    views, frames = layout[2], layout[3]
    q, k, v = make_qkv(*layout, seed=3)
    ref, ref_grads = value_and_grads(lambda a, b, c: reference_attention(a, b, c, views, frames), q, k, v)
    out, grads = value_and_grads(lambda a, b, c: fused_view_time_attention(a, b, c, views, frames), q, k, v)
    assert rel(out, ref) <= TOL
    assert all(rel(g, r) <= TOL for g, r in zip(grads, ref_grads))


def test_merge_custom_scale_and_strided_inputs():
    # projections usually give [B, N, H, D] transposed to [B, H, N, D]: non-contiguous input
    g = torch.Generator().manual_seed(5)
    q, k, v = [torch.randn(2, 3 * 2 * 6, 4, 8, generator=g).transpose(1, 2).requires_grad_() for _ in range(3)]
    ref, ref_grads = value_and_grads(lambda a, b, c: reference_attention(a, b, c, 3, 2, scale=0.3), q, k, v)
    out, grads = value_and_grads(lambda a, b, c: merge_attention(a, b, c, 3, 2, scale=0.3), q, k, v)
    assert rel(out, ref) <= TOL and all(rel(a, b) <= TOL for a, b in zip(grads, ref_grads))


def test_merge_float64_is_exact():
    q, k, v = [x.detach().double().requires_grad_() for x in make_qkv(1, 2, 3, 3, 2, 2, 8)]
    ref, ref_grads = value_and_grads(lambda a, b, c: reference_attention(a, b, c, 3, 3), q, k, v)
    out, grads = value_and_grads(lambda a, b, c: merge_attention(a, b, c, 3, 3), q, k, v)
    assert out.dtype == torch.float64
    assert rel(out, ref) < 1e-12 and all(rel(a, b) < 1e-12 for a, b in zip(grads, ref_grads))


def test_merge_bfloat16_runs_close_to_reference():
    q, k, v = [x.detach().bfloat16().requires_grad_() for x in make_qkv(1, 2, 3, 4, 2, 5, 32)]
    out = merge_attention(q, k, v, 3, 4)
    out.float().square().sum().backward()
    ref = reference_attention(q.float(), k.float(), v.float(), 3, 4)
    assert out.dtype == q.grad.dtype == torch.bfloat16
    assert rel(out.float(), ref) < 2e-2


@pytest.mark.parametrize("views,frames", [(1, 4), (4, 1)])
def test_single_view_or_frame_is_dense(views, frames):
    q, k, v = make_qkv(1, 2, views, frames, 2, 3, 8, grad=False)
    dense = F.scaled_dot_product_attention(q, k, v)
    for backend in ("auto", "merge", "reference"):
        assert rel(fused_view_time_attention(q, k, v, views, frames, backend=backend), dense) <= TOL, backend


def _flex_reason() -> str | None:
    if "flex" not in available_backends("cpu"):
        return "FlexAttention cannot compile on this machine (no C++ compiler or no flex_attention in torch)"
    return None


@pytest.mark.skipif(_flex_reason() is not None, reason=str(_flex_reason()))
@pytest.mark.parametrize("layout", [(2, 2, 3, 4, 2, 3, 16), (1, 2, 2, 3, 3, 5, 8)])
def test_flex_forward_equals_reference(layout):
    views, frames = layout[2], layout[3]
    q, k, v = make_qkv(*layout, grad=False)
    out = fused_view_time_attention(q, k, v, views, frames, backend="flex")
    assert rel(out, reference_attention(q, k, v, views, frames)) <= TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention has no backward on the CPU in torch "
                    "2.13/2.14; its gradient is tested on CUDA only")
def test_flex_gradient_equals_reference_cuda():
    q, k, v = [x.detach().cuda().requires_grad_() for x in make_qkv(1, 2, 3, 4, 4, 8, 64)]
    ref, ref_grads = value_and_grads(lambda a, b, c: reference_attention(a, b, c, 3, 4), q, k, v)
    out, grads = value_and_grads(lambda a, b, c: fused_view_time_attention(a, b, c, 3, 4, backend="flex"), q, k, v)
    assert rel(out, ref) <= TOL and all(rel(a, b) <= TOL for a, b in zip(grads, ref_grads))


def test_flex_refuses_cpu_gradients_clearly():
    q, k, v = make_qkv(1, 1, 2, 2, 2, 2, 8)
    with pytest.raises(RuntimeError, match="merge"):
        fused_view_time_attention(q, k, v, 2, 2, backend="flex")


def test_bad_inputs_raise():
    q, k, v = make_qkv(1, 1, 2, 2, 2, 2, 8, grad=False)
    with pytest.raises(ValueError, match="views"):
        fused_view_time_attention(q, k, v, 3, 2)
    with pytest.raises(ValueError, match="backend"):
        fused_view_time_attention(q, k, v, 2, 2, backend="nope")
    with pytest.raises(ValueError, match=r"\[B, heads, N, D\]"):
        fused_view_time_attention(q[0], k[0], v[0], 2, 2)


def masked(q, k, v, views, frames, keep):
    s = q.shape[2] // (views * frames)
    cell = torch.arange(q.shape[2]) // s
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep(cell // frames, cell % frames))


def test_view_and_time_attention_baselines():
    q, k, v = make_qkv(2, 2, 3, 4, 2, 3, 8, grad=False)
    same_time = masked(q, k, v, 3, 4, lambda vw, t: t[:, None] == t[None])
    same_view = masked(q, k, v, 3, 4, lambda vw, t: vw[:, None] == vw[None])
    assert rel(view_attention(q, k, v, 3, 4), same_time) <= TOL
    assert rel(time_attention(q, k, v, 3, 4), same_view) <= TOL
    y = same_time
    assert rel(sequential_attention(q, k, v, 3, 4), masked(y, y, y, 3, 4, lambda vw, t: vw[:, None] == vw[None])) <= TOL
    # sequential is not the fused pattern
    assert rel(sequential_attention(q, k, v, 3, 4), reference_attention(q, k, v, 3, 4)) > 1e-2


def test_parallel_sync_starts_as_stream_average_and_trains():
    q, k, v = make_qkv(1, 2, 2, 3, 2, 2, 8)
    module = ParallelSyncAttention(dim=16)
    out = module(q, k, v, 2, 3)
    average = (view_attention(q, k, v, 2, 3) + time_attention(q, k, v, 2, 3)) / 2
    assert rel(out, average) <= TOL
    out.square().sum().backward()
    assert module.sync.weight.grad is not None and module.sync.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="dim"):
        ParallelSyncAttention(dim=8)(q, k, v, 2, 3)


def test_fused_positions():
    views, frames, h, w, t_max = 3, 4, 2, 5, 6
    pos = fused_positions(views, frames, h, w, t_max)
    assert pos.shape == (views * frames * h * w, 3) and pos.dtype == torch.long
    for vw in range(views):
        for t in range(frames):
            for y in range(h):
                for x in range(w):
                    i = ((vw * frames + t) * h + y) * w + x
                    assert pos[i].tolist() == [vw * t_max + t, y, x]
    assert len({tuple(p) for p in pos.tolist()}) == len(pos)  # every token has its own position
    assert fused_positions(1, 4, 2, 2, 4)[:, 0].unique().tolist() == [0, 1, 2, 3]  # V=1: the plain video
    with pytest.raises(ValueError, match="t_max"):
        fused_positions(2, 7, 2, 2, 6)


# --- CUDA paths, checked on the CPU: block mask at block level, kernel fallbacks ---------------------------

def _dense_blocks(views, frames, s, length):
    """Block reduction of the token mask (any / all allowed per 128 x 128 tile), padding allowed nowhere."""
    from fuse4d.core.attention.flex import BLOCK
    n = views * frames * s
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[:n, :n] = view_time_mask(views, frames, s)
    nb = -(-length // BLOCK)
    tiles = F.pad(mask, (0, nb * BLOCK - length, 0, nb * BLOCK - length)).view(nb, BLOCK, nb, BLOCK)
    return tiles.any(3).any(1), tiles.all(3).all(1)


@pytest.mark.parametrize("layout", [(3, 4, 36), (2, 5, 128), (4, 2, 300), (5, 3, 7)])
def test_block_mask_from_layout_equals_dense_reduction(layout):
    from fuse4d.core.attention.flex import BLOCK, frame_blocks
    views, frames, s = layout
    n = views * frames * s
    for length in (n, -(-n // BLOCK) * BLOCK):
        got = frame_blocks(views, frames, s, length)
        want = _dense_blocks(views, frames, s, length)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1] & got[1])
        # "full" only where every pair is allowed (padding never full); everything allowed is covered
        assert not (got[1] & ~want[1]).any() and torch.equal(got[0], want[0])


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def test_block_mask_memory_grows_with_blocks_squared():
    """N = 16k and 64k tokens: the BlockMask holds O((N/128)^2) indices and building it never comes near
    the dense N x N mask (2.8 GB peak at 16k with create_block_mask over token pairs)."""
    from fuse4d.core.attention import flex
    flex.view_time_block_mask(2, 2, 8, "cpu")  # imports FlexAttention's modules outside the measurement
    sizes, peaks = {}, {}
    for views, frames in ((4, 8), (8, 16)):  # 512 tokens per frame: N = 16384 and 65536
        n = views * frames * 512
        measured = _reset_peak_rss()
        before = _peak_rss_kb()
        mask = flex.view_time_block_mask(views, frames, 512, "cpu")
        peaks[n] = (_peak_rss_kb() - before) * 1024 if measured else None
        sizes[n] = flex.block_mask_bytes(mask)
        assert mask.shape[-2:] == (n, n)
    ratio = sizes[65536] / sizes[16384]
    assert 14 <= ratio <= 17, f"BlockMask bytes {sizes}: expected ~(64k/16k)^2 = 16x"
    assert sizes[65536] < 8 * 2 ** 20
    for n, peak in peaks.items():
        if peak is not None:  # Linux: the process's peak RSS, reset before each build
            assert peak < 64 * 2 ** 20, f"building the block mask at N={n} raised peak memory by {peak / 2**20:.0f} MiB"


def test_block_mask_cache_is_bounded_and_reused():
    from fuse4d.core.attention import flex
    first = flex.view_time_block_mask(2, 3, 40, "cpu")
    assert flex.view_time_block_mask(2, 3, 40, "cpu") is first
    for s in range(1, flex.CACHE_SIZE + 3):
        flex.view_time_block_mask(2, 2, s, "cpu")
    assert len(flex._MASKS) == flex.CACHE_SIZE


def test_auto_falls_back_to_merge_when_flex_fails(monkeypatch, caplog):
    import fuse4d.core.attention as attn

    def broken(*args, **kwargs):
        raise RuntimeError("backend compiler failed: no working C compiler\nmore lines")

    monkeypatch.setattr(attn, "flex_attention_view_time", broken)
    monkeypatch.setattr(attn, "_FLEX_FAILED", {})
    q, k, v = make_qkv(1, 2, 2, 3, 2, 2, 8)
    with caplog.at_level("WARNING"):
        out = attn._flex_or_merge(q, k, v, 2, 3, None)
    assert rel(out, reference_attention(q, k, v, 2, 3)) <= TOL
    assert "no working C compiler" in caplog.text and "merge" in caplog.text
    assert attn._FLEX_FAILED == {"cpu": "backend compiler failed: no working C compiler"}


def test_cuda_kernel_failure_falls_back_to_math(caplog):
    """The CUDA flash / efficient ops do not run on CPU tensors: the call logs once and the math kernel answers."""
    from fuse4d.core.attention import kernels
    q, k, v = make_qkv(1, 2, 2, 2, 2, 2, 8, grad=False)
    ref_out, ref_lse = kernels.attention_with_lse(q, k, v, 0.3, "math")
    for name in kernels.CUDA_KERNELS:
        with caplog.at_level("WARNING"):
            out, lse = kernels.attention_with_lse(q, k, v, 0.3, name)
        assert torch.allclose(out, ref_out) and torch.allclose(lse, ref_lse)
        assert f"the {name} kernel failed" in caplog.text
        assert not kernels.kernel_works(name, torch.device("cpu"), torch.float16)
    assert kernels.default_kernel(torch.device("cpu"), torch.bfloat16) == "cpu_flash"


def test_merge_per_view_set_b_equals_strided_path(monkeypatch):
    """The CUDA kernels run set (b) one query view at a time on contiguous keys: same values and gradients."""
    from fuse4d.core.attention import merge
    q, k, v = make_qkv(2, 2, 4, 3, 2, 3, 8)
    want, want_grads = value_and_grads(lambda a, b, c: merge_attention(a, b, c, 4, 3, kernel="math"), q, k, v)
    monkeypatch.setattr(merge, "CUDA_KERNELS", ("math",))
    got, grads = value_and_grads(lambda a, b, c: merge_attention(a, b, c, 4, 3, kernel="math"), q, k, v)
    assert rel(got, want) <= TOL and all(rel(a, b) <= TOL for a, b in zip(grads, want_grads))
