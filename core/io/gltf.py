# SPDX-License-Identifier: GPL-3.0-or-later
"""glTF 2.0 binary (.glb) with KHR_gaussian_splatting, numpy only (docs/formats.md).

One mesh primitive in POINTS mode: POSITION, KHR_gaussian_splatting:ROTATION (unit quaternion,
x y z w), :SCALE (log), :OPACITY (sigmoid, 0..1), :SH_DEGREE_l_COEF_n (VEC3 per coefficient, the
3DGS basis order), and COLOR_0 (diffuse RGB + opacity, the point-cloud fallback). glTF is Y-up
(x right, y up, -z forward); our data is OpenCV, so y and z flip on the way in and out (positions,
quaternion y/z, odd SH bands): exact, as in spz.py. A 4D sequence is one file per timestep."""
from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import numpy as np

from .arrays import SH_C0, SplatArrays, sigmoid
from .atomic import atomic_output
from .errors import SplatFormatError
from .paths import member_problem
from .spz import POSITION_FLIP, SH_FLIP

EXTENSION = "KHR_gaussian_splatting"
GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
FLOAT, POINTS = 5126, 0
WIDTH = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
MAX_POINTS = 100_000_000


def _sh_name(degree: int, n: int) -> str:
    return f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{n}"


def _to_gltf(arrays: SplatArrays) -> dict[str, np.ndarray]:
    """Attribute name -> float32 [N, width] in glTF axes and conventions."""
    q = arrays.quats[:, [1, 2, 3, 0]].astype(np.float64)  # wxyz -> xyzw
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q[:, 1:3] *= -1
    sh = arrays.sh.copy()
    sh[:, 1:] *= SH_FLIP[: sh.shape[1] - 1, None]
    alpha = sigmoid(arrays.opacity_logits.astype(np.float64))
    out = {"POSITION": arrays.means * POSITION_FLIP, f"{EXTENSION}:ROTATION": q,
           f"{EXTENSION}:SCALE": arrays.log_scales, f"{EXTENSION}:OPACITY": alpha[:, None],
           "COLOR_0": np.concatenate([np.clip(0.5 + SH_C0 * arrays.sh[:, 0], 0, 1), alpha[:, None]], 1)}
    for degree in range(arrays.sh_degree + 1):
        for n in range(2 * degree + 1):
            out[_sh_name(degree, n)] = sh[:, degree * degree + n]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def write_glb(path: str | os.PathLike, arrays: SplatArrays) -> Path:
    path = Path(path)
    attributes = _to_gltf(arrays)
    blob, accessors, views, names = bytearray(), [], [], {}
    for name, values in attributes.items():
        kind = {1: "SCALAR", 3: "VEC3", 4: "VEC4"}[values.shape[1]]
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": values.nbytes})
        accessor = {"bufferView": len(views) - 1, "componentType": FLOAT, "count": len(values), "type": kind}
        if name == "POSITION" and len(values):  # required by the glTF spec
            accessor["min"], accessor["max"] = values.min(0).tolist(), values.max(0).tolist()
        names[name] = len(accessors)
        accessors.append(accessor)
        blob += values.tobytes()
    gltf = {
        "asset": {"version": "2.0", "generator": "Fuse4D"},
        "extensionsUsed": [EXTENSION],
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "splats"}],
        "meshes": [{"primitives": [{"mode": POINTS, "attributes": names, "extensions": {EXTENSION: {
            "kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective",
            "sortingMethod": "cameraDistance"}}}]}],
        "buffers": [{"byteLength": len(blob)}], "bufferViews": views, "accessors": accessors,
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<III", GLB_MAGIC, 2, 12 + 8 + len(text) + 8 + len(blob)))
            f.write(struct.pack("<II", len(text), JSON_CHUNK) + text)
            f.write(struct.pack("<II", len(blob), BIN_CHUNK) + bytes(blob))
    return path


