# SPDX-License-Identifier: GPL-3.0-or-later
"""INRIA PLY: byte-stable round trip, interop with plyfile and gsplat's exporter, robustness."""
import numpy as np
import pytest
import torch
from conftest import random_arrays
from plyfile import PlyData, PlyElement

from fuse4d.core.io import SplatFormatError, read_ply, write_ply
from fuse4d.core.io.ply import encode_ply, ply_property_names


def assert_same(a, b):
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_byte_stable(tmp_path, degree):
    a = random_arrays(degree=degree)
    write_ply(tmp_path / "a.ply", a)
    b = read_ply(tmp_path / "a.ply")
    assert_same(a, b)
    write_ply(tmp_path / "b.ply", b)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def inria_plyfile(path, a, endian="<", text=False, shuffle=False, normals=True, extra=False):
    """Write with plyfile in the INRIA layout (independent writer)."""
    names = ply_property_names(a.sh_degree)
    if not normals:
        names = [n for n in names if n not in ("nx", "ny", "nz")]
    if extra:
        names = names + ["red", "filter_3D"]
    if shuffle:
        names = names[::-1]
    n, k = len(a), a.sh.shape[1]
    rest = a.sh[:, 1:].transpose(0, 2, 1).reshape(n, -1)
    cols = {"x": a.means[:, 0], "y": a.means[:, 1], "z": a.means[:, 2], "opacity": a.opacity_logits}
    cols.update({f"f_dc_{i}": a.sh[:, 0, i] for i in range(3)})
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])})
    cols.update({f"scale_{i}": a.log_scales[:, i] for i in range(3)})
    cols.update({f"rot_{i}": a.quats[:, i] for i in range(4)})
    cols.update({"nx": 0, "ny": 0, "nz": 0, "red": 7, "filter_3D": 0.5})
    dtype = [(name, "u1" if name == "red" else endian + "f4") for name in names]
    table = np.empty(n, dtype)
    for name in names:
        table[name] = cols[name]
    PlyData([PlyElement.describe(table, "vertex")], text=text,
            byte_order="<" if endian == "<" else ">").write(str(path))


@pytest.mark.parametrize("variant", [
    {}, {"endian": ">"}, {"text": True}, {"shuffle": True}, {"normals": False}, {"extra": True}])
def test_reads_plyfile_written_files(tmp_path, variant):
    a = random_arrays(n=50, degree=2)
    inria_plyfile(tmp_path / "p.ply", a, **variant)
    b = read_ply(tmp_path / "p.ply")
    if variant.get("text"):
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)
    else:
        assert_same(a, b)


def test_our_file_reads_in_plyfile(tmp_path, arrays):
    write_ply(tmp_path / "a.ply", arrays)
    v = PlyData.read(str(tmp_path / "a.ply"))["vertex"]
    assert [p.name for p in v.properties] == ply_property_names(3)
    np.testing.assert_array_equal(v["f_rest_15"], arrays.sh[:, 1, 1])  # grouped by channel
    np.testing.assert_array_equal(v["rot_0"], arrays.quats[:, 0])


def test_reads_gsplat_exported_file(tmp_path):
    from gsplat import export_splats

    torch.manual_seed(0)
    n = 64
    means, scales, quats = torch.randn(n, 3), torch.randn(n, 3) - 3, torch.randn(n, 4)
    opac, sh0, shN = torch.randn(n), torch.randn(n, 1, 3), torch.randn(n, 15, 3) * 0.1
    export_splats(means, scales, quats, opac, sh0, shN, format="ply", save_to=str(tmp_path / "g.ply"))
    b = read_ply(tmp_path / "g.ply")
    assert len(b) == n and b.sh_degree == 3
    # gsplat may reorder or filter: match by position.
    order = np.lexsort(b.means.T[::-1])
    ref = np.lexsort(means.numpy().T[::-1])
    np.testing.assert_allclose(b.means[order], means.numpy()[ref], rtol=1e-6)
    np.testing.assert_allclose(b.sh[order, 0], sh0[:, 0].numpy()[ref], rtol=1e-6)
    np.testing.assert_allclose(b.sh[order, 1:], shN.numpy()[ref], rtol=1e-6)
    np.testing.assert_allclose(b.quats[order], quats.numpy()[ref], rtol=1e-6)
    np.testing.assert_allclose(b.log_scales[order], scales.numpy()[ref], rtol=1e-6)


def corrupt(tmp_path, arrays, mutate):
    data = bytearray(encode_ply(arrays))
    path = tmp_path / "bad.ply"
    path.write_bytes(bytes(mutate(data)))
    return path


@pytest.mark.parametrize("case,mutate,message", [
    ("truncated", lambda d: d[:-100], "truncated"),
    ("count lies", lambda d: d.replace(b"element vertex 200", b"element vertex 900"), "truncated"),
    ("absurd count", lambda d: d.replace(b"element vertex 200", b"element vertex 99999999999"), "absurd"),
    ("unknown type", lambda d: d.replace(b"property float opacity", b"property half opacity"), "unknown property type"),
    ("no magic", lambda d: b"plx" + d[3:], "not a PLY"),
    ("no end", lambda d: d.replace(b"end_header", b"end_headxx"), "end_header"),
])
def test_malformed_files_raise_one_clear_error(tmp_path, arrays, case, mutate, message):
    path = corrupt(tmp_path, arrays, mutate)
    with pytest.raises(SplatFormatError, match=message) as info:
        read_ply(path)
    assert "bad.ply" in str(info.value)


