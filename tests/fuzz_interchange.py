# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzz targets for the interchange readers (glTF KHR_gaussian_splatting, OpenUSD), in the style of
tests/fuzz_targets.py: seed files written by our own writers, byte mutations plus mutations that
know the format (the glTF JSON, the .usda text's types, lines and Fuse4D metadata)."""
from __future__ import annotations

import base64
import json
import random
import struct
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

from fuzz_targets import Target, camera, mutate_bytes, mutate_json, small_arrays

from fuse4d.core.io import Sequence4D, SplatFormatError, read_glb, read_usd, write_glb, write_usd
from fuse4d.core.io.gltf import BIN_CHUNK, GLB_MAGIC, JSON_CHUNK
from fuse4d.core.io.usd import read_usd_here

# --- glTF ------------------------------------------------------------------------------------------


def glb_chunks(data: bytes) -> tuple[bytes, bytes]:
    """The JSON and binary chunks of a GLB our writer made (seeds only: well-formed)."""
    size = struct.unpack_from("<I", data, 12)[0]
    text = data[20:20 + size]
    return text, data[20 + size + 8:]


def pack_glb(text: bytes, blob: bytes) -> bytes:
    """A GLB with correct lengths around (possibly mutated) chunks: mutations reach the JSON parser."""
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    return (struct.pack("<III", GLB_MAGIC, 2, 28 + len(text) + len(blob)) + struct.pack("<II", len(text), JSON_CHUNK)
            + text + struct.pack("<II", len(blob), BIN_CHUNK) + blob)


def gltf_text(glb: bytes) -> bytes:
    """The same asset as a .gltf: the binary chunk as a base64 data URI."""
    text, blob = glb_chunks(glb)
    doc = json.loads(text)
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(blob).decode()
    return json.dumps(doc).encode()


def mutate_glb(data: bytes, rng: random.Random) -> bytes:
    """Half the time the JSON chunk, structure-aware, repacked with honest lengths; else bytes."""
    if rng.random() < 0.5 and data[:4] == struct.pack("<I", GLB_MAGIC) and len(data) >= 28:
        text, blob = glb_chunks(data)
        return pack_glb(mutate_json(text.rstrip(b" "), rng), blob)
    return mutate_bytes(data, rng)


def mutate_gltf(data: bytes, rng: random.Random) -> bytes:
    return mutate_json(data, rng) if rng.random() < 0.7 else mutate_bytes(data, rng)


# --- USD -------------------------------------------------------------------------------------------

USD_TYPES = [b"float[]", b"float3[]", b"point3f[]", b"quatf[]", b"int[]", b"double3[]", b"string[]", b"bool",
             b"int", b"float", b"string", b"token", b"quath[]", b"color3f[]", b"int64[]", b"half[]"]


def mutate_usda(data: bytes, rng: random.Random) -> bytes:
    """The .usda text: an attribute's type swapped, a line dropped or doubled, the Fuse4D metadata
    (JSON inside the prim's customData) mutated, or plain bytes."""
    op = rng.random()
    lines = data.split(b"\n")
    if op < 0.3:
        typed = [i for i, line in enumerate(lines) if any(line.strip().startswith(t + b" ") or
                                                           line.strip().startswith(b"uniform " + t + b" ")
                                                           for t in USD_TYPES)]
        if typed:
            i = rng.choice(typed)
            words = lines[i].split(b" ")
            k = next(j for j, w in enumerate(words) if w in USD_TYPES)
            words[k] = rng.choice(USD_TYPES)
            lines[i] = b" ".join(words)
            return b"\n".join(lines)
    elif op < 0.5:
        i = rng.randrange(len(lines))
        if rng.random() < 0.5:
            del lines[i]
        else:
            lines.insert(i, lines[i])
        return b"\n".join(lines)
    elif op < 0.7 and b"fuse4d = '" in data:
        head, rest = data.split(b"fuse4d = '", 1)
        meta, tail = rest.split(b"'", 1)
        return head + b"fuse4d = '" + mutate_json(meta, rng).replace(b"'", b"") + b"'" + tail
    return mutate_bytes(data, rng)


def usd_seeds(folder: Path, suffix: str) -> list[bytes]:
    """A static splat (SH degree 1) and a 2-timestep sequence with cameras, in the installed
    OpenUSD's particle-field layout and in the UsdGeom.Points fallback layout (older OpenUSD)."""
    static = small_arrays(n=5, degree=1)
    seq = Sequence4D(frames=[small_arrays(n=4, degree=0), small_arrays(n=3, degree=0, seed=1)], views=2,
                     cameras=[camera(0), camera(1)])
    seeds = []
    for fallback in (False, True):
        with mock.patch("fuse4d.core.io.usd.has_particle_field", return_value=False) if fallback else nullcontext():
            for name, data in (("static", static), ("seq", seq)):
                seeds.append(write_usd(folder / f"{name}{int(fallback)}{suffix}", data).read_bytes())
    return seeds


def have_usd() -> bool:
    try:
        import pxr  # noqa: F401
    except ImportError:
        return False
    return True


def _file(scratch: Path, data: bytes, name: str) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


def interchange_targets(scratch: Path) -> list[Target]:
    seeds = scratch / "seeds"
    seeds.mkdir(parents=True, exist_ok=True)
    glbs = [write_glb(seeds / f"a{d}.glb", small_arrays(degree=d, seed=d)).read_bytes() for d in (0, 1)]
    found = [
        Target("glb", glbs, lambda s, d: read_glb(_file(s, d, "a.glb")), (SplatFormatError,), mutate_glb),
        Target("gltf", [gltf_text(glbs[1])], lambda s, d: read_glb(_file(s, d, "a.gltf")), (SplatFormatError,),
               mutate_gltf),
    ]
    if have_usd():  # pxr's C++ heap is invisible to tracemalloc: measure the process's peak RSS too
        found += [
            Target("usda", usd_seeds(seeds, ".usda"), lambda s, d: read_usd(_file(s, d, "a.usda")),
                   (SplatFormatError,), mutate_usda, native=True,
                   warm_up=lambda s, d: read_usd_here(_file(s, d, "a.usda"))),
            Target("usdc", usd_seeds(seeds, ".usdc"), lambda s, d: read_usd(_file(s, d, "a.usdc")),
                   (SplatFormatError,), native=True, warm_up=lambda s, d: read_usd_here(_file(s, d, "a.usdc"))),
        ]
    return found
