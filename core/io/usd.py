# SPDX-License-Identifier: GPL-3.0-or-later
"""OpenUSD (.usd/.usda/.usdc) export and import of static and 4D splats, through `pxr` (the
optional usd-core package, or the one Blender bundles); imported only when a USD file is touched,
so the rest of core/io stays numpy only (docs/formats.md).

Layout: the default prim /Splats is a ParticleField3DGaussianSplat where the installed OpenUSD has
that schema (26.x): positions, orientations (quatf), scales (linear), opacities (0..1),
radiance:sphericalHarmonicsCoefficients (N*K float3, 3DGS basis order) and
radiance:sphericalHarmonicsDegree. Older OpenUSD gets a UsdGeom.Points prim with the same values as
`points` and primvars fuse4d:orientations / :scales / :opacities / :sh (elementSize K) / :shDegree,
plus displayColor/displayOpacity. A 4D sequence is time samples t = 0..T-1 at timeCodesPerSecond = fps
(counts may change per sample). The stage is Y-up: y and z flip against our OpenCV data (exact, as
in spz.py). Sequence metadata (views, cameras, corresponding) rides in the prim's customData.
Reading checks a crate file's table of contents (usd_crate.py), then has a child process read the
file first (usd_guard.py): OpenUSD's own crate reader can crash or run away with memory."""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .arrays import SH_C0, SplatArrays, sigmoid
from .atomic import atomic_output
from .errors import SplatFormatError
from .sequence import Sequence4D, camera_problem
from .spz import POSITION_FLIP, SH_FLIP
from .usd_crate import crate_file_problem
from .usd_guard import probe_in_child

SCHEMA = "ParticleField3DGaussianSplat"
PRIM = "/Splats"
SUFFIXES = (".usd", ".usda", ".usdc")
# (what, schema attribute, fallback attribute on UsdGeom.Points)
NAMES = {"positions": ("positions", "points"), "orientations": ("orientations", "primvars:fuse4d:orientations"),
         "scales": ("scales", "primvars:fuse4d:scales"), "opacities": ("opacities", "primvars:fuse4d:opacities"),
         "sh": ("radiance:sphericalHarmonicsCoefficients", "primvars:fuse4d:sh"),
         "degree": ("radiance:sphericalHarmonicsDegree", "primvars:fuse4d:shDegree")}


def _pxr():
    try:
        from pxr import Gf, Sdf, Usd, UsdGeom, Vt  # noqa: F401
    except ImportError:
        raise ValueError("OpenUSD files need the usd-core package (pip install usd-core)") from None
    import pxr

    return pxr


def has_particle_field(pxr=None) -> bool:
    """Whether the installed OpenUSD defines the Gaussian-splat particle field schema."""
    pxr = pxr or _pxr()
    return bool(pxr.Usd.SchemaRegistry().FindConcretePrimDefinition(SCHEMA))


