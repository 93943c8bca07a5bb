# SPDX-License-Identifier: GPL-3.0-or-later
"""4D interchange beyond PLY: glTF 2.0 + KHR_gaussian_splatting (numpy-only writer/reader, read back
with pygltflib) and OpenUSD (through usd-core's pxr, read back with pxr itself), from the API and
from `fuse4d convert`."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import random_arrays
from fuse4d.core.files import read_any, write_any
from fuse4d.core.io import Sequence4D, SplatFormatError, read_glb, read_usd, write_glb, write_sequence, write_usd
from fuse4d.core.io.arrays import sigmoid


def unit_wxyz(q):
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.sign(q[:, :1] + 1e-30)  # q and -q are the same rotation


def assert_same_splats(got, want, exact_quat=False):
    np.testing.assert_array_equal(got.means, want.means)  # sign flips are exact
    np.testing.assert_allclose(unit_wxyz(got.quats), unit_wxyz(want.quats), atol=1e-6)
    np.testing.assert_allclose(got.log_scales, want.log_scales, atol=1e-5)
    np.testing.assert_allclose(sigmoid(got.opacity_logits), sigmoid(want.opacity_logits), atol=1e-6)
    np.testing.assert_array_equal(got.sh, want.sh)


def test_glb_round_trip_and_pygltflib_reads_it(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    a = random_arrays(257, degree=2, seed=3)
    write_glb(tmp_path / "a.glb", a)
    assert_same_splats(read_glb(tmp_path / "a.glb"), a)
    # An independent reader: the file is valid glTF and its attributes say what the layout says.
    g = pygltflib.GLTF2().load(str(tmp_path / "a.glb"))
    prim = g.meshes[0].primitives[0]
    assert prim.mode == 0 and "KHR_gaussian_splatting" in g.extensionsUsed
    assert prim.extensions["KHR_gaussian_splatting"]["kernel"] == "ellipse"
    blob = g.binary_blob()

    def attribute(name, width):
        acc = g.accessors[getattr(prim.attributes, name) if hasattr(prim.attributes, name)
                          else prim.attributes.__dict__[name]]
        view = g.bufferViews[acc.bufferView]
        return np.frombuffer(blob, "<f4", acc.count * width, view.byteOffset + (acc.byteOffset or 0)).reshape(-1, width)

    pos = attribute("POSITION", 3)
    np.testing.assert_array_equal(pos, a.means * [1, -1, -1])  # glTF is Y-up: OpenCV y and z flip
    acc = g.accessors[prim.attributes.POSITION]
    np.testing.assert_allclose(acc.min, pos.min(0)) and np.testing.assert_allclose(acc.max, pos.max(0))
    rot = attribute("KHR_gaussian_splatting:ROTATION", 4)
    np.testing.assert_allclose(np.linalg.norm(rot, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(attribute("KHR_gaussian_splatting:OPACITY", 1)[:, 0], sigmoid(a.opacity_logits), atol=1e-6)
    np.testing.assert_array_equal(attribute("KHR_gaussian_splatting:SH_DEGREE_0_COEF_0", 3), a.sh[:, 0])
    assert "KHR_gaussian_splatting:SH_DEGREE_2_COEF_4" in prim.attributes.__dict__ or \
        hasattr(prim.attributes, "KHR_gaussian_splatting:SH_DEGREE_2_COEF_4")


@pytest.mark.parametrize("blob", [b"glTF\x02\x00\x00\x00", b"glTF\x02\x00\x00\x00" + b"\x00" * 12,
                                  b'{"asset": {"version": "2.0"}}', b"not json",
                                  b'{"asset": {"version": "2.0"}, "meshes": [{"primitives": [{"mode": 0, '
                                  b'"attributes": {"POSITION": 7}, "extensions": {"KHR_gaussian_splatting": {}}}]}]}'])
def test_malformed_gltf_gives_the_clear_error(tmp_path, blob):
    (tmp_path / "bad.glb").write_bytes(blob)
    with pytest.raises(SplatFormatError, match="bad.glb"):
        read_glb(tmp_path / "bad.glb")


def test_glb_truncated_buffer(tmp_path):
    write_glb(tmp_path / "a.glb", random_arrays(50, degree=0))
    data = (tmp_path / "a.glb").read_bytes()
    (tmp_path / "cut.glb").write_bytes(data[:-200])
    with pytest.raises(SplatFormatError, match="cut.glb"):
        read_glb(tmp_path / "cut.glb")


@pytest.fixture
def pxr():
    return pytest.importorskip("pxr", reason="usd-core is not installed (pip install usd-core)")


def sequence(counts=(30, 45, 60), degree=1):
    frames = [random_arrays(n, degree=degree, seed=20 + t) for t, n in enumerate(counts)]
    return Sequence4D(frames=frames, fps=12.5, views=2)


def test_usd_sequence_time_samples_read_by_pxr(tmp_path, pxr):
    from pxr import Usd, UsdGeom

    from fuse4d.core.io.usd import SCHEMA, has_particle_field

    seq = sequence()
    write_usd(tmp_path / "seq.usdc", seq)
    stage = Usd.Stage.Open(str(tmp_path / "seq.usdc"))
    prim = stage.GetDefaultPrim()
    assert UsdGeom.GetStageUpAxis(stage) == "Y" and stage.GetTimeCodesPerSecond() == 12.5
    if has_particle_field():  # OpenUSD 26.x: the Gaussian splat schema
        assert prim.GetTypeName() == SCHEMA
        positions = prim.GetAttribute("positions")
        print("USD layout:", SCHEMA)
    else:
        assert prim.IsA(UsdGeom.Points)
        positions = prim.GetAttribute("points")
        print("USD layout: UsdGeom.Points fallback")
    assert positions.GetTimeSamples() == [0.0, 1.0, 2.0]
    for t, frame in enumerate(seq.frames):
        np.testing.assert_array_equal(np.asarray(positions.Get(t)), frame.means * [1, -1, -1])
    back = read_usd(tmp_path / "seq.usdc")
    assert isinstance(back, Sequence4D) and back.fps == 12.5 and back.views == 2
    for got, want in zip(back.frames, seq.frames):
        assert_same_splats(got, want)


def test_usd_static_and_points_fallback(tmp_path, pxr, monkeypatch):
    from fuse4d.core.io import usd

    a = random_arrays(80, degree=0, seed=4)
    write_usd(tmp_path / "a.usda", a)
    assert_same_splats(read_usd(tmp_path / "a.usda"), a)
    monkeypatch.setattr(usd, "has_particle_field", lambda pxr=None: False)  # an OpenUSD before 26.x
    write_usd(tmp_path / "b.usda", a)
    assert "def Points" in (tmp_path / "b.usda").read_text()
    assert_same_splats(read_usd(tmp_path / "b.usda"), a)


def test_malformed_usd_gives_the_clear_error(tmp_path, pxr):
    (tmp_path / "bad.usda").write_text("#usda 1.0\ndef Xform \"A\" {\n  float x = \n")
    with pytest.raises(SplatFormatError, match="bad.usda"):
        read_usd(tmp_path / "bad.usda")
    (tmp_path / "empty.usda").write_text("#usda 1.0\ndef Xform \"A\" {}\n")
    with pytest.raises(SplatFormatError, match="no ParticleField3DGaussianSplat"):
        read_usd(tmp_path / "empty.usda")


def test_convert_cli_sequence_to_usd_and_glb(tmp_path, pxr):
    seq = sequence(counts=(20, 20), degree=0)
    write_sequence(tmp_path / "seq", seq)
    run = [sys.executable, "-m", "fuse4d", "convert"]
    out = subprocess.run(run + [str(tmp_path / "seq"), str(tmp_path / "seq.usd")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(run + [str(tmp_path / "seq.usd"), str(tmp_path / "glb" / "s.glb")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "glb").iterdir()) == ["s_t0000.glb", "s_t0001.glb"]
    assert_same_splats(read_glb(tmp_path / "glb" / "s_t0001.glb"), seq.frames[1])
    info = subprocess.run([sys.executable, "-m", "fuse4d", "info", "--json", str(tmp_path / "seq.usd")],
                          capture_output=True, text=True)
    assert json.loads(info.stdout)["count_per_timestep"] == [20, 20]
    bad = subprocess.run(run + [str(tmp_path / "seq"), str(tmp_path / "x.obj")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("fuse4d convert: error:")


def test_numbered_ply_folder_without_manifest(tmp_path):
    from fuse4d.core.io import write_ply

    frames = [random_arrays(n, degree=0, seed=n) for n in (5, 6, 7)]
    for t, f in zip((2, 10, 1), frames):  # numeric order, not name order: 1, 2, 10
        write_ply(tmp_path / "plys" / f"step_{t}.ply", f)
    seq = read_any(tmp_path / "plys", fps=6.0)
    assert [len(f) for f in seq.frames] == [7, 5, 6] and seq.fps == 6.0
    (tmp_path / "plys" / "notes.ply").write_bytes(b"")
    with pytest.raises(SplatFormatError, match="no frame number"):
        read_any(tmp_path / "plys")
    written = write_any(tmp_path / "one.glb", frames[0])
    assert written == [tmp_path / "one.glb"]


def test_format_module_stays_numpy_only_with_usd_support():
    """core.io (which Blender bundles) imports neither torch nor pxr until a USD file is touched."""
    code = ("import sys, fuse4d.core.io, fuse4d.core.files; "
            "print('torch' in sys.modules, 'pxr' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
