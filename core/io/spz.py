# SPDX-License-Identifier: GPL-3.0-or-later
"""Niantic SPZ (version 3) export and import, numpy only.

A gzip stream: a 16-byte little-endian header (magic 0x5053474e, version, count, SH degree,
fractional bits, flags, reserved) then, attribute by attribute: positions (24-bit fixed point),
alphas (u8), colours (u8, DC scaled by 0.15), log-scales (u8, (s + 10) * 16), rotations
(v3: "smallest three", 2-bit index of the largest component + 3 x (sign bit + 9-bit magnitude)),
SH rest (u8, colour channel fastest). SPZ stores RUB (OpenGL) coordinates; our data is OpenCV
(RDF), so y and z flip on the way in and out (positions, quaternion y/z, odd SH bands).
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .arrays import SplatArrays, sigmoid
from .atomic import atomic_output
from .errors import SplatFormatError
from .ply import check_finite

MAGIC = 0x5053474E
HEADER = struct.Struct("<IIIBBBB")
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15
MAX_POINTS = 100_000_000
MAX_DEFLATE_RATIO = 1100
SQRT1_2 = np.float32(0.7071067811865476)
# Sign of each SH rest coefficient under (x, y, z) -> (x, -y, -z), in the 3DGS basis order.
SH_FLIP = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float32)
POSITION_FLIP = np.array([1, -1, -1], np.float32)


def _pack_rotations(quats_wxyz: np.ndarray) -> np.ndarray:
    q = quats_wxyz[:, [1, 2, 3, 0]].astype(np.float64)  # xyzw, as SPZ stores
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q[:, 1:3] *= -1  # RDF -> RUB flips the y and z axes
    largest = np.argmax(np.abs(q), axis=1)
    negate = q[np.arange(len(q)), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = (511.0 * np.abs(q[:, i]) / SQRT1_2 + 0.5).astype(np.uint32)
        comp = np.where(keep, (comp << 10) | (negbit << 9) | np.minimum(mag, 511), comp)
    return comp.astype("<u4", order="C").view(np.uint8).reshape(-1, 4)


def _unpack_rotations(raw: np.ndarray) -> np.ndarray:
    comp = raw.reshape(-1, 4).copy().view("<u4")[:, 0].astype(np.uint32)
    largest = comp >> 30
    q = np.zeros((len(comp), 4), np.float32)
    for i in range(3, -1, -1):
        take = largest != i
        mag = (comp & 511).astype(np.float32)
        sign = np.where((comp >> 9) & 1, -1.0, 1.0).astype(np.float32)
        q[:, i] = np.where(take, sign * SQRT1_2 * mag / 511.0, q[:, i])
        comp = np.where(take, comp >> 10, comp)
    rows = np.arange(len(q))
    q[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - (q ** 2).sum(1)))
    q[:, 1:3] *= -1  # RUB -> RDF
    return q[:, [3, 0, 1, 2]]  # back to wxyz


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def encode_spz(arrays: SplatArrays) -> bytes:
    check_finite(arrays)
    n, k = len(arrays), arrays.sh.shape[1]
    fixed = np.round(arrays.means * POSITION_FLIP * (1 << FRACTIONAL_BITS)).astype(np.int64)
    if np.abs(fixed).max(initial=0) >= 1 << 23:
        raise ValueError("positions exceed the SPZ 24-bit fixed-point range (|x| < 2048)")
    fixed = (fixed & 0xFFFFFF).astype("<u4", order="C").view(np.uint8).reshape(n * 3, 4)[:, :3]
    alphas = _u8(255.0 * sigmoid(arrays.opacity_logits.astype(np.float64)))
    colors = _u8(arrays.sh[:, 0] * (COLOR_SCALE * 255.0) + 127.5)
    scales = _u8((arrays.log_scales + 10.0) * 16.0)
    rest = arrays.sh[:, 1:] * SH_FLIP[: k - 1, None]
    bucket = np.where(np.arange(k - 1) < 3, 8, 16)[None, :, None]  # 5 bits for band 1, 4 above
    q = np.round(rest * 128.0) + 128.0
    q = (q + bucket // 2) // bucket * bucket
    header = HEADER.pack(MAGIC, 3, n, arrays.sh_degree, FRACTIONAL_BITS, 0, 0)
    body = b"".join(a.tobytes() for a in (fixed, alphas, colors, scales, _pack_rotations(arrays.quats),
                                           np.clip(q, 0, 255).astype(np.uint8)))
    return gzip.compress(header + body, compresslevel=6, mtime=0)


def _inflate_exactly(path, stream, data: bytes, size: int, what: str) -> bytes:
    """The next `size` decompressed bytes, never more (a gzip bomb cannot blow up memory)."""
    try:
        out = stream.decompress(data, size)
    except zlib.error as exc:
        raise SplatFormatError(path, f"not a gzip stream or corrupt ({exc})") from None
    if len(out) < size:
        raise SplatFormatError(path, f"truncated: {what} needs {size} bytes, the stream holds {len(out)}")
    return out


def decode_spz(path: str | os.PathLike, data: bytes) -> SplatArrays:
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip wrapper
    head = _inflate_exactly(path, stream, data, HEADER.size, "the SPZ header")
    magic, version, n, degree, frac, flags, _ = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise SplatFormatError(path, "not an SPZ file (bad magic)")
    if version not in (2, 3):
        raise SplatFormatError(path, f"SPZ version {version} is not supported (2 or 3)")
    if degree > 3:
        raise SplatFormatError(path, f"SH degree {degree} is not supported (0-3)")
    if n > MAX_POINTS:
        raise SplatFormatError(path, f"absurd point count {n}")
    if flags & 0x2:
        raise SplatFormatError(path, "SPZ extensions are not supported")
    if frac > 23:
        raise SplatFormatError(path, f"absurd fixed-point fraction bits {frac}")
    k = (degree + 1) ** 2
    rot_bytes = 4 if version >= 3 else 3
    sizes = [n * 9, n, n * 3, n * 3, n * rot_bytes, n * (k - 1) * 3]
    if sum(sizes) > MAX_DEFLATE_RATIO * len(data) + 4096:  # deflate cannot expand more than ~1032x
        raise SplatFormatError(path, f"header says {n} points ({sum(sizes)} bytes) but the file is only "
                                     f"{len(data)} bytes compressed (truncated or lying header)")
    raw = head + _inflate_exactly(path, stream, stream.unconsumed_tail, sum(sizes), f"{n} points")
    parts, offset = [], HEADER.size
    for size in sizes:
        parts.append(np.frombuffer(raw, np.uint8, size, offset))
        offset += size
    pos, alpha, color, scale, rot, sh = parts
    p = np.zeros((n * 3, 4), np.uint8)
    p[:, :3] = pos.reshape(-1, 3)
    fixed = p.view("<i4")[:, 0]
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = (fixed.astype(np.float32) / (1 << frac)).reshape(n, 3) * POSITION_FLIP
    if version >= 3:
        quats = _unpack_rotations(rot)
    else:
        xyz = rot.reshape(n, 3).astype(np.float32) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(1)))
        quats = np.concatenate([w[:, None], xyz], 1)
        quats[:, 2:4] *= -1
    shs = np.empty((n, k, 3), np.float32)
    shs[:, 0] = (color.reshape(n, 3).astype(np.float32) / 255.0 - 0.5) / COLOR_SCALE
    shs[:, 1:] = (sh.reshape(n, k - 1, 3).astype(np.float32) - 128.0) / 128.0 * SH_FLIP[: k - 1, None]
    a = np.clip(alpha.astype(np.float64) / 255.0, 1e-6, 1 - 1e-6)
    return SplatArrays(means=means, quats=quats,
                       log_scales=scale.reshape(n, 3).astype(np.float32) / 16.0 - 10.0,
                       opacity_logits=np.log(a / (1 - a)).astype(np.float32), sh=shs)


def write_spz(path: str | os.PathLike, arrays: SplatArrays) -> Path:
    path = Path(path)
    data = encode_spz(arrays)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_spz(path: str | os.PathLike) -> SplatArrays:
    path = Path(path)
    return decode_spz(path, path.read_bytes())
