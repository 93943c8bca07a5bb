# SPDX-License-Identifier: GPL-3.0-or-later
"""What `fuse4d render-dataset` renders, decided without Blender: the assets of a folder, which shard
each belongs to, and per sample its camera rig, time window, lighting, background and caption.

Everything here is a pure function of (asset path relative to the asset root, sample index, seed,
settings), so shards are independent and a resumed or re-run shard plans exactly the same samples.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ASSET_EXTENSIONS = (".glb", ".gltf", ".fbx", ".blend")
LIGHTINGS = ("studio", "sun", "ambient", "random")
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5)}


@dataclass(frozen=True)
class RenderSettings:
    """The dataset-wide choices (recorded in render_dataset.json; a resumed run must match them)."""
    views: int = 4
    frames: int = 9               # pixel frames per view (1 + 4k suits Wan's causal VAE)
    heldout: int = 2              # held-out cameras in the gaps of the arc (the reconstructor's targets)
    width: int = 256
    height: int = 256
    arc_samples: int = 3          # samples per asset on a fixed arc (a dynamic V x T grid)
    frozen_samples: int = 1       # samples per asset with time frozen (a static grid, the "3D video" kind)
    arc_deg: float = 90.0         # the views span this arc, centred on a random azimuth
    elevation: tuple[float, float] = (-5.0, 30.0)  # degrees, drawn per sample
    radius: tuple[float, float] = (2.0, 2.6)       # camera distance, in units of the normalised object
    fov_deg: float = 40.0         # vertical field of view
    frame_step: float = 2.0       # asset frames between rendered frames (shrinks for short animations)
    lighting: str = "random"
    background: str = "white"     # white / black / grey / random / R,G,B in 0..1
    engine: str = "cycles"        # cycles / eevee
    samples: int = 16             # render samples per pixel
    depth: bool = True            # also write depth.safetensors (the render's Z pass, camera z)
    seed: int = 0

    def check(self) -> None:
        if self.views < 1 or self.frames < 1:
            raise ValueError("--views and --frames must be at least 1")
        if self.heldout < 0 or self.arc_samples < 0 or self.frozen_samples < 0:
            raise ValueError("--heldout, --arc-samples and --frozen-samples must be >= 0")
        if self.arc_samples + self.frozen_samples < 1:
            raise ValueError("nothing to render: --arc-samples and --frozen-samples are both 0")
        if self.lighting not in LIGHTINGS:
            raise ValueError(f"--lighting {self.lighting!r}: choose one of {', '.join(LIGHTINGS)}")
        if self.engine not in ("cycles", "eevee"):
            raise ValueError(f"--engine {self.engine!r}: choose cycles or eevee")
        parse_background(self.background, np.random.default_rng(0))
        lo, hi = self.radius
        if not 0 < lo <= hi:
            raise ValueError(f"--radius {lo},{hi}: need 0 < min <= max")
        if not 0 < self.fov_deg < 170 or self.frame_step <= 0 or self.samples < 1:
            raise ValueError("--fov must be in (0, 170), --frame-step > 0 and --samples >= 1")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "RenderSettings":
        d = dict(d)
        for k in ("elevation", "radius"):
            d[k] = tuple(d[k])
        return cls(**d)


def parse_background(text: str, rng: np.random.Generator) -> tuple[float, float, float]:
    if text in BACKGROUNDS:
        return BACKGROUNDS[text]
    if text == "random":  # a light or dark grey, or a pale colour
        base = float(rng.uniform(0.0, 1.0))
        return tuple(float(np.clip(base + rng.uniform(-0.1, 0.1), 0, 1)) for _ in range(3))
    try:
        rgb = tuple(float(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise ValueError(f"--background {text!r}: white, black, grey, random or R,G,B with values in 0..1")
    return rgb


# ---------------------------------------------------------------- assets and shards

def find_assets(root: str | Path) -> list[str]:
    """Asset files under `root` (recursively), as sorted POSIX paths relative to it. A file given
    instead of a folder is its own one-asset root."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in ASSET_EXTENSIONS:
            raise ValueError(f"{root}: not an asset ({', '.join(ASSET_EXTENSIONS)})")
        return [root.name]
    if not root.is_dir():
        raise FileNotFoundError(f"asset folder not found: {root}")
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in ASSET_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise ValueError(f"{root}: no assets ({', '.join(ASSET_EXTENSIONS)})")
    return found