def _values(arrays: SplatArrays) -> dict[str, np.ndarray]:
    q = arrays.quats.astype(np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q[:, 2:4] *= -1  # w x y z: y and z flip
    sh = arrays.sh.copy()
    sh[:, 1:] *= SH_FLIP[: sh.shape[1] - 1, None]
    return {"positions": (arrays.means * POSITION_FLIP).astype(np.float32),
            "orientations": q.astype(np.float32),
            "scales": np.exp(arrays.log_scales.astype(np.float64)).astype(np.float32),
            "opacities": sigmoid(arrays.opacity_logits.astype(np.float64)).astype(np.float32),
            "sh": np.ascontiguousarray(sh.reshape(-1, 3), np.float32)}


def write_usd(path: str | os.PathLike, data: SplatArrays | Sequence4D) -> Path:
    """A static splat (default values) or a sequence (time samples) as a USD stage, atomically."""
    pxr = _pxr()
    Sdf, Usd, UsdGeom, Vt, Gf = pxr.Sdf, pxr.Usd, pxr.UsdGeom, pxr.Vt, pxr.Gf
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path}: a USD file ends in {', '.join(SUFFIXES)}")
    frames = data.frames if isinstance(data, Sequence4D) else [data]
    if not frames:
        raise ValueError("a 4D sequence needs at least one timestep")
    degree = frames[0].sh_degree
    if any(f.sh_degree != degree for f in frames):
        raise ValueError("every timestep needs the same SH degree for USD")
    schema = has_particle_field(pxr)
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    if schema:
        prim = stage.DefinePrim(PRIM, SCHEMA)
    else:
        prim = UsdGeom.Points.Define(stage, PRIM).GetPrim()
    stage.SetDefaultPrim(prim)
    col = 0 if schema else 1
    types = {"positions": Sdf.ValueTypeNames.Point3fArray, "orientations": Sdf.ValueTypeNames.QuatfArray,
             "scales": Sdf.ValueTypeNames.Float3Array, "opacities": Sdf.ValueTypeNames.FloatArray,
             "sh": Sdf.ValueTypeNames.Float3Array}
    attrs = {k: prim.GetAttribute(NAMES[k][col]) if prim.HasAttribute(NAMES[k][col])
             else prim.CreateAttribute(NAMES[k][col], types[k]) for k in types}
    deg_attr = prim.GetAttribute(NAMES["degree"][0]) if schema else \
        prim.CreateAttribute(NAMES["degree"][1], Sdf.ValueTypeNames.Int, variability=Sdf.VariabilityUniform)
    deg_attr.Set(int(degree))
    if not schema:
        UsdGeom.Primvar(attrs["sh"]).SetElementSize((degree + 1) ** 2)
    animated = isinstance(data, Sequence4D)
    if animated:
        stage.SetTimeCodesPerSecond(float(data.fps))
        stage.SetFramesPerSecond(float(data.fps))
        stage.SetStartTimeCode(0)
        stage.SetEndTimeCode(len(frames) - 1)
        prim.SetCustomDataByKey("fuse4d", json.dumps({"views": int(data.views), "cameras": data.cameras or [],
                                                      "corresponding": bool(data.corresponding)}))
    display = UsdGeom.Gprim(prim) if not schema else None
    for t, frame in enumerate(frames):
        values = _values(frame)
        when = Usd.TimeCode(t) if animated else Usd.TimeCode.Default()
        attrs["positions"].Set(Vt.Vec3fArray.FromNumpy(values["positions"]), when)
        # GfQuatf is (real, imaginary); Vt.QuatfArray from numpy takes (i, j, k, real) rows.
        attrs["orientations"].Set(Vt.QuatfArray.FromNumpy(np.ascontiguousarray(values["orientations"][:, [1, 2, 3, 0]])), when)
        attrs["scales"].Set(Vt.Vec3fArray.FromNumpy(values["scales"]), when)
        attrs["opacities"].Set(Vt.FloatArray.FromNumpy(values["opacities"]), when)
        attrs["sh"].Set(Vt.Vec3fArray.FromNumpy(values["sh"]), when)
        if display is not None:
            color = np.clip(0.5 + SH_C0 * frame.sh[:, 0], 0, 1).astype(np.float32)
            display.CreateDisplayColorAttr().Set(Vt.Vec3fArray.FromNumpy(color), when)
            display.CreateDisplayOpacityAttr().Set(Vt.FloatArray.FromNumpy(values["opacities"]), when)
    with atomic_output(path) as tmp:
        staged = tmp.with_name(tmp.name + path.suffix)  # Sdf picks the file format by extension
        try:
            if not stage.GetRootLayer().Export(str(staged)):
                raise OSError(f"{path}: OpenUSD could not write the file")
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return path


def _find_prim(stage):
    prim = stage.GetDefaultPrim()
    candidates = [prim] if prim and prim.IsValid() else []
    candidates += list(stage.Traverse())
    for p in candidates:
        if p.GetTypeName() == SCHEMA:
            return p, 0
        if p.HasAttribute(NAMES["orientations"][1]):
            return p, 1
    return None, None


@contextmanager
def _pxr_errors(path: Path, what: str):
    """pxr's Python bindings raise many types for a malformed stage (Tf.ErrorException, RuntimeError,
    TypeError, UnicodeDecodeError for bad strings): each becomes the one clear error, naming the step."""
    try:
        yield
    except SplatFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 (whatever pxr raises is a malformed file here)
        raise SplatFormatError(path, f"{what} ({_last_line(exc)[:200]})") from None


