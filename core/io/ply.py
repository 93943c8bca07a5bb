# SPDX-License-Identifier: GPL-3.0-or-later
"""INRIA 3D Gaussian Splatting PLY files (numpy only).

Writes binary little-endian in the property order tools expect:
x y z nx ny nz f_dc_0..2 f_rest_0..M opacity scale_0..2 rot_0..3 (f_rest grouped by channel,
opacity as a logit, scales as logs, rotation as w x y z). Reads the same from any property order,
binary little/big-endian or ASCII; extra properties are ignored and normals are optional.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import SplatArrays
from .atomic import atomic_output
from .errors import SplatFormatError

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
MAX_GAUSSIANS = 500_000_000  # anything above is a corrupt header, not a scene
MAX_HEADER_BYTES = 1 << 20


@dataclass
class PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, numpy scalar code); no list properties


@dataclass
class PlyHeader:
    fmt: str  # "binary_little_endian" | "binary_big_endian" | "ascii"
    elements: list[PlyElement]
    data_offset: int


def _parse_header(path: Path, raw: bytes) -> PlyHeader:
    if not raw.startswith(b"ply"):
        raise SplatFormatError(path, "not a PLY file (no 'ply' magic)")
    end = raw.find(b"\nend_header") + 1  # at a line start: a comment may mention end_header
    if end <= 0:
        raise SplatFormatError(path, "PLY header has no end_header (truncated or not a PLY)")
    nl = raw.find(b"\n", end)
    if nl < 0:
        raise SplatFormatError(path, "PLY header is truncated after end_header")
    lines = raw[:end].decode("ascii", errors="replace").replace("\r", "").split("\n")
    fmt, elements = None, []
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in ("binary_little_endian", "binary_big_endian", "ascii"):
                raise SplatFormatError(path, f"unknown PLY format line {line!r}")
            fmt = words[1]
        elif words[0] == "element":
            try:
                count = int(words[2])
            except (IndexError, ValueError):
                raise SplatFormatError(path, f"bad element line {line!r}") from None
            if not 0 <= count <= MAX_GAUSSIANS:
                raise SplatFormatError(path, f"absurd element count {count} in {line!r}")
            elements.append(PlyElement(words[1], count, []))
        elif words[0] == "property":
            if not elements:
                raise SplatFormatError(path, f"property before any element (header line {number})")
            if len(words) >= 2 and words[1] == "list":
                elements[-1].properties.append((words[-1], "list"))
                continue
            if len(words) != 3 or words[1] not in PLY_TYPES:
                raise SplatFormatError(path, f"unknown property type in {line!r}")
            elements[-1].properties.append((words[2], PLY_TYPES[words[1]]))
        else:
            raise SplatFormatError(path, f"unexpected PLY header line {line!r}")
    if fmt is None:
        raise SplatFormatError(path, "PLY header has no format line")
    return PlyHeader(fmt, elements, nl + 1)


class FloatTable(dict):
    """Vertex columns that all live in one [N, P] float32 matrix (read without per-column copies)."""

    def __init__(self, matrix: np.ndarray, index: dict[str, int]):
        super().__init__({name: matrix[:, i] for name, i in index.items()})
        self.matrix, self.index = matrix, index


def _vertex_table(path: Path, raw: bytes, header: PlyHeader) -> dict[str, np.ndarray]:
    """Columns of the 'vertex' element, checked against the file size before allocating."""
    offset = header.data_offset
    for element in header.elements:
        if element.name == "vertex":
            break
        if header.fmt == "ascii" or any(t == "list" for _, t in element.properties):
            raise SplatFormatError(path, f"element {element.name!r} before 'vertex' cannot be skipped")
        offset += element.count * sum(np.dtype(t).itemsize for _, t in element.properties)
    else:
        raise SplatFormatError(path, "no 'vertex' element")
    if any(t == "list" for _, t in element.properties):
        raise SplatFormatError(path, "list properties in the vertex element are not supported")
    names = [n for n, _ in element.properties]
    if len(set(names)) != len(names):
        raise SplatFormatError(path, "duplicate vertex property names")
    n = element.count
    if header.fmt == "ascii":
        rows = raw[offset:].split(b"\n")
        lines = [r for r in rows if r.strip()][:n]
        if len(lines) < n:
            raise SplatFormatError(path, f"header says {n} vertices but the file holds {len(lines)}")
        try:
            values = np.array(b" ".join(lines).split(), dtype=np.float64)
        except ValueError:
            raise SplatFormatError(path, "non-numeric value in ASCII vertex data") from None
        if values.size != n * len(names):
            raise SplatFormatError(path, "ASCII vertex rows do not match the property count")
        values = values.reshape(n, len(names))
        return {name: values[:, i] for i, name in enumerate(names)}
    endian = "<" if header.fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, endian + t) for name, t in element.properties])
    need = n * dtype.itemsize
    if len(raw) - offset < need:
        raise SplatFormatError(path, f"truncated: header says {n} vertices ({need} bytes) but "
                                     f"only {max(len(raw) - offset, 0)} bytes of data follow")
    if all(t == "f4" for _, t in element.properties):  # the usual case: one float matrix
        matrix = np.frombuffer(raw, dtype=endian + "f4", count=n * len(names), offset=offset).reshape(n, len(names))
        return FloatTable(matrix, {name: i for i, name in enumerate(names)})
    table = np.frombuffer(raw, dtype=dtype, count=n, offset=offset)
    return {name: table[name] for name in names}


def _stack(path: Path, table: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in table]
    if missing:
        raise SplatFormatError(path, f"not a 3DGS PLY: missing properties {missing}")
    if isinstance(table, FloatTable):  # one gather instead of a copy per column
        return table.matrix.take([table.index[name] for name in names], axis=1).astype(np.float32, copy=False)
    columns = [table[name] for name in names]
    out = np.empty((len(columns[0]), len(names)), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # doubles beyond float32 become inf: refused later
        for i, column in enumerate(columns):
            out[:, i] = column
    return out


def _sh_names(k: int) -> list[str]:
    """File property names in our [K, 3] order: DC, then f_rest grouped by channel in the file."""
    names = []
    for j in range(k):
        for c in range(3):
            names.append(f"f_dc_{c}" if j == 0 else f"f_rest_{c * (k - 1) + j - 1}")
    return names


def read_ply(path: str | os.PathLike) -> SplatArrays:
    """Read an INRIA-layout 3DGS PLY (SH degree 0-3)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(min(size, MAX_HEADER_BYTES))
    header = _parse_header(path, head)
    vertex = next((e for e in header.elements if e.name == "vertex"), None)
    if vertex is not None and header.fmt != "ascii":
        stride = sum(np.dtype(t).itemsize for _, t in vertex.properties if t != "list")
        if vertex.count * stride > size - header.data_offset:  # before reading or allocating
            raise SplatFormatError(path, f"truncated: header says {vertex.count} vertices "
                                         f"({vertex.count * stride} bytes) but the file has "
                                         f"{size - header.data_offset} bytes of data")
    # Binary data goes straight into one numpy buffer; the one gather below is the only other pass.
    raw = path.read_bytes() if header.fmt == "ascii" else np.fromfile(path, np.uint8)
    table = _vertex_table(path, raw, header)
    rest = [n for n in table if n.startswith("f_rest_")]
    if not all(n[7:].isdecimal() and n[7:].isascii() for n in rest):  # found by fuzzing: 'f_rest_4\xff'
        raise SplatFormatError(path, f"f_rest_* properties must be numbered: {sorted(rest)[:4]}")
    rest.sort(key=lambda n: int(n[7:]))
    if rest != [f"f_rest_{i}" for i in range(len(rest))] or len(rest) % 3 or (len(rest) // 3 + 1) not in (1, 4, 9, 16):
        raise SplatFormatError(path, f"f_rest_* properties ({len(rest)}) do not form SH degree 0-3")
    k = len(rest) // 3 + 1
    block = _stack(path, table, ["x", "y", "z", "rot_0", "rot_1", "rot_2", "rot_3",
                                 "scale_0", "scale_1", "scale_2", "opacity"] + _sh_names(k))
    del table, raw
    n = len(block)
    arrays = SplatArrays(means=block[:, 0:3], quats=block[:, 3:7], log_scales=block[:, 7:10],
                         opacity_logits=block[:, 10], sh=block[:, 11:].reshape(n, k, 3))
    problem = arrays.nonfinite()
    if problem:
        raise SplatFormatError(path, problem)
    return arrays


def ply_property_names(sh_degree: int) -> list[str]:
    rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def check_finite(arrays: SplatArrays) -> None:
    """Writers refuse NaN/inf (a file that loads as garbage is worse than an error)."""
    problem = arrays.nonfinite()
    if problem:
        raise ValueError(f"cannot write splats: {problem}")


def _ply_parts(arrays: SplatArrays) -> tuple[bytes, np.ndarray]:
    """Header bytes and the [N, P] little-endian float body of an INRIA PLY."""
    check_finite(arrays)
    n, k = len(arrays), arrays.sh.shape[1]
    names = ply_property_names(arrays.sh_degree)
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n" + \
        "".join(f"property float {name}\n" for name in names) + "end_header\n"
    body = np.concatenate([arrays.means, np.zeros((n, 3), np.float32), arrays.sh[:, 0],
                           arrays.sh[:, 1:].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),
                           arrays.opacity_logits[:, None], arrays.log_scales, arrays.quats], axis=1)
    return header.encode("ascii"), body.astype("<f4", copy=False)


def encode_ply(arrays: SplatArrays) -> bytes:
    """The bytes of a binary little-endian INRIA PLY."""
    header, body = _ply_parts(arrays)
    return header + body.tobytes()


def write_ply(path: str | os.PathLike, arrays: SplatArrays) -> Path:
    """Write atomically (temporary name, then rename)."""
    path = Path(path)
    header, body = _ply_parts(arrays)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            if body.size:  # memoryview cannot cast an empty [0, P] body
                f.write(memoryview(np.ascontiguousarray(body)).cast("B"))
    return path
