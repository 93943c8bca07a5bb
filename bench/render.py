# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU rasterizer speed: forward and forward+backward medians at 20k Gaussians, 256x256.

Scenes: "random" (20k random Gaussians, a blob in front of the camera) and "sample"
(`sample_scene()`, ~20k Gaussians, orbit camera). Baselines, measured in the same run:
  * "plain autograd": the same tiled compositing with torch autograd instead of our backward
    (`rasterize(..., custom_backward=False)`), at the same size;
  * "dense reference": every Gaussian at every pixel (no tiles, no culling), measured at a
    smaller size and scaled per pixel x Gaussian to the target size (an extrapolation; forward).
Targets (issue 2): <= 0.5 s forward, <= 2 s forward+backward on 2 cores.
The machine may be shared: medians of several repeats, min printed too.
    python bench/render.py [--gaussians 20000] [--size 256] [--repeats 7]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from fuse4d.core.cameras import orbit_cameras
from fuse4d.core.gaussians import Gaussians
import fuse4d.core.render as render_module
from fuse4d.core.render import render, torch_raster
from fuse4d.core.render.projection import covariances, project
from fuse4d.core.scene import sample_scene
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
    alpha = (op[:, None] * power.exp()).clamp(max=0.999)
    alpha = alpha * (alpha >= 1 / 255)
    T = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1 - alpha[:-1]]), 0)
    return (alpha * T).T @ colors


def timings(fns: dict, repeats: int) -> dict:
    """Median and min seconds of each function; runs are interleaved so that load from other
    processes on a shared machine hits every variant alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}


def forward_backward(g: Gaussians, cams, custom: bool = True) -> None:
    leaves = Gaussians(*(t.detach().requires_grad_(True) for t in
                         (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh)))
    render_module.rasterize = functools.partial(torch_raster.rasterize, custom_backward=custom)
    try:
        render(leaves, cams).rgb.sum().backward()
    finally:
        render_module.rasterize = torch_raster.rasterize


def bench_scene(name: str, g: Gaussians, cams, repeats: int) -> float:
    def forward():
        with torch.no_grad():
            render(g, cams)

    t = timings({"fwd": forward, "fb": lambda: forward_backward(g, cams),
                 "plain": lambda: forward_backward(g, cams, False)}, repeats)
    (fwd, fwd_min), (fb, fb_min), (plain, plain_min) = t["fwd"], t["fb"], t["plain"]
    print(f"scene '{name}': {len(g)} Gaussians, {cams.width}x{cams.height}")
    print(f"  forward           median {fwd:6.3f} s  (min {fwd_min:.3f})   target <= 0.5 s")
    print(f"  forward+backward  median {fb:6.3f} s  (min {fb_min:.3f})   target <= 2.0 s")
    print(f"  baseline 'plain autograd' forward+backward median {plain:6.3f} s (min {plain_min:.3f}): "
          f"ratio baseline/ours {plain / fb:.2f}")
    return fwd


def peak_memory_mb(custom: bool, size: int) -> float:
    """Peak RSS growth of a fresh process doing one forward+backward of the sample scene (Linux)."""
    # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
    code = (
        "import torch, sys; sys.path.insert(0, %r); import render as b; torch.set_num_threads(2);"
        "from fuse4d.core.scene import sample_scene; from fuse4d.core.cameras import orbit_cameras;"
        "g = sample_scene(); c = orbit_cameras(1, 3.0, 20, width=%d, height=%d);"
        "kb = lambda key: int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1]);"
        "open('/proc/self/clear_refs', 'w').write('5'); base = kb('VmRSS');"
        "b.forward_backward(g, c, %s);"
        "print(kb('VmHWM') - base)"
    ) % (str(Path(__file__).parent), size, size, custom)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure peak memory at 512x512 in fresh processes")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"CPU rasterizer, {torch.get_num_threads()} threads, torch {torch.__version__}")
    fwd = bench_scene("random", scene(args.gaussians),
                      orbit_cameras(1, 3.0, 20, width=args.size, height=args.size, fov_deg=50), args.repeats)
    bench_scene("sample", sample_scene(), orbit_cameras(1, 4.0, 20, width=args.size, height=args.size),
                args.repeats)
    small_n, small_size = 4000, 64
    gs, cs = scene(small_n), orbit_cameras(1, 3.0, 20, width=small_size, height=small_size, fov_deg=50)
    with torch.no_grad():
        dense, _ = timings({"dense": lambda: dense_reference(gs, cs)}, max(args.repeats // 2, 2))["dense"]
    dense_scaled = dense * (args.gaussians / small_n) * (args.size / small_size) ** 2
    print(f"baseline 'dense reference' (every Gaussian x every pixel) forward at {small_n} Gaussians "
          f"{small_size}x{small_size}: {dense:.3f} s; scaled to {args.gaussians} Gaussians {args.size}x{args.size}: "
          f"{dense_scaled:.1f} s -> the tiled forward ('random') is {dense_scaled / fwd:.0f}x faster")


    if args.memory and Path("/proc/self/clear_refs").exists():
        size = 512
        ours, plain = peak_memory_mb(True, size), peak_memory_mb(False, size)
        print(f"peak memory growth, one forward+backward of 'sample' at {size}x{size} (fresh process): "
              f"ours {ours:.0f} MB, baseline 'plain autograd' {plain:.0f} MB")


if __name__ == "__main__":
    main()
