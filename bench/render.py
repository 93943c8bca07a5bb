# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU rasterizer speed: forward and forward+backward medians at 20k Gaussians, 256x256.

Baseline (named, same run): a dense reference that composites every Gaussian at every pixel
(no tiles, no culling) at a smaller size, scaled per pixel x Gaussian to the target size.
Targets (issue 2): <= 0.5 s forward, <= 2 s forward+backward on 2 cores.
    python bench/render.py [--gaussians 20000] [--size 256] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fuse4d.core.cameras import orbit_cameras
from fuse4d.core.gaussians import Gaussians
from fuse4d.core.render import render
from fuse4d.core.render.projection import covariances, project
from fuse4d.core.sh import sh_to_rgb


def scene(n: int) -> Gaussians:
    torch.manual_seed(0)
    return Gaussians(torch.randn(n, 3) * 0.6, torch.randn(n, 4), torch.full((n, 3), -3.5) + 0.3 * torch.randn(n, 3),
                     torch.randn(n), torch.randn(n, 4, 3) * 0.3)


def dense_reference(g: Gaussians, cams, background=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Every Gaussian at every pixel, depth-sorted; the naive approach."""
    viewmat, K = cams.viewmats[0], cams.Ks[0]
    p = project(g.means, covariances(g.quats, g.scales), viewmat, K, cams.width, cams.height)
    order = torch.argsort(p.depths)
    centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
    colors = sh_to_rgb(g.sh, torch.nn.functional.normalize(g.means - centre, dim=-1))[order]
    m, con, op = p.means2d[order], p.conics[order], g.opacities[order]
    ys, xs = torch.meshgrid(torch.arange(cams.height) + 0.5, torch.arange(cams.width) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    d = pix[None] - m[:, None]
    power = -0.5 * (con[:, None, 0] * d[..., 0] ** 2 + con[:, None, 2] * d[..., 1] ** 2) - con[:, None, 1] * d[..., 0] * d[..., 1]
    alpha = (op[:, None] * power.exp()).clamp(max=0.99)
    alpha = alpha * (alpha >= 1 / 255)
    T = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1 - alpha[:-1]]), 0)
    return (alpha * T).T @ colors


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    g = scene(args.gaussians)
    cams = orbit_cameras(1, 3.0, 20, width=args.size, height=args.size, fov_deg=50)

    def forward():
        with torch.no_grad():
            render(g, cams)

    def forward_backward():
        leaves = Gaussians(*(t.detach().requires_grad_(True) for t in (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh)))
        render(leaves, cams).rgb.sum().backward()

    fwd = median_time(forward, args.repeats)
    fb = median_time(forward_backward, args.repeats)
    small_n, small_size = 4000, 64
    gs, cs = scene(small_n), orbit_cameras(1, 3.0, 20, width=small_size, height=small_size, fov_deg=50)
    with torch.no_grad():
        dense = median_time(lambda: dense_reference(gs, cs), max(args.repeats // 2, 2))
    dense_scaled = dense * (args.gaussians / small_n) * (args.size / small_size) ** 2
    print(f"CPU rasterizer, {args.gaussians} Gaussians, {args.size}x{args.size}, {torch.get_num_threads()} threads")
    print(f"  forward           median {fwd:7.3f} s   (target <= 0.5 s)")
    print(f"  forward+backward  median {fb:7.3f} s   (target <= 2.0 s)")
    print(f"  baseline 'dense reference' (every Gaussian x every pixel), measured at {small_n} Gaussians "
          f"{small_size}x{small_size}: {dense:.3f} s, scaled to target size {dense_scaled:.1f} s")
    print(f"  ratio forward: tiled is {dense_scaled / fwd:.0f}x faster than the dense reference")


if __name__ == "__main__":
    main()
