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
from fuse4d.core.io.splat import RECORD
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
    with pytest.raises(SplatFormatError, match="climb out of its folder"):
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


def test_reads_gsplat_exported_splat(tmp_path):
    import torch
    from gsplat import export_splats

    torch.manual_seed(0)
    n = 50
    means, scales, quats = torch.randn(n, 3), torch.randn(n, 3) - 3, torch.randn(n, 4)
    opac, sh0 = torch.randn(n), torch.randn(n, 1, 3) * 0.5
    export_splats(means, scales, quats, opac, sh0, torch.zeros(n, 0, 3), format="splat",
                  save_to=str(tmp_path / "g.splat"))
    b = read_splat(tmp_path / "g.splat")
    assert len(b) == n
    order = [int(np.argmin(np.abs(b.means - m).sum(1))) for m in means.numpy()]
    b = b.subset(np.array(order))
    np.testing.assert_array_equal(b.means, means.numpy())
    np.testing.assert_allclose(b.log_scales, scales.numpy(), atol=1e-5)
    rgb = np.clip(0.5 + 0.28209479177387814 * sh0[:, 0].numpy(), 0, 1)
    np.testing.assert_allclose(b.colors, rgb, atol=1 / 255 + 1e-6)  # gsplat truncates, we read exactly
    np.testing.assert_allclose(b.opacities, torch.sigmoid(opac).numpy(), atol=1 / 255 + 1e-3)
    assert np.abs(np.abs((unit(b.quats) * unit(quats.numpy())).sum(1)) - 1).max() < 3e-3


def test_splat_rejects_nan(tmp_path, arrays):
    write_splat(tmp_path / "a.splat", arrays)
    records = np.fromfile(tmp_path / "a.splat", RECORD)
    records["position"][2, 0] = np.inf
    records.tofile(tmp_path / "a.splat")
    with pytest.raises(SplatFormatError, match="a.splat: 1 of 200 records .*infinite.*first: 2"):
        read_splat(tmp_path / "a.splat")
    arrays.means[2, 0] = np.inf
    with pytest.raises(ValueError, match="1 of 200 Gaussians hold NaN or infinite values"):
        write_splat(tmp_path / "b.splat", arrays)
    assert not (tmp_path / "b.splat").exists()


def spz_rotation_word(tmp_path, wxyz):
    a = random_arrays(n=1, degree=0)
    a.quats[:] = wxyz
    write_spz(tmp_path / "q.spz", a)
    raw = gzip.decompress((tmp_path / "q.spz").read_bytes())
    offset = HEADER.size + 9 + 1 + 3 + 3  # positions, alpha, colour, scale
    return int.from_bytes(raw[offset:offset + 4], "little")


def test_spz_v3_smallest_three_packing_by_hand(tmp_path):
    # identity: largest component is w (index 3 in SPZ's x,y,z,w order), the others are 0.
    assert spz_rotation_word(tmp_path, [1, 0, 0, 0]) == 3 << 30
    # (w, x) = (0.8, 0.6): x is stored first (highest 10 bits after the index) as 511 * 0.6 / sqrt(1/2).
    mag = int(511 * 0.6 / 0.7071067811865476 + 0.5)
    assert spz_rotation_word(tmp_path, [0.8, 0.6, 0, 0]) == (3 << 30) | (mag << 20)
    # y largest and negative: q and -q are the same rotation, SPZ stores the largest as positive;
    # RDF -> RUB negates y and z, so y = -0.8 becomes +0.8 and w = 0.6 keeps its sign.
    mag = int(511 * 0.6 / 0.7071067811865476 + 0.5)
    assert spz_rotation_word(tmp_path, [0.6, 0, -0.8, 0]) == (1 << 30) | mag


def test_spz_lying_or_absurd_header_fails_before_allocating(tmp_path):
    for n, message in [(50_000_000, "header says"), (4_000_000_000, "absurd")]:
        header = HEADER.pack(MAGIC, 3, n, 3, 12, 0, 0)
        (tmp_path / "x.spz").write_bytes(gzip.compress(header + b"\0" * 1000))
        with pytest.raises(SplatFormatError, match=message):
            read_spz(tmp_path / "x.spz")
    (tmp_path / "m.spz").write_bytes(gzip.compress(HEADER.pack(0x1234, 3, 1, 0, 12, 0, 0) + b"\0" * 64))
    with pytest.raises(SplatFormatError, match="bad magic"):
        read_spz(tmp_path / "m.spz")


