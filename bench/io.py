# SPDX-License-Identifier: GPL-3.0-or-later
"""PLY read/write throughput: fuse4d.core.io against plyfile, side by side (not a test).

    .venv/bin/python bench/io.py [--n 200000] [--degree 3] [--runs 5]

Both sides produce / consume the same INRIA-layout file. plyfile's "read" is what a typical
3DGS loader does with it: PlyData.read, then one column per property gathered into float32
arrays (means, SH, opacity, scales, rotations).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fuse4d.core.io import SplatArrays, read_ply, write_ply
from fuse4d.core.io.ply import ply_property_names


def make_arrays(n: int, degree: int, seed: int = 0) -> SplatArrays:
    rng = np.random.default_rng(seed)
    return SplatArrays(means=rng.normal(size=(n, 3)), quats=rng.normal(size=(n, 4)),
                       log_scales=rng.normal(size=(n, 3)) - 4, opacity_logits=rng.normal(size=n),
                       sh=rng.normal(size=(n, (degree + 1) ** 2, 3)) * 0.2)


def plyfile_read(path: Path) -> SplatArrays:
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"]
    names = [p.name for p in v.properties]
    rest = sorted((p for p in names if p.startswith("f_rest_")), key=lambda p: int(p[7:]))
    n, k = v.count, len(rest) // 3 + 1

    def cols(keys):
        return np.stack([np.asarray(v[key], np.float32) for key in keys], axis=1)

    sh = np.empty((n, k, 3), np.float32)
    sh[:, 0] = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    if rest:
        sh[:, 1:] = cols(rest).reshape(n, 3, k - 1).transpose(0, 2, 1)
    return SplatArrays(cols(["x", "y", "z"]), cols([f"rot_{i}" for i in range(4)]),
                       cols([f"scale_{i}" for i in range(3)]), np.asarray(v["opacity"], np.float32), sh)


def plyfile_write(path: Path, a: SplatArrays) -> None:
    from plyfile import PlyData, PlyElement

    names = ply_property_names(a.sh_degree)
    n = len(a)
    values = np.concatenate([a.means, np.zeros((n, 3), np.float32), a.sh[:, 0],
                             a.sh[:, 1:].transpose(0, 2, 1).reshape(n, -1), a.opacity_logits[:, None],
                             a.log_scales, a.quats], axis=1)
    table = np.empty(n, [(name, "f4") for name in names])
    for i, name in enumerate(names):
        table[name] = values[:, i]
    PlyData([PlyElement.describe(table, "vertex")]).write(str(path))


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    arrays = make_arrays(args.n, args.degree)
    with tempfile.TemporaryDirectory() as tmp:
        ours_path, theirs_path = Path(tmp) / "ours.ply", Path(tmp) / "plyfile.ply"
        write_ply(ours_path, arrays)
        plyfile_write(theirs_path, arrays)
        same = ours_path.read_bytes() == theirs_path.read_bytes()
        np.testing.assert_array_equal(read_ply(theirs_path).sh, plyfile_read(ours_path).sh)
        size_mb = ours_path.stat().st_size / 1e6

        results = {
            "read": (median_seconds(lambda: read_ply(ours_path), args.runs),
                     median_seconds(lambda: plyfile_read(ours_path), args.runs)),
            "write": (median_seconds(lambda: write_ply(ours_path, arrays), args.runs),
                      median_seconds(lambda: plyfile_write(theirs_path, arrays), args.runs)),
        }

    print(f"PLY I/O: {args.n} Gaussians, SH degree {args.degree}, {size_mb:.1f} MB, "
          f"median of {args.runs} runs (files byte-identical: {same})")
    print(f"{'op':<6} {'fuse4d s':>10} {'plyfile s':>10} {'fuse4d G/s':>12} {'plyfile G/s':>12} {'ratio':>7}")
    for op, (ours, theirs) in results.items():
        print(f"{op:<6} {ours:>10.4f} {theirs:>10.4f} {args.n / ours:>12.3g} {args.n / theirs:>12.3g} "
              f"{theirs / ours:>6.1f}x")
    ratio = results["read"][1] / results["read"][0]
    print(f"read speed-up over plyfile: {ratio:.1f}x (target >= 3x): {'OK' if ratio >= 3 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
