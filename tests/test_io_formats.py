# SPDX-License-Identifier: GPL-3.0-or-later
""".splat and .spz exports, 4D sequences, and the CLI's info/convert."""
import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_arrays

from fuse4d.core.io import (Sequence4D, SplatFormatError, read_sequence, read_splat, read_spz,
                            write_sequence, write_splat, write_spz)
from fuse4d.core.io.spz import HEADER, MAGIC


def unit(q):
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_splat_round_trip_within_quantisation(tmp_path, arrays):
    write_splat(tmp_path / "a.splat", arrays)
    assert (tmp_path / "a.splat").stat().st_size == 32 * len(arrays)
    b = read_splat(tmp_path / "a.splat")
    # Written sorted by size x opacity: match rows by position.
    order = [int(np.argmin(np.abs(b.means - m).sum(1))) for m in arrays.means]
    b = b.subset(np.array(order))
    np.testing.assert_array_equal(b.means, arrays.means)
    np.testing.assert_allclose(b.log_scales, arrays.log_scales, atol=1e-5)
    np.testing.assert_allclose(b.colors, np.clip(arrays.colors, 0, 1), atol=1 / 255 + 1e-6)
    assert np.abs(np.abs((unit(b.quats) * unit(arrays.quats)).sum(1)) - 1).max() < 2e-3
    raw = read_splat(tmp_path / "a.splat")
    footprint = np.exp(raw.log_scales.sum(1)) * raw.opacities
    assert (np.diff(footprint) <= 1e-6 * footprint[:-1] + 1e-4).all()  # largest footprint first


def test_splat_bad_size(tmp_path):
    (tmp_path / "x.splat").write_bytes(b"\0" * 33)
    with pytest.raises(SplatFormatError, match="multiple of 32"):
        read_splat(tmp_path / "x.splat")


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_spz_v3_round_trip(tmp_path, degree):
    a = random_arrays(degree=degree)
    write_spz(tmp_path / "a.spz", a)
    raw = gzip.decompress((tmp_path / "a.spz").read_bytes())
    magic, version, n, sh_degree, frac, flags, _ = HEADER.unpack_from(raw)
    assert (magic, version, n, sh_degree, frac) == (MAGIC, 3, len(a), degree, 12)
    b = read_spz(tmp_path / "a.spz")
    np.testing.assert_allclose(b.means, a.means, atol=2 ** -12)
    np.testing.assert_allclose(b.log_scales, a.log_scales, atol=1 / 32 + 1e-6)
    assert np.abs(np.abs((b.quats * unit(a.quats)).sum(1)) - 1).max() < 1e-5
    np.testing.assert_allclose(b.opacities, a.opacities, atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(b.sh[:, 0], a.sh[:, 0], atol=1 / (0.15 * 255) + 1e-6)
    if degree:
        np.testing.assert_allclose(b.sh[:, 1:], np.clip(a.sh[:, 1:], -1, 127 / 128), atol=0.07)


def test_spz_stores_rub_coordinates(tmp_path):
    a = random_arrays(n=3, degree=0)
    write_spz(tmp_path / "a.spz", a)
    raw = gzip.decompress((tmp_path / "a.spz").read_bytes())
    p = np.frombuffer(raw, np.uint8, 9, HEADER.size).reshape(3, 3).astype(np.int32)
    fixed = p[:, 0] | p[:, 1] << 8 | p[:, 2] << 16
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed) / 4096
    np.testing.assert_allclose(fixed, a.means[0] * [1, -1, -1], atol=2 ** -12)


def test_spz_truncated(tmp_path, arrays):
    write_spz(tmp_path / "a.spz", arrays)
    data = gzip.decompress((tmp_path / "a.spz").read_bytes())
    (tmp_path / "t.spz").write_bytes(gzip.compress(data[:-50]))
    with pytest.raises(SplatFormatError, match="truncated"):
        read_spz(tmp_path / "t.spz")
    (tmp_path / "g.spz").write_bytes(b"garbage")
    with pytest.raises(SplatFormatError, match="gzip"):
        read_spz(tmp_path / "g.spz")


def make_sequence(T=3):
    cams = [{"viewmat": np.eye(4).tolist(), "K": [[50, 0, 32], [0, 50, 32], [0, 0, 1]], "width": 64, "height": 64}]
    return Sequence4D(frames=[random_arrays(n=20, degree=1, seed=t) for t in range(T)], fps=12.0, views=1,
                      cameras=cams, corresponding=True)


def test_sequence_round_trip(tmp_path):
    seq = make_sequence()
    write_sequence(tmp_path / "seq", seq)
    manifest = json.loads((tmp_path / "seq" / "manifest.json").read_text())
    assert manifest["timesteps"] == 3 and manifest["coordinates"] == "opencv"
    assert [f["file"] for f in manifest["frames"]] == ["frame_0000.ply", "frame_0001.ply", "frame_0002.ply"]
    back = read_sequence(tmp_path / "seq")
    assert back.fps == 12.0 and back.views == 1 and back.corresponding and back.cameras == seq.cameras
    for a, b in zip(seq.frames, back.frames):
        np.testing.assert_array_equal(a.sh, b.sh)


def test_sequence_rejects_unsafe_or_missing_members(tmp_path):
    write_sequence(tmp_path / "seq", make_sequence())
    manifest_path = tmp_path / "seq" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["frames"][1]["file"] = "../escape.ply"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SplatFormatError, match="relative name"):
        read_sequence(tmp_path / "seq")
    manifest["frames"][1]["file"] = "nothere.ply"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SplatFormatError, match="missing"):
        read_sequence(tmp_path / "seq")


def fuse4d(*args):
    return subprocess.run([sys.executable, "-m", "fuse4d", *map(str, args)], capture_output=True, text=True)


def test_cli_info_and_convert(tmp_path):
    write_sequence(tmp_path / "seq", make_sequence())
    info = fuse4d("info", tmp_path / "seq", "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["timesteps"] == 3 and data["count_per_timestep"] == [20, 20, 20] and data["sh_degree"] == 1
    out = fuse4d("convert", tmp_path / "seq", tmp_path / "flat.spz")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.glob("flat_t*.spz")) == ["flat_t0000.spz", "flat_t0001.spz", "flat_t0002.spz"]
    single = fuse4d("convert", tmp_path / "seq" / "frame_0001.ply", tmp_path / "one.splat")
    assert single.returncode == 0 and (tmp_path / "one.splat").stat().st_size == 20 * 32
    back = fuse4d("convert", tmp_path / "one.splat", tmp_path / "one_seq")
    assert back.returncode == 0 and (tmp_path / "one_seq" / "manifest.json").exists()
    bad = fuse4d("convert", tmp_path / "one.splat", tmp_path / "x.obj")
    assert bad.returncode == 2 and "unknown output format" in bad.stderr
