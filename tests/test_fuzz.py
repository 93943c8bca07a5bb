# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzzing every parser of untrusted input (bounded here; bench/fuzz.py runs the long campaigns):
only the parser's clear error type may escape, and memory stays a small multiple of the input."""
import json
import random
import tracemalloc

import numpy as np
import pytest
from fuzz_targets import memory_bound, mutate, run_one, small_arrays, targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuse4d.core.io import SplatFormatError, read_ply, read_spz
from fuse4d.core.io.ply import PLY_TYPES, ply_property_names
from fuse4d.core.io.spz import HEADER, MAGIC

MUTATIONS_PER_TARGET = 150  # seeds 0..149 of random.Random: the same inputs on every run


@pytest.fixture(scope="module")
def fuzz_targets(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("fuzz")
    return scratch, {t.name: t for t in targets(scratch)}


@pytest.mark.parametrize("name", ["ply", "splat", "spz-gzip", "spz-raw", "manifest", "job", "cameras_json",
                                  "safetensors-recon", "safetensors-wan", "glb", "gltf", "usda", "usdc"])
def test_mutated_real_files_raise_only_the_clear_error(fuzz_targets, name):
    scratch, all_targets = fuzz_targets
    if name not in all_targets:
        pytest.skip(f"{name}: its reader's dependency (usd-core) is not installed")
    target = all_targets[name]
    for seed in target.seeds:  # the unmutated files parse
        assert run_one(target, scratch, seed, measure=False).ok, name
    crashes, heavy = [], []
    for i in range(MUTATIONS_PER_TARGET):
        rng = random.Random(i)
        data = mutate(target, rng.choice(target.seeds), rng)
        outcome = run_one(target, scratch, data)
        if outcome.crash:
            crashes.append((i, outcome.crash))
        if outcome.peak > memory_bound(target, data):
            heavy.append((i, len(data), outcome.peak))
    assert not crashes, f"{name}: inputs (random.Random seed) that crashed: {crashes[:5]}"
    assert not heavy, f"{name}: inputs that allocated too much (seed, size, peak): {heavy[:5]}"


def _ply_header(fmt: str, count: int, props: list[tuple[str, str]]) -> bytes:
    return (f"ply\nformat {fmt} 1.0\nelement vertex {count}\n"
            + "".join(f"property {t} {n}\n" for n, t in props) + "end_header\n").encode()


GAUSSIAN = ply_property_names(1)
PROPERTY = st.tuples(st.sampled_from(GAUSSIAN + ["nx", "red", "f_rest_99", "x"]),
                     st.sampled_from(sorted(PLY_TYPES) + ["list uchar int"]))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["binary_little_endian", "binary_big_endian", "ascii"]),
       count=st.one_of(st.integers(0, 40), st.sampled_from([10 ** 12, 2 ** 31, 2 ** 63, -5])),
       props=st.one_of(st.permutations([(n, "float") for n in GAUSSIAN]), st.lists(PROPERTY, max_size=30)),
       body=st.binary(max_size=2048))
def test_generated_ply_headers(tmp_path_factory, fmt, count, props, body):
    """Any property order, types, formats and counts: parsed, or refused with SplatFormatError."""
    path = tmp_path_factory.getbasetemp() / "generated.ply"
    path.write_bytes(_ply_header(fmt, count, props) + body)
    try:
        arrays = read_ply(path)
    except SplatFormatError:
        return
    assert len(arrays) == count and arrays.is_finite()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5),
                        max_leaves=40))
def test_generated_json_documents(fuzz_targets, doc):
    """Arbitrary JSON as a manifest, a job and cameras_json: only the clear error type."""
    scratch, all_targets = fuzz_targets
    data = json.dumps(doc).encode()
    for name in ("manifest", "job", "cameras_json"):
        outcome = run_one(all_targets[name], scratch, data, measure=False)
        assert outcome.crash is None, (name, doc, outcome.crash)


