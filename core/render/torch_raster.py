# SPDX-License-Identifier: GPL-3.0-or-later
"""Our differentiable CPU rasterizer (gsplat has none): tiles of 16x16 pixels, Gaussians sorted
front to back per tile, alpha compositing in chunks of the per-tile lists so memory stays bounded.

Alpha follows gsplat: alpha = min(0.99, opacity * exp(-0.5 d^T conic d)), dropped below 1/255.
Within a chunk, the Gaussian exponent is a quadratic in the tile's pixel coordinates, so the
exponents of every (Gaussian, pixel) pair come from one matrix product with a fixed feature table.
"""
from __future__ import annotations

import math

import torch

from .projection import Projected

TILE = 16
CHUNK = 64          # Gaussians composited per step in every tile
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4        # a tile whose pixels are all this opaque stops early


def _pixel_features(device, dtype) -> torch.Tensor:
    """[6, TILE*TILE]: u^2, uv, v^2, u, v, 1 at the pixel centres of a tile (local coordinates)."""
    v, u = torch.meshgrid(torch.arange(TILE, device=device, dtype=dtype) + 0.5,
                          torch.arange(TILE, device=device, dtype=dtype) + 0.5, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([u * u, u * v, v * v, u, v, torch.ones_like(u)])


def _tile_lists(p: Projected, tiles_x: int, tiles_y: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gaussian ids, tile ids) of every intersecting pair, sorted by tile then depth; per-tile counts."""
    with torch.no_grad():
        keep = (p.radii > 0).all(-1)
        ids = torch.nonzero(keep).squeeze(1)
        if ids.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=p.means2d.device)
            return empty, empty, torch.zeros(tiles_x * tiles_y, dtype=torch.long, device=p.means2d.device)
        m, r = p.means2d[ids], p.radii[ids]
        x0 = ((m[:, 0] - r[:, 0]) / TILE).floor().clamp(0, tiles_x - 1).long()
        x1 = ((m[:, 0] + r[:, 0]) / TILE).floor().clamp(0, tiles_x - 1).long()
        y0 = ((m[:, 1] - r[:, 1]) / TILE).floor().clamp(0, tiles_y - 1).long()
        y1 = ((m[:, 1] + r[:, 1]) / TILE).floor().clamp(0, tiles_y - 1).long()
        w, h = x1 - x0 + 1, y1 - y0 + 1
        n = w * h
        pair_g = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), n)
        start = torch.cumsum(n, 0) - n
        local = torch.arange(int(n.sum()), device=ids.device) - start[pair_g]
        tile = (y0[pair_g] + local // w[pair_g]) * tiles_x + x0[pair_g] + local % w[pair_g]
        depth_rank = torch.empty_like(ids)
        depth_rank[torch.argsort(p.depths[ids])] = torch.arange(len(ids), device=ids.device)
        order = torch.argsort(tile * len(ids) + depth_rank[pair_g])
        counts = torch.bincount(tile, minlength=tiles_x * tiles_y)
        return ids[pair_g[order]], tile[order], counts


def rasterize(p: Projected, colors: torch.Tensor, opacities: torch.Tensor, width: int, height: int,
              background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> rgb [H, W, 3], alpha [H, W, 1], expected depth [H, W, 1] (differentiable)."""
    device, dtype = p.means2d.device, p.means2d.dtype
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    n_tiles, P = tiles_x * tiles_y, TILE * TILE
    gid, tile_of_pair, counts = _tile_lists(p, tiles_x, tiles_y)

    # Per-pair quadratic coefficients in tile-local pixel coordinates, log-opacity folded in.
    ox = (tile_of_pair % tiles_x).to(dtype) * TILE
    oy = (tile_of_pair // tiles_x).to(dtype) * TILE
    mx = p.means2d[gid, 0] - ox
    my = p.means2d[gid, 1] - oy
    a, b, c = p.conics[gid].unbind(-1)
    log_o = torch.log(opacities[gid].clamp_min(1e-10))
    coef = torch.stack([-0.5 * a, -b, -0.5 * c, a * mx + b * my, b * mx + c * my,
                        -0.5 * (a * mx * mx + 2 * b * mx * my + c * my * my) + log_o], -1)
    pair_rgbd = torch.cat([colors[gid], p.depths[gid, None]], -1)  # [pairs, 4]

    # Padded per-tile table of pair indices (front to back); -1 marks padding.
    length = int(counts.max()) if counts.numel() else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(gid), device=device) - starts[tile_of_pair]
    table = torch.full((n_tiles, max(length, 1)), -1, dtype=torch.long, device=device)
    table[tile_of_pair, slot] = torch.arange(len(gid), device=device)
    coef = torch.cat([coef, coef.new_tensor([[0, 0, 0, 0, 0, -1e4]])])  # the padding pair: alpha 0
    pair_rgbd = torch.cat([pair_rgbd, pair_rgbd.new_zeros(1, 4)])

    feats = _pixel_features(device, dtype)
    T = torch.ones(n_tiles, 1, P, device=device, dtype=dtype)
    accum = torch.zeros(n_tiles, 4, P, device=device, dtype=dtype)  # rgb + depth, weighted
    active = torch.nonzero(counts > 0).squeeze(1)
    for begin in range(0, length, CHUNK):
        active = active[counts[active] > begin]
        if active.numel() == 0:
            break
        with torch.no_grad():  # tiles that are already opaque everywhere stop here
            active = active[(T[active] > T_MIN).any(-1).squeeze(-1)]
        if active.numel() == 0:
            break
        idx = table[active, begin:begin + CHUNK]                       # [B, K]
        alpha = torch.exp(coef[idx] @ feats)                           # [B, K, P]
        alpha = alpha.clamp(max=ALPHA_MAX) * (alpha >= ALPHA_MIN)
        trans = torch.cumprod(1 - alpha, dim=1)                        # inclusive
        T_a = T[active]
        excl = torch.cat([T_a, T_a * trans[:, :-1]], 1)                # transmittance before each
        weights = alpha * excl                                         # [B, K, P]
        accum = accum.index_add(0, active, pair_rgbd[idx].transpose(1, 2) @ weights)
        T = T.index_copy(0, active, T_a * trans[:, -1:])

    # Tiles -> image.
    def to_image(x: torch.Tensor) -> torch.Tensor:  # [n_tiles, ch, P] -> [H, W, ch]
        ch = x.shape[1]
        img = x.reshape(tiles_y, tiles_x, ch, TILE, TILE).permute(0, 3, 1, 4, 2)
        return img.reshape(tiles_y * TILE, tiles_x * TILE, ch)[:height, :width]

    alpha_img = 1 - to_image(T)
    acc = to_image(accum)
    rgb = acc[..., :3] + (1 - alpha_img) * background
    depth = acc[..., 3:] / alpha_img.clamp_min(1e-10)
    return rgb, alpha_img, depth