def _last_line(exc: Exception) -> str:
    """The last line of an error's text; pxr's own text can fail to decode (it quotes the file's bytes)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 (Tf.ErrorException.__str__ raised UnicodeDecodeError)
        text = ""
    return (text.strip().splitlines() or [type(exc).__name__])[-1].strip()


def read_usd(path: str | os.PathLike) -> SplatArrays | Sequence4D:
    """A USD stage written as above (either layout): a sequence if it is time-sampled."""
    _pxr()  # without usd-core, say so before anything else
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    problem = crate_file_problem(path)
    if problem:  # before OpenUSD sizes its tables from the file's counts
        raise SplatFormatError(path, f"corrupt binary USD file: {problem}")
    probe_in_child(path)  # OpenUSD's crate reader can segfault: a child process reads it first
    return read_usd_here(path)


def read_usd_here(path: Path) -> SplatArrays | Sequence4D:
    """read_usd's reading, in this process, without its checks before OpenUSD opens the file: for
    usd_child.py, which runs it under limits, and for read_usd once that child has read the file."""
    pxr = _pxr()
    with _pxr_errors(path, "not a readable USD stage"):
        stage = pxr.Usd.Stage.Open(str(path))
    if stage is None:
        raise SplatFormatError(path, "not a readable USD stage")
    with _pxr_errors(path, "its splat prim cannot be read"):
        prim, col = _find_prim(stage)
        if prim is None:
            raise SplatFormatError(path, f"no {SCHEMA} (or Fuse4D points) prim")
        attrs = {k: prim.GetAttribute(v[col]) for k, v in NAMES.items()}
        for key, attr in attrs.items():
            if not attr or not attr.HasValue():
                raise SplatFormatError(path, f"{prim.GetPath()} has no {NAMES[key][col]} values")
        degree = attrs["degree"].Get()
        times = attrs["positions"].GetTimeSamples()
        meta = prim.GetCustomDataByKey("fuse4d")
        fps = stage.GetTimeCodesPerSecond()
    if not isinstance(degree, int) or not 0 <= degree <= 3:
        raise SplatFormatError(path, f"SH degree {degree!r} is not 0..3")
    frames = [_read_frame(path, attrs, degree, pxr.Usd.TimeCode(t) if times else pxr.Usd.TimeCode.Default())
              for t in (times or [None])]
    if not times:
        return frames[0]
    views, cameras, corresponding = _sequence_meta(path, meta)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise SplatFormatError(path, f"timeCodesPerSecond {fps!r} is not a positive number")
    return Sequence4D(frames=frames, fps=float(fps), views=views, cameras=cameras,
                      corresponding=corresponding and len({len(f) for f in frames}) == 1)


def _meta_dict(path: Path, meta) -> dict:
    """The prim's Fuse4D customData (a JSON object as a string; absent: {})."""
    if meta is None:
        return {}
    try:
        value = json.loads(meta) if isinstance(meta, str) else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise SplatFormatError(path, "the prim's customData fuse4d is not a JSON object")
    return value


def _sequence_meta(path: Path, meta) -> tuple[int, list | None, bool]:
    """Views, cameras and correspondence from the metadata, checked like a manifest's (sequence.camera_problem)."""
    meta = _meta_dict(path, meta)
    views, cameras = meta.get("views", 0) or 0, meta.get("cameras") or None
    if not isinstance(views, int) or isinstance(views, bool) or not 0 <= views <= 65536:
        raise SplatFormatError(path, f"views {views!r} in the Fuse4D metadata is not a count")
    if cameras is not None and not isinstance(cameras, list):
        raise SplatFormatError(path, "cameras in the Fuse4D metadata must be a list")
    for i, camera in enumerate(cameras or []):
        problem = camera_problem(camera)
        if problem:
            raise SplatFormatError(path, f"camera {i} in the Fuse4D metadata: {problem}")
    return views, cameras, meta.get("corresponding") is True


def _read_frame(path: Path, attrs: dict, degree: int, when) -> SplatArrays:
    def get(key, width):
        with _pxr_errors(path, f"time {when}: {key} cannot be read"):
            value = attrs[key].Get(when)
        try:
            arr = np.asarray(value if value is not None else [], np.float32)
        except (TypeError, ValueError):
            raise SplatFormatError(path, f"time {when}: {key} holds {type(value).__name__}, not numbers") from None
        if arr.size % width or (width > 1 and arr.ndim > 1 and arr.shape[-1] != width):
            raise SplatFormatError(path, f"time {when}: {key} holds {arr.shape} values, not {width}-vectors")
        return arr.reshape(-1, width) if width > 1 else arr.reshape(-1)

    means = get("positions", 3)
    n = len(means)
    quats = get("orientations", 4)  # numpy view of GfQuatf rows: (i, j, k, real)
    scales, opac, sh = get("scales", 3), get("opacities", 1), get("sh", 3)
    k = (degree + 1) ** 2
    if len(quats) != n or len(scales) != n or len(opac) != n or len(sh) != n * k:
        raise SplatFormatError(path, f"time {when}: attribute lengths disagree ({n} positions, {len(quats)} "
                                     f"orientations, {len(scales)} scales, {len(opac)} opacities, {len(sh)} SH "
                                     f"for degree {degree})")
    quats = quats[:, [3, 0, 1, 2]].astype(np.float64)
    quats[:, 2:4] *= -1
    sh = sh.reshape(n, k, 3).copy()
    sh[:, 1:] *= SH_FLIP[: k - 1, None]
    opac = np.clip(opac.astype(np.float64), 1e-7, 1 - 1e-7)
    with np.errstate(all="ignore"):
        arrays = SplatArrays(means * POSITION_FLIP, quats, np.log(scales.astype(np.float64)),
                             np.log(opac / (1 - opac)), sh)
    if not arrays.is_finite():
        raise SplatFormatError(path, f"time {when}: holds non-finite values (scales must be positive)")
    return arrays


__all__ = ["SCHEMA", "SUFFIXES", "has_particle_field", "read_usd", "write_usd"]