def rewrite_manifest(folder, **changes):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("changes,message", [
    ({"coordinates": "opengl"}, "coordinate convention"),
    ({"fps": -1}, "fps"),
    ({"cameras": [{"viewmat": [[1, 0], [0, 1]], "K": np.eye(3).tolist(), "width": 4, "height": 4}]}, "camera 0"),
    ({"cameras": [{"viewmat": np.eye(4).tolist(), "K": np.eye(3).tolist(), "width": 0, "height": 4}]}, "width"),
    ({"timesteps": 7}, "one entry per timestep"),
    ({"format_version": 99}, "newer"),
    ({"format": "something-else"}, "not a fuse4d"),
])
def test_sequence_manifest_problems(tmp_path, changes, message):
    write_sequence(tmp_path / "seq", make_sequence())
    rewrite_manifest(tmp_path / "seq", **changes)
    with pytest.raises(SplatFormatError, match=message) as info:
        read_sequence(tmp_path / "seq")
    assert "manifest.json" in str(info.value)


def test_sequence_bad_json_and_uneven_corresponding(tmp_path):
    seq = make_sequence()
    write_sequence(tmp_path / "seq", seq)
    (tmp_path / "seq" / "manifest.json").write_text("{ not json")
    with pytest.raises(SplatFormatError, match="invalid JSON"):
        read_sequence(tmp_path / "seq")
    seq.corresponding = False
    seq.frames[1] = random_arrays(n=7, degree=1)
    write_sequence(tmp_path / "seq", seq)
    rewrite_manifest(tmp_path / "seq", corresponding=True)
    with pytest.raises(SplatFormatError, match="different"):
        read_sequence(tmp_path / "seq")


def test_sequence_write_is_atomic(tmp_path, monkeypatch):
    import fuse4d.core.io.sequence as sequence

    write_sequence(tmp_path / "seq", make_sequence(T=2))
    before = sorted(p.name for p in (tmp_path / "seq").iterdir())
    calls, real_write = [], sequence.write_ply

    def failing_write(path, frame):  # the second timestep fails half-way through the folder
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(path, frame)

    monkeypatch.setattr(sequence, "write_ply", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_sequence(tmp_path / "seq", make_sequence(T=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]  # no temporary folder left behind
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == before  # old sequence untouched
    assert len(read_sequence(tmp_path / "seq")) == 2


def test_sequence_write_stopped_by_its_progress_callback_leaves_nothing(tmp_path):
    class Stop(Exception):  # stands in for ComfyUI's interrupt, raised between timesteps
        pass

    ticks = []

    def progress():
        ticks.append(sorted(p.name for p in tmp_path.iterdir()))
        if len(ticks) == 2:
            raise Stop

    with pytest.raises(Stop):
        write_sequence(tmp_path / "seq", make_sequence(T=3), progress=progress)
    assert len(ticks) == 2 and ticks[0] != ["seq"]  # called per timestep, while only the temporary exists
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary
    write_sequence(tmp_path / "seq", make_sequence(T=2))
    with pytest.raises(Stop):
        ticks.clear()
        write_sequence(tmp_path / "seq", make_sequence(T=3), progress=progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"] and len(read_sequence(tmp_path / "seq")) == 2


def test_sequence_accepts_numpy_cameras(tmp_path):
    seq = make_sequence()
    seq.cameras = [{"viewmat": np.eye(4, dtype=np.float32), "K": np.eye(3), "width": np.int64(8), "height": 8}]
    seq.extra = {"note": "[ 1, 2 ]", "matrix": [[1, 2.5], [3e-5, -4]]}
    write_sequence(tmp_path / "seq", seq)
    back = read_sequence(tmp_path / "seq")
    assert back.cameras[0]["viewmat"] == np.eye(4).tolist() and back.cameras[0]["width"] == 8
    assert back.extra == seq.extra


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    import os

    from fuse4d.core.io import atomic_folder, atomic_output

    mask = os.umask(0o022)
    os.umask(mask)
    with atomic_output(tmp_path / "a.txt") as tmp:
        tmp.write_text("a")
    with atomic_folder(tmp_path / "d") as tmp:
        (tmp / "b").write_text("b")
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o666 & ~mask
    assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o777 & ~mask