def _parse(path: Path) -> tuple[dict, list[bytes]]:
    """The glTF JSON and its buffers, from a .glb or a .gltf (data URIs or files beside it)."""
    data = path.read_bytes()
    chunks_bin = None
    if data[:4] == struct.pack("<I", GLB_MAGIC):
        if len(data) < 20:
            raise SplatFormatError(path, "truncated GLB header")
        _, version, _ = struct.unpack_from("<III", data, 0)
        if version != 2:
            raise SplatFormatError(path, f"GLB version {version} (only 2 is glTF 2.0)")
        size, kind = struct.unpack_from("<II", data, 12)
        if kind != JSON_CHUNK or 20 + size > len(data):
            raise SplatFormatError(path, "the first GLB chunk must be JSON and fit in the file")
        text = data[20:20 + size]
        at = 20 + size
        if at + 8 <= len(data):
            size, kind = struct.unpack_from("<II", data, at)
            if kind == BIN_CHUNK:
                if at + 8 + size > len(data):
                    raise SplatFormatError(path, "the GLB binary chunk is truncated")
                chunks_bin = data[at + 8:at + 8 + size]
    else:
        text = data
    try:
        gltf = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SplatFormatError(path, f"not glTF JSON ({str(exc)[:100]})") from None
    asset = gltf.get("asset") if isinstance(gltf, dict) else None
    if not isinstance(asset, dict) or not str(asset.get("version", "")).startswith("2"):
        raise SplatFormatError(path, "not a glTF 2.0 asset")
    buffers = []
    for i, buf in enumerate(_list(gltf.get("buffers"))):
        uri = buf.get("uri") if isinstance(buf, dict) else None
        if uri is None:
            if chunks_bin is None or i:
                raise SplatFormatError(path, f"buffer {i} has no data")
            buffers.append(chunks_bin)
        elif isinstance(uri, str) and uri.startswith("data:"):
            try:
                buffers.append(base64.b64decode(uri.split(",", 1)[1], validate=True))
            except (IndexError, ValueError):
                raise SplatFormatError(path, f"buffer {i}: bad data URI") from None
        else:
            buffers.append(_buffer_file(path, i, uri))
    return gltf, buffers


def _buffer_file(path: Path, i: int, uri) -> bytes:
    """A buffer in a file beside the .gltf: a plain relative name inside its folder (paths.py)."""
    problem = member_problem(path.parent, uri)
    if problem:
        raise SplatFormatError(path, f"buffer {i}: uri {str(uri)[:80]!r} {problem}")
    try:
        return (path.parent / uri).read_bytes()
    except OSError as exc:
        raise SplatFormatError(path, f"buffer {i}: cannot read {uri[:80]!r} ({exc.strerror or exc})") from None


def _list(value) -> list:
    """A JSON array, or nothing: a malformed document must not be iterated as a string or a dict."""
    return value if isinstance(value, list) else []


