# SPDX-License-Identifier: GPL-3.0-or-later
"""Our differentiable CPU rasterizer (gsplat has none).

Pipeline: every projected Gaussian is binned into the 16x16-pixel tiles its bounding box touches;
the (tile, Gaussian) pairs are sorted by tile, then depth; each tile's list is padded into a table
and composited front to back, CHUNK Gaussians x 256 pixels of TILE_BATCH tiles per tensor op.

Compositing follows gsplat's CUDA kernels exactly:
  alpha = min(ALPHA_MAX, opacity * exp(-0.5 d^T conic d)), skipped when below 1/255;
  a pixel stops before the Gaussian that would bring its transmittance to <= 1e-4 (exclusive).
The Gaussian exponent is a quadratic in the tile's pixel coordinates, so the exponents of all
(Gaussian, pixel) pairs of a chunk come from one matrix product with a fixed feature table.

The backward pass is our own (`_Composite`): it stores only the transmittance at every chunk start,
recomputes the chunk, and walks the chunks back to front with a running suffix sum, so memory is
bounded by one chunk, not by the whole list. `custom_backward=False` composites the same chunks
under plain autograd (simpler, keeps every intermediate); tests compare the two.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .projection import Projected

TILE = 16
CHUNK = 64           # Gaussians composited per step in every tile (of a full batch of tiles)
TILE_BATCH = 256     # tiles per tensor op: bounds working memory at TILE_BATCH*CHUNK*256 values
MAX_CHUNK = 1024     # small images have few tiles: longer chunks keep each op's size (and fewer steps)
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999    # gsplat's CUDA kernels clamp at 0.999 (the INRIA rasterizer uses 0.99)
T_MIN = 1e-4         # transmittance at which a pixel is finished
_PAD_LOGIT = -1e4    # exponent of the padding pair: alpha exactly 0
_EXP_FLOOR = -20.0   # e^-20 = 2e-9, far below ALPHA_MIN: same alphas, no denormal arithmetic
# `threshold` keeps x > cut; gsplat keeps alpha >= 1/255, so the cut sits just below 1/255
# (in float32 it rounds back to 1/255: only alpha == 1/255 exactly differs).
_ALPHA_CUT = math.nextafter(ALPHA_MIN, 0.0)


def _pixel_features(device, dtype) -> torch.Tensor:
    """[TILE*TILE, 6]: u^2, uv, v^2, u, v, 1 at the pixel centres of a tile, relative to the
    tile centre (small coordinates keep the expanded quadratic accurate in float32)."""
    r = torch.arange(TILE, device=device, dtype=dtype) + 0.5 - TILE / 2
    v, u = torch.meshgrid(r, r, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([u * u, u * v, v * v, u, v, torch.ones_like(u)], -1)


def _tile_lists(p: Projected, tiles_x: int, tiles_y: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gaussian ids, tile ids) of every intersecting pair, sorted by tile then depth; per-tile counts."""
    with torch.no_grad():
        device = p.means2d.device
        keep = (p.radii > 0).all(-1)
        ids = torch.nonzero(keep).squeeze(1)
        if ids.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty, torch.zeros(tiles_x * tiles_y, dtype=torch.long, device=device)
        m, r = p.means2d[ids].detach(), p.radii[ids]
        x0 = ((m[:, 0] - r[:, 0]) / TILE).floor().clamp(0, tiles_x - 1).long()
        x1 = ((m[:, 0] + r[:, 0]) / TILE).floor().clamp(0, tiles_x - 1).long()
        y0 = ((m[:, 1] - r[:, 1]) / TILE).floor().clamp(0, tiles_y - 1).long()
        y1 = ((m[:, 1] + r[:, 1]) / TILE).floor().clamp(0, tiles_y - 1).long()
        w, h = x1 - x0 + 1, y1 - y0 + 1
        n = w * h
        pair_g = torch.repeat_interleave(torch.arange(len(ids), device=device), n)
        start = torch.cumsum(n, 0) - n
        local = torch.arange(int(n.sum()), device=device) - start[pair_g]
        tile = (y0[pair_g] + local // w[pair_g]) * tiles_x + x0[pair_g] + local % w[pair_g]
        depth_rank = torch.empty_like(ids)
        depth_rank[torch.argsort(p.depths[ids].detach())] = torch.arange(len(ids), device=device)
        order = torch.argsort(tile * len(ids) + depth_rank[pair_g])
        counts = torch.bincount(tile, minlength=tiles_x * tiles_y)
        return ids[pair_g[order]], tile[order], counts


def _pair_table(tile_of_pair: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[n_tiles, max count] pair indices per tile, front to back; -1 (the padding row) pads."""
    n_pairs, device = len(tile_of_pair), tile_of_pair.device
    length = max(int(counts.max()) if counts.numel() else 0, 1)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_pairs, device=device) - starts[tile_of_pair]
    table = torch.full((len(counts), length), -1, dtype=torch.long, device=device)
    table[tile_of_pair, slot] = torch.arange(n_pairs, device=device)
    return table


# Layout: per chunk [B tiles, P pixels, K Gaussians], K contiguous (scans along K are 5x faster
# than along a strided axis). Masks are applied with `threshold` and products, not `where`
# (several times faster on the CPU).

def _chunk_alpha(rows: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rows [B,K,6] -> (opacity * Gaussian value g, clamped and thresholded alpha), both [B,P,K]."""
    # Clamped from below: exponents of far pairs (and of the padding) would give exp values in the
    # slow denormal range; anything below e^-20 is thresholded to alpha 0 anyway.
    g = torch.exp((feats @ rows.transpose(1, 2)).clamp_(min=_EXP_FLOOR))
    return g, F.threshold(g.clamp(max=ALPHA_MAX), _ALPHA_CUT, 0.0)


def _chunk_weights(alpha: torch.Tensor, T0: torch.Tensor, done: torch.Tensor):
    """gsplat's compositing inside one chunk -> (weights alpha_i T_i, T_i of live pairs, else 0).
    T0 * cumprod(1 - alpha) only decreases, so the live pairs form a prefix along K: a pixel stops
    before the Gaussian that would take its transmittance to <= T_MIN, exactly like gsplat."""
    one_minus = 1 - alpha
    T_after = (T0 * ~done) * torch.cumprod(one_minus, -1)   # finished pixels: 0, never live
    T_before = F.threshold(T_after, T_MIN, 0.0) / one_minus  # alpha <= ALPHA_MAX keeps this finite
    return alpha * T_before, T_before


def _chunks(table: torch.Tensor, counts: torch.Tensor):
    """Yield (tile ids, first slot, length) of every chunk of every tile batch, front to back. The
    length grows when a batch has few tiles, so that small images do not pay per-step overhead
    thousands of times (the working set stays at about TILE_BATCH * CHUNK pairs per step)."""
    n_tiles = table.shape[0]
    for g0 in range(0, n_tiles, TILE_BATCH):
        tiles = torch.arange(g0, min(g0 + TILE_BATCH, n_tiles), device=table.device)
        tiles = tiles[counts[tiles] > 0]
        if tiles.numel() == 0:
            continue
        length = min(MAX_CHUNK, CHUNK * max(1, TILE_BATCH // len(tiles)))
        for begin in range(0, int(counts[tiles].max()), length):
            yield tiles[counts[tiles] > begin], begin, length


# The last value channel is a constant 1, so the accumulated weights (the pixel's alpha = 1 - T)
# come out of the same matrix product and T needs no separate bookkeeping.

class _Composite(torch.autograd.Function):
    """(coef [pairs+1, 6], values [pairs+1, ch] with values[:, -1] == 1) -> accumulated [tiles, P, ch]."""

    @staticmethod
    def forward(ctx, coef, values, table, counts, feats):
        n_tiles, P, ch = table.shape[0], feats.shape[0], values.shape[1]
        accum = coef.new_zeros(n_tiles, P, ch)
        done = torch.zeros(n_tiles, P, 1, dtype=torch.bool, device=coef.device)
        saved = []
        for tiles, begin, length in _chunks(table, counts):
            done0 = done[tiles]
            live = ~done0.all(1).squeeze(-1)                 # tiles finished everywhere stop
            if not bool(live.all()):
                tiles, done0 = tiles[live], done0[live]
                if tiles.numel() == 0:
                    continue
            idx = table[tiles, begin:begin + length]
            acc0 = accum[tiles]
            T0 = 1 - acc0[..., -1:]
            saved.append((tiles, begin, length, T0, done0))
            _, alpha = _chunk_alpha(coef[idx], feats)
            w, T_before = _chunk_weights(alpha, T0, done0)
            accum[tiles] = acc0 + w @ values[idx]
            done[tiles] = T_before[..., -1:] == 0
        ctx.saved = saved
        ctx.save_for_backward(coef, values, table, feats)
        return accum

    @staticmethod
    def backward(ctx, grad_accum):
        coef, values, table, feats = ctx.saved_tensors
        grad_coef, grad_values = torch.zeros_like(coef), torch.zeros_like(values)
        # Per pixel, with G the output gradient and w_j = alpha_j T_j:
        #   d/dalpha_i sum_j <G, v_j> w_j = <G, v_i> T_i - sum_{j>i} <G, v_j> w_j / (1 - alpha_i).
        # Chunks are visited back to front; `suffix` holds the sum over all later chunks.
        suffix = grad_accum.new_zeros(table.shape[0], feats.shape[0], 1)
        for tiles, begin, length, T0, done0 in reversed(ctx.saved):
            idx = table[tiles, begin:begin + length]
            g, alpha = _chunk_alpha(coef[idx], feats)
            w, T_before = _chunk_weights(alpha, T0, done0)
            G = grad_accum[tiles]                                  # [B, P, ch]
            Gv = G @ values[idx].transpose(1, 2)                   # [B, P, K]
            incl = torch.cumsum(Gv * w, -1)
            total = incl[..., -1:]
            later = suffix[tiles] + (total - incl)                 # sum over j > i
            d_alpha = Gv * T_before - later / (1 - alpha)
            # d alpha / d exponent = g, zero where the clamp or threshold is active or the pixel
            # had stopped (T_before == 0), as in gsplat.
            g_live = (F.threshold(g, _ALPHA_CUT, 0.0) - F.threshold(g, ALPHA_MAX, 0.0)) * torch.sign(T_before)
            d_exponent = d_alpha * g_live
            grad_coef.index_put_((idx,), d_exponent.transpose(1, 2) @ feats, accumulate=True)
            grad_values.index_put_((idx,), w.transpose(1, 2) @ G, accumulate=True)
            suffix[tiles] = suffix[tiles] + total
        return grad_coef, grad_values, None, None, None


def _composite_autograd(coef, values, table, counts, feats):
    """The same compositing under plain autograd (reference; memory grows with the lists)."""
    n_tiles, P, ch = table.shape[0], feats.shape[0], values.shape[1]
    accum = coef.new_zeros(n_tiles, P, ch)
    done = torch.zeros(n_tiles, P, 1, dtype=torch.bool, device=coef.device)
    for tiles, begin, length in _chunks(table, counts):
        tiles = tiles[~done[tiles].all(1).squeeze(-1)]
        if tiles.numel() == 0:
            continue
        idx = table[tiles, begin:begin + length]
        acc0 = accum[tiles]
        _, alpha = _chunk_alpha(coef[idx], feats)
        w, T_before = _chunk_weights(alpha, 1 - acc0[..., -1:], done[tiles])
        accum = accum.index_copy(0, tiles, acc0 + w @ values[idx])
        done = done.index_copy(0, tiles, T_before[..., -1:] == 0)
    return accum


def rasterize(p: Projected, colors: torch.Tensor, opacities: torch.Tensor, width: int, height: int,
              background: torch.Tensor, custom_backward: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> rgb [H, W, 3], alpha [H, W, 1], expected depth [H, W, 1] (sum w z / alpha), differentiable
    w.r.t. the projected means, conics, depths, colours and opacities."""
    device, dtype = p.means2d.device, p.means2d.dtype
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    gid, tile_of_pair, counts = _tile_lists(p, tiles_x, tiles_y)

    # Per-pair quadratic coefficients around the tile centre, log-opacity folded in.
    ox = (tile_of_pair % tiles_x).to(dtype) * TILE + TILE / 2
    oy = (tile_of_pair // tiles_x).to(dtype) * TILE + TILE / 2
    mx = p.means2d[gid, 0] - ox
    my = p.means2d[gid, 1] - oy
    a, b, c = p.conics[gid].unbind(-1)
    log_o = torch.log(opacities[gid].clamp_min(1e-30))
    coef = torch.stack([-0.5 * a, -b, -0.5 * c, a * mx + b * my, b * mx + c * my,
                        -0.5 * (a * mx * mx + 2 * b * mx * my + c * my * my) + log_o], -1)
    values = torch.cat([colors[gid], p.depths[gid, None], torch.ones_like(p.depths[gid, None])], -1)
    # Row -1 is the padding pair (alpha 0), addressed by the table's -1 entries.
    coef = torch.cat([coef, coef.new_tensor([[0, 0, 0, 0, 0, _PAD_LOGIT]])])
    values = torch.cat([values, values.new_zeros(1, values.shape[1])])  # rgb, depth, 1
    table = _pair_table(tile_of_pair, counts)
    feats = _pixel_features(device, dtype)
    composite = _Composite.apply if custom_backward else _composite_autograd
    accum = composite(coef, values, table, counts, feats)

    def to_image(x: torch.Tensor) -> torch.Tensor:  # [n_tiles, P, ch] -> [H, W, ch]
        ch = x.shape[-1]
        img = x.reshape(tiles_y, tiles_x, TILE, TILE, ch).permute(0, 2, 1, 3, 4)
        return img.reshape(tiles_y * TILE, tiles_x * TILE, ch)[:height, :width]

    acc = to_image(accum)
    alpha_img = acc[..., 4:5]
    rgb = acc[..., :3] + (1 - alpha_img) * background
    depth = acc[..., 3:4] / alpha_img.clamp_min(1e-10)
    return rgb, alpha_img, depth