def test_nan_is_rejected(tmp_path, arrays):
    """One policy for NaN/inf: the writer refuses to write them, the reader refuses a file holding
    them (from another tool), and both say how many and where."""
    data = bytearray(encode_ply(arrays))
    arrays.means[3, 1] = np.nan
    arrays.sh[7, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 of 200 Gaussians .*means 1, sh 1; first: 3, 7"):
        write_ply(tmp_path / "nan.ply", arrays)
    assert not list(tmp_path.iterdir())
    body = len(data) - 200 * 62 * 4
    data[body + (3 * 62 + 1) * 4: body + (3 * 62 + 2) * 4] = np.float32(np.nan).tobytes()
    (tmp_path / "nan.ply").write_bytes(bytes(data))
    with pytest.raises(SplatFormatError, match=r"nan.ply: 1 of 200 Gaussians .*means 1; first: 3\)"):
        read_ply(tmp_path / "nan.ply")


def test_missing_gaussian_properties(tmp_path):
    table = np.zeros(3, [("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(table, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(SplatFormatError, match="missing properties"):
        read_ply(tmp_path / "points.ply")


def test_failed_write_leaves_no_file(tmp_path, arrays, monkeypatch):
    import fuse4d.core.io.ply as ply

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ply.np, "ascontiguousarray", boom)
    with pytest.raises(OSError):
        write_ply(tmp_path / "out.ply", arrays)
    assert list(tmp_path.iterdir()) == []


def test_reads_double_and_byte_typed_properties(tmp_path):
    """Any numeric property type reads by name; doubles are narrowed to float32."""
    a = random_arrays(n=30, degree=1, seed=3)
    names = ply_property_names(1)
    dtype = [(name, "<f8" if name in ("x", "y", "z", "opacity") else "<f4") for name in names]
    dtype += [("red", "u1"), ("segment", "<i4"), ("weight", "<u2")]
    table = np.zeros(30, dtype)
    rest = a.sh[:, 1:].transpose(0, 2, 1).reshape(30, -1)
    for i, axis in enumerate("xyz"):
        table[axis] = a.means[:, i]
    table["opacity"] = a.opacity_logits
    for i in range(3):
        table[f"f_dc_{i}"], table[f"scale_{i}"] = a.sh[:, 0, i], a.log_scales[:, i]
    for i in range(9):
        table[f"f_rest_{i}"] = rest[:, i]
    for i in range(4):
        table[f"rot_{i}"] = a.quats[:, i]
    PlyData([PlyElement.describe(table, "vertex")]).write(str(tmp_path / "mixed.ply"))
    assert_same(a, read_ply(tmp_path / "mixed.ply"))


def test_skips_elements_before_and_after_vertex(tmp_path):
    a = random_arrays(n=20, degree=0, seed=4)
    inria_plyfile(tmp_path / "v.ply", a)
    vertex = PlyData.read(str(tmp_path / "v.ply"))["vertex"]
    camera = PlyElement.describe(np.zeros(2, [("fx", "<f8"), ("id", "u1")]), "camera")
    faces = PlyElement.describe(np.array([([0, 1, 2],)], [("vertex_indices", "O")]), "face")
    PlyData([camera, vertex, faces]).write(str(tmp_path / "more.ply"))
    assert_same(a, read_ply(tmp_path / "more.ply"))


def test_ascii_count_lies_and_bad_values(tmp_path):
    a = random_arrays(n=10, degree=0, seed=5)
    inria_plyfile(tmp_path / "t.ply", a, text=True)
    text = (tmp_path / "t.ply").read_bytes()
    (tmp_path / "lies.ply").write_bytes(text.replace(b"element vertex 10", b"element vertex 4000000"))
    with pytest.raises(SplatFormatError, match="lies.ply.*header says 4000000"):
        read_ply(tmp_path / "lies.ply")
    body = text.index(b"end_header\n") + len(b"end_header\n")
    (tmp_path / "word.ply").write_bytes(text[:body] + b"abc" + text[body + 3:])
    with pytest.raises(SplatFormatError, match="non-numeric"):
        read_ply(tmp_path / "word.ply")


@pytest.mark.parametrize("case,mutate,message", [
    ("sh count", lambda d: d.replace(b"property float f_rest_44\n", b""), "SH degree"),
    ("format", lambda d: d.replace(b"binary_little_endian", b"binary_middle_endian"), "unknown PLY format"),
    ("list", lambda d: d.replace(b"property float nx\n", b"property list uchar int nx\n"), "list properties"),
    ("inf", lambda d: d[:-4] + np.float32(np.inf).tobytes(), "infinite"),
    ("empty", lambda d: b"", "not a PLY"),
])
def test_more_malformed_headers(tmp_path, arrays, case, mutate, message):
    path = corrupt(tmp_path, arrays, mutate)
    with pytest.raises(SplatFormatError, match=message):
        read_ply(path)


def test_write_replaces_existing_file_atomically(tmp_path, arrays):
    write_ply(tmp_path / "a.ply", random_arrays(n=5, degree=0))
    write_ply(tmp_path / "a.ply", arrays)
    assert len(read_ply(tmp_path / "a.ply")) == len(arrays)
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]


def test_header_comments_and_crlf(tmp_path, arrays):
    data = encode_ply(arrays)
    data = data.replace(b"format binary_little_endian 1.0\n",
                        b"format binary_little_endian 1.0\ncomment written before end_header, by hand\n")
    head, body = data.split(b"end_header\n", 1)
    (tmp_path / "c.ply").write_bytes(head.replace(b"\n", b"\r\n") + b"end_header\r\n" + body)
    assert_same(arrays, read_ply(tmp_path / "c.ply"))