def _index(value) -> int | None:
    """A glTF index or size: a non-negative integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _accessor(path: Path, gltf: dict, buffers: list[bytes], index, width: int, count: int | None) -> np.ndarray:
    accessors, views = _list(gltf.get("accessors")), _list(gltf.get("bufferViews"))
    acc = accessors[index] if _index(index) is not None and index < len(accessors) else None
    view_at = _index(acc.get("bufferView")) if isinstance(acc, dict) else None
    view = views[view_at] if view_at is not None and view_at < len(views) else None
    buf_at = _index(view.get("buffer", 0)) if isinstance(view, dict) else None
    if buf_at is None or buf_at >= len(buffers):
        raise SplatFormatError(path, f"accessor {index!r} does not resolve to buffer data")
    buf = buffers[buf_at]
    if acc.get("componentType") != FLOAT or not isinstance(acc.get("type"), str) or WIDTH.get(acc["type"]) != width:
        raise SplatFormatError(path, f"accessor {index}: expected float {width}-vectors "
                                     f"(quantized splat attributes are not supported)")
    n = _index(acc.get("count"))
    if n is None or n > MAX_POINTS or (count is not None and n != count):
        raise SplatFormatError(path, f"accessor {index}: count {acc.get('count')!r} does not match the "
                                     f"{count} positions")
    stride, offset = _index(view.get("byteStride") or 4 * width), _index(view.get("byteOffset", 0))
    length, extra = _index(view.get("byteLength", 0)), _index(acc.get("byteOffset", 0))
    if None in (stride, offset, length, extra):
        raise SplatFormatError(path, f"accessor {index}: its offsets, length and stride must be integers >= 0")
    start = offset + extra
    if stride < 4 * width or (n and start + stride * (n - 1) + 4 * width > min(len(buf), offset + length)):
        raise SplatFormatError(path, f"accessor {index} reads past its buffer view")
    if n == 0:
        return np.zeros((0, width), np.float32)
    raw = np.frombuffer(buf, np.uint8, stride * (n - 1) + 4 * width, start)
    rows = np.lib.stride_tricks.as_strided(raw, (n, 4 * width), (stride, 1))
    return np.ascontiguousarray(rows).view("<f4").reshape(n, width).astype(np.float32)


def read_glb(path: str | os.PathLike) -> SplatArrays:
    """The first KHR_gaussian_splatting primitive of a .glb/.gltf (float attributes)."""
    path = Path(path)
    gltf, buffers = _parse(path)
    prims = [p for m in _list(gltf.get("meshes")) if isinstance(m, dict) for p in _list(m.get("primitives"))
             if isinstance(p, dict) and isinstance(p.get("extensions"), dict) and EXTENSION in p["extensions"]]
    if not prims:
        raise SplatFormatError(path, f"no mesh primitive with {EXTENSION}")
    attrs = prims[0].get("attributes")
    if not isinstance(attrs, dict):
        raise SplatFormatError(path, "the splat primitive's attributes must be a JSON object")
    if prims[0].get("mode", 4) != POINTS:
        raise SplatFormatError(path, "the splat primitive's mode must be POINTS (0)")
    for name in ("POSITION", f"{EXTENSION}:ROTATION", f"{EXTENSION}:SCALE", f"{EXTENSION}:OPACITY"):
        if name not in attrs:
            raise SplatFormatError(path, f"the splat primitive has no {name} attribute")
    means = _accessor(path, gltf, buffers, attrs["POSITION"], 3, None)
    n = len(means)
    quats = _accessor(path, gltf, buffers, attrs[f"{EXTENSION}:ROTATION"], 4, n).astype(np.float64)
    log_scales = _accessor(path, gltf, buffers, attrs[f"{EXTENSION}:SCALE"], 3, n)
    alpha = _accessor(path, gltf, buffers, attrs[f"{EXTENSION}:OPACITY"], 1, n)[:, 0].astype(np.float64)
    degree = 0
    while degree < 3 and _sh_name(degree + 1, 0) in attrs:
        degree += 1
    sh = np.zeros((n, (degree + 1) ** 2, 3), np.float32)
    for d in range(degree + 1):
        for k in range(2 * d + 1):
            if _sh_name(d, k) not in attrs:
                raise SplatFormatError(path, f"{_sh_name(d, k)} is missing (SH degrees must be complete)")
            sh[:, d * d + k] = _accessor(path, gltf, buffers, attrs[_sh_name(d, k)], 3, n)
    if _sh_name(0, 0) not in attrs and "COLOR_0" in attrs:  # diffuse colour only
        sh[:, 0] = (_accessor(path, gltf, buffers, attrs["COLOR_0"], 4, n)[:, :3] - 0.5) / SH_C0
    quats[:, 1:3] *= -1
    sh[:, 1:] *= SH_FLIP[: sh.shape[1] - 1, None]
    alpha = np.clip(alpha, 1e-7, 1 - 1e-7)
    with np.errstate(all="ignore"):
        arrays = SplatArrays(means * POSITION_FLIP, quats[:, [3, 0, 1, 2]], log_scales,
                             np.log(alpha / (1 - alpha)), sh)
    if not arrays.is_finite():
        raise SplatFormatError(path, "holds non-finite values")
    return arrays


__all__ = ["EXTENSION", "read_glb", "write_glb"]