def asset_root(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.is_file() else path


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not int(m.group(2)) >= 1 or not int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/8")
    return int(m.group(1)), int(m.group(2))


def shard_of(relpath: str, count: int) -> int:
    """An asset's shard depends on its own path only: adding assets never moves the others."""
    return _digest(f"shard|{relpath}") % count


def sample_name(relpath: str, index: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "_", Path(relpath).stem).strip("_")[:40] or "asset"
    return f"{stem}-{_digest(relpath) % 16 ** 8:08x}-{index:02d}"


# ---------------------------------------------------------------- per-sample plans

@dataclass
class SamplePlan:
    name: str
    asset: str                  # relative path
    index: int
    kind: str                   # "arc" (dynamic) or "frozen" (time frozen at one frame)
    blender_views: list[dict]   # Blender camera settings (core.cameras.to_blender) of the V views
    blender_heldout: list[dict]
    views: list[dict]           # the same cameras in the dataset's OpenCV world (cameras_to_dicts)
    heldout: list[dict]
    time_offset: float          # where the clip starts within the animation, 0..1
    background: tuple[float, float, float]
    lights: list[dict]
    ambient: float
    seed: int

    def job(self) -> dict:
        """What the Blender worker needs for this sample."""
        return {"name": self.name, "kind": self.kind, "views": self.blender_views,
                "heldout": self.blender_heldout, "time_offset": self.time_offset, "lights": self.lights,
                "ambient": self.ambient}


def _lights(kind: str, rng: np.random.Generator) -> tuple[list[dict], float]:
    """Lights in the normalised Blender world (z up, object at the origin) + ambient world strength."""
    if kind == "random":
        kind = str(rng.choice(["studio", "sun", "ambient"], p=[0.5, 0.35, 0.15]))
    spin = float(rng.uniform(0, 2 * math.pi))
    if kind == "ambient":
        return [], float(rng.uniform(0.8, 1.2))
    if kind == "sun":
        el = math.radians(float(rng.uniform(25, 70)))
        direction = [math.cos(el) * math.cos(spin), math.cos(el) * math.sin(spin), math.sin(el)]
        return [{"type": "SUN", "direction": direction, "energy": float(rng.uniform(2.5, 4.0)),
                 "color": [1.0, float(rng.uniform(0.9, 1.0)), float(rng.uniform(0.8, 1.0))]}], 0.35
    # studio: key, fill and rim area lights around the object
    out = []
    for az, el, energy, size in ((0.0, 35.0, 60.0, 1.5), (2.2, 15.0, 25.0, 2.5), (3.6, 50.0, 35.0, 1.0)):
        a, e = spin + az, math.radians(el)
        d = 3.0
        out.append({"type": "AREA", "location": [d * math.cos(e) * math.cos(a), d * math.cos(e) * math.sin(a),
                                                 d * math.sin(e)],
                    "energy": energy * float(rng.uniform(0.8, 1.2)), "size": size, "color": [1.0, 1.0, 1.0]})
    return out, 0.25


def plan_sample(relpath: str, index: int, settings: RenderSettings) -> SamplePlan:
    import torch

    from ..cameras import Cameras, cameras_to_dicts, intrinsics_from_fov, look_at, to_blender

    s = settings
    seed = _digest(f"sample|{s.seed}|{relpath}|{index}") % 2 ** 31
    rng = np.random.default_rng(seed)
    kind = "arc" if index < s.arc_samples else "frozen"
    centre_az = float(rng.uniform(0.0, 360.0))
    elevation = float(rng.uniform(*s.elevation))
    radius = float(rng.uniform(*s.radius))

    def ring(azimuths, elevations):
        viewmats = []
        for az, el in zip(azimuths, elevations):
            a, e = math.radians(az), math.radians(el)
            # OpenCV world, y down: the horizontal plane is x-z, up is -y.
            eye = [radius * math.cos(e) * math.sin(a), -radius * math.sin(e), -radius * math.cos(e) * math.cos(a)]
            viewmats.append(look_at(eye, (0.0, 0.0, 0.0)))
        K = intrinsics_from_fov(s.fov_deg, s.width, s.height)
        n = len(viewmats)
        if n == 0:
            return Cameras(torch.zeros(0, 4, 4), torch.zeros(0, 3, 3), s.width, s.height)
        return Cameras(torch.stack(viewmats), K.expand(n, 3, 3).clone(), s.width, s.height)

    V = s.views
    view_az = [centre_az + (s.arc_deg * (i / (V - 1) - 0.5) if V > 1 else 0.0) for i in range(V)]
    if V > 1 and s.heldout <= V - 1:  # in the gaps between neighbouring views
        gaps = rng.choice(V - 1, size=s.heldout, replace=False)
        held_az = [(view_az[g] + view_az[g + 1]) / 2 for g in sorted(gaps)]
    else:
        held_az = [float(centre_az + rng.uniform(-0.5, 0.5) * s.arc_deg) for _ in range(s.heldout)]
    held_el = [min(elevation + 10.0, 85.0)] * len(held_az)
    views, held = ring(view_az, [elevation] * V), ring(held_az, held_el)
    lights, ambient = _lights(s.lighting, rng)
    background = parse_background(s.background, rng)
    return SamplePlan(name=sample_name(relpath, index), asset=relpath, index=index, kind=kind,
                      blender_views=to_blender(views), blender_heldout=to_blender(held) if len(held) else [],
                      views=cameras_to_dicts(views), heldout=cameras_to_dicts(held) if len(held) else [],
                      time_offset=float(rng.uniform(0.0, 1.0)), background=background, lights=lights,
                      ambient=ambient, seed=seed)


def plan_asset(relpath: str, settings: RenderSettings) -> list[SamplePlan]:
    return [plan_sample(relpath, k, settings) for k in range(settings.arc_samples + settings.frozen_samples)]


# ---------------------------------------------------------------- captions

_CAPTION_KEYS = ("caption", "description", "title", "name")


def _gltf_json(path: Path) -> dict:
    """The JSON of a .gltf, or of a .glb's first chunk."""
    data = path.read_bytes()
    if path.suffix.lower() == ".gltf":
        return json.loads(data.decode("utf-8"))
    if len(data) < 20 or data[:4] != b"glTF":
        raise ValueError(f"{path}: not a binary glTF (bad magic)")
    length, kind = struct.unpack_from("<II", data, 12)
    if kind != 0x4E4F534A:  # "JSON"
        raise ValueError(f"{path}: the first glTF chunk is not JSON")
    return json.loads(data[20:20 + length].decode("utf-8"))


def gltf_facts(path: str | Path) -> dict:
    """What a glTF file says without Blender: a caption in its extras, whether it has animations, and
    external images that are missing (the importer would silently render them untextured)."""
    path = Path(path)
    doc = _gltf_json(path)
    caption = ""
    extras = [doc.get("asset", {}).get("extras")]
    scenes = doc.get("scenes") or []
    if scenes:
        extras.append(scenes[int(doc.get("scene", 0)) if int(doc.get("scene", 0)) < len(scenes) else 0].get("extras"))
    for ex in extras:
        if isinstance(ex, dict):
            caption = next((str(ex[k]).strip() for k in _CAPTION_KEYS if str(ex.get(k, "")).strip()), "")
            if caption:
                break
    missing = []
    for image in doc.get("images") or []:
        uri = image.get("uri")
        if uri and not uri.startswith("data:"):
            from urllib.parse import unquote

            if not (path.parent / unquote(uri)).is_file():
                missing.append(unquote(uri))
    return {"caption": caption, "animations": len(doc.get("animations") or []), "missing_images": missing}


def sidecar_caption(root: Path, relpath: str) -> str:
    """`<stem>.txt` beside the asset, else the asset's entry in `captions.json` at the asset root."""
    asset = root / relpath
    side = asset.with_suffix(".txt")
    if side.is_file():
        return side.read_text(encoding="utf-8").strip()
    table = root / "captions.json"
    if table.is_file():
        captions = json.loads(table.read_text(encoding="utf-8"))
        for key in (relpath, asset.name, asset.stem):
            if str(captions.get(key, "")).strip():
                return str(captions[key]).strip()
    return ""


def name_caption(relpath: str, action: str = "") -> str:
    """A caption from the file name (and the animation's name): 'fox_Walk-01.glb' -> 'an animated fox'."""
    def words(text: str) -> str:
        text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
        text = re.sub(r"[^A-Za-z]+", " ", text).strip().lower()
        return re.sub(r"\s+", " ", text)

    name = words(Path(relpath).stem) or "object"
    filler = {"action", "animation", "anim", "take", "scene", "armature", "rig", "mixamo", "com", "layer",
              "default", "clip", "baked"}
    extra = [w for w in words(action).split() if w not in filler and w not in name.split()]
    return f"an animated {name}, {' '.join(extra)}" if extra else f"an animated {name}"