def test_tiny_file_declaring_a_trillion_gaussians_is_refused_before_allocating(tmp_path):
    """A 1 KB file that declares 10^12 Gaussians (each format's count field) costs no memory."""
    names = ply_property_names(0)
    ply = _ply_header("binary_little_endian", 10 ** 12, [(n, "float") for n in names])
    ply_path = tmp_path / "huge.ply"
    ply_path.write_bytes(ply + bytes(1024 - len(ply)))
    spz_path = tmp_path / "huge.spz"
    import gzip
    spz_path.write_bytes(gzip.compress(HEADER.pack(MAGIC, 3, 10 ** 9, 3, 12, 0, 0) + bytes(1000)))
    for path, reader in ((ply_path, read_ply), (spz_path, read_spz)):
        tracemalloc.start()
        with pytest.raises(SplatFormatError, match="absurd|truncated|lying"):
            reader(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 << 20, (path.name, peak)


def test_empty_splats_round_trip(tmp_path):
    """Found by fuzzing: a PLY of zero Gaussians did not load (SplatArrays could not infer K)."""
    from fuse4d.core.io import write_ply

    for degree in (0, 3):
        empty = small_arrays(n=0, degree=degree)
        got = read_ply(write_ply(tmp_path / f"empty{degree}.ply", empty))
        assert len(got) == 0 and got.sh_degree == degree


def test_ply_variants_all_read_the_same_gaussians(tmp_path):
    """The seeds themselves: binary LE/BE, ASCII and an odd order with doubles agree."""
    from fuzz_targets import ply_variants

    arrays = small_arrays(degree=1)
    for name, data in ply_variants(arrays).items():
        (tmp_path / f"{name}.ply").write_bytes(data)
        got = read_ply(tmp_path / f"{name}.ply")
        np.testing.assert_allclose(got.sh, arrays.sh, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got.means, arrays.means, rtol=1e-5, atol=1e-6, err_msg=name)


def test_gltf_malformed_structure_gives_the_clear_error(tmp_path):
    """Found by fuzzing: wrong JSON types (a string asset, a list of attributes, a float offset, a
    negative index), a NUL or an over-long buffer name, and deep nesting escaped as AttributeError,
    TypeError, ValueError, OSError or RecursionError."""
    from fuse4d.core.io import read_glb, write_glb
    from fuzz_interchange import gltf_text

    doc = json.loads(gltf_text(write_glb(tmp_path / "a.glb", small_arrays()).read_bytes()))
    cases = {"asset": lambda d: d.update(asset="2.0"),
             "attributes": lambda d: d["meshes"][0]["primitives"][0].update(attributes=["POSITION"]),
             "offset": lambda d: d["bufferViews"][0].update(byteOffset=1.5),
             "index": lambda d: d["meshes"][0]["primitives"][0]["attributes"].update(POSITION=-1),
             "nul": lambda d: d["buffers"][0].update(uri="a\0b"),
             "long": lambda d: d["buffers"][0].update(uri="x" * 300),
             "meshes": lambda d: d.update(meshes=7)}
    for name, change in cases.items():
        bad = json.loads(json.dumps(doc))
        change(bad)
        (tmp_path / f"{name}.gltf").write_text(json.dumps(bad))
        with pytest.raises(SplatFormatError, match=f"{name}.gltf"):
            read_glb(tmp_path / f"{name}.gltf")
    (tmp_path / "deep.gltf").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(SplatFormatError, match="not glTF JSON"):
        read_glb(tmp_path / "deep.gltf")


def test_usd_malformed_files_give_the_clear_error(tmp_path):
    """Found by fuzzing: an error text OpenUSD cannot decode escaped as UnicodeDecodeError; a crate
    file's lying table count made OpenUSD allocate gigabytes (now refused before it opens the file,
    with almost no memory); malformed Fuse4D metadata escaped as AttributeError."""
    pytest.importorskip("pxr")
    import struct

    from fuse4d.core.io import Sequence4D, read_usd, write_usd
    from fuzz_targets import camera

    seq = Sequence4D(frames=[small_arrays(n=3), small_arrays(n=3, seed=1)], views=1, cameras=[camera(0)])
    text = write_usd(tmp_path / "a.usda", seq).read_bytes()
    (tmp_path / "utf8.usda").write_bytes(text.replace(b"Splats", b"Spl\x90ts", 1))
    with pytest.raises(SplatFormatError, match="utf8.usda"):
        read_usd(tmp_path / "utf8.usda")
    meta = text.split(b"fuse4d = '", 1)[1].split(b"'", 1)[0]
    for name, value in (("list", b"[1, 2]"), ("camera", meta.replace(b'"width": 32', b'"width": 0', 1))):
        (tmp_path / f"{name}.usda").write_bytes(text.replace(meta, value))
        with pytest.raises(SplatFormatError, match=f"{name}.usda"):
            read_usd(tmp_path / f"{name}.usda")
    crate = bytearray(write_usd(tmp_path / "a.usdc", seq).read_bytes())
    toc = struct.unpack_from("<q", crate, 16)[0]
    for i in range(struct.unpack_from("<Q", crate, toc)[0]):
        name, start, _ = struct.unpack_from("<16sqq", crate, toc + 8 + 32 * i)
        if name.rstrip(b"\0") == b"FIELDSETS":
            struct.pack_into("<Q", crate, start, 2 ** 32)  # 4 G field sets in a few dozen bytes
    (tmp_path / "lying.usdc").write_bytes(bytes(crate))
    tracemalloc.start()
    with pytest.raises(SplatFormatError, match="corrupt binary USD file: section FIELDSETS"):
        read_usd(tmp_path / "lying.usdc")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20
