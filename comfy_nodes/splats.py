# SPDX-License-Identifier: GPL-3.0-or-later
"""Splat nodes: Load Splat, Render Frozen-Time Views, Render 4D, Save 4D Splats (+ the 4D player)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

import folder_paths
from comfy_api.latest import io

from ..core.cameras import Cameras, cameras_to_dicts, orbit_cameras
from ..core.gaussians import Gaussians, inverse_sigmoid
from ..core.io import Sequence4D, write_sequence, write_spz
from ..core.io.atomic import atomic_folder
from ..core.io.sequence import manifest_dict, manifest_text
from ..core.files import read_any
from ..core.render import render
from .runtime import Steps, torch_device
from .types import CORE_SPLAT, HAS_CORE_SPLAT, Animated4D, Cameras4D, Gaussians4D, SplatType

SPLAT_EXTENSIONS = (".ply", ".splat", ".spz")
RENDER_MODES = ("fixed view", "frozen time", "orbit")
SAVE_FORMATS = ("ply sequence", "spz")


# --- conversions ------------------------------------------------------------------------------

def _is_core_splat(splat) -> bool:
    return all(hasattr(splat, name) for name in ("positions", "scales", "rotations", "opacities", "sh"))


def to_core_gaussians(splat, index: int = 0) -> Gaussians:
    """Our Gaussians, or item `index` of core ComfyUI's Splat batch (activated values, B x N, padded
    to a common N with the real lengths in `counts`)."""
    if isinstance(splat, Gaussians):
        return splat
    if _is_core_splat(splat):
        batch = splat.positions.shape[0]
        if not 0 <= index < batch:
            raise ValueError(f"splat batch item {index} is outside 0..{batch - 1}")
        counts = getattr(splat, "counts", None)
        n = int(counts[index]) if counts is not None else splat.positions.shape[1]

        def item(t: torch.Tensor) -> torch.Tensor:
            return t[index, :n].detach().float().cpu()

        # Same conventions as ours: quaternions wxyz, SH in the 3DGS (INRIA) convention, DC first.
        return Gaussians(means=item(splat.positions), quats=item(splat.rotations),
                         log_scales=item(splat.scales).clamp_min(1e-12).log(),
                         opacity_logits=inverse_sigmoid(item(splat.opacities).reshape(n)),
                         sh=item(splat.sh).reshape(n, -1, 3))
    raise ValueError(f"expected a Gaussian splat (Load Splat, or core ComfyUI's SPLAT); got {type(splat).__name__}")


def to_splat_output(g: Gaussians):
    """What travels on the Splat socket: core ComfyUI's SPLAT (a batch of one) where it exists, ours
    otherwise."""
    if not HAS_CORE_SPLAT:
        return g
    g = g.detach().to(device="cpu", dtype=torch.float32)
    return CORE_SPLAT(positions=g.means[None], scales=g.scales[None],
                      rotations=g.rotations_normalized[None], opacities=g.opacities[:, None][None],
                      sh=g.sh[None], counts=None)


def scene_frame(g: Gaussians) -> tuple[torch.Tensor, float]:
    """A robust centre and radius of a splat (median centre, 90th percentile distance)."""
    means = g.means.detach().float()
    centre = means.median(dim=0).values
    dist = (means - centre).norm(dim=-1)
    radius = float(torch.quantile(dist[:200000], 0.9)) if len(dist) else 1.0
    return centre, max(radius, 1e-3)


def orbit_from(cam: Cameras, centre: torch.Tensor, n: int) -> Cameras:
    """n cameras: `cam` turned around `centre` about its own up axis in n equal steps (a full turn)."""
    w2c = cam.viewmats[0].float()
    up = -w2c[1, :3]  # OpenCV: the camera's y axis points down; its rows are the world axes
    up = up / up.norm().clamp_min(1e-12)
    k = torch.tensor([[0.0, -up[2], up[1]], [up[2], 0.0, -up[0]], [-up[1], up[0], 0.0]])
    mats = []
    for i in range(n):
        angle = 2 * torch.pi * i / n
        R = torch.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)  # Rodrigues
        inv = torch.eye(4)  # the inverse of "rotate by R about centre"
        inv[:3, :3] = R.T
        inv[:3, 3] = centre.float() - R.T @ centre.float()
        mats.append(w2c @ inv)
    return Cameras(torch.stack(mats), cam.Ks[:1].expand(n, 3, 3).clone(), cam.width, cam.height)


def render_images(g: Gaussians, cams: Cameras, steps: Steps | None = None) -> torch.Tensor:
    """[C, H, W, 3] in 0..1 (ComfyUI IMAGE), one camera at a time so interrupts stay quick; on
    ComfyUI's device (gsplat on CUDA, the core's PyTorch rasterizer on the CPU)."""
    g = g.to(torch_device())
    out = []
    for i in range(len(cams)):
        if steps is not None:
            steps.check()
        with torch.no_grad():
            out.append(render(g, cams[i:i + 1]).rgb.clamp(0, 1).float().cpu())
        if steps is not None:
            steps.done()
    return torch.cat(out, dim=0)


# --- nodes --------------------------------------------------------------------------------------

def _input_splats() -> list[str]:
    root = Path(folder_paths.get_input_directory())
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in SPLAT_EXTENSIONS)


class LoadSplat(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DLoadSplat",
            display_name="Load Splat",
            category="Fuse4D/splat",
            description="A static 3D Gaussian splat (.ply from 3DGS, gsplat, nerfstudio, Postshot, "
                        "SuperSplat; .splat, .spz) from ComfyUI's input folder.",
            inputs=[io.Combo.Input("splat", options=_input_splats(), upload=io.UploadType.model)],
            outputs=[SplatType.Output(display_name="splat")],
        )

    @classmethod
    def validate_inputs(cls, splat):
        if not folder_paths.exists_annotated_filepath(splat):
            return f"splat file not found in the input folder: {splat}"
        return True

    @classmethod
    def fingerprint_inputs(cls, splat):
        path = folder_paths.get_annotated_filepath(splat)
        return os.path.getmtime(path) if os.path.exists(path) else splat

    @classmethod
    def execute(cls, splat) -> io.NodeOutput:
        # the name must not climb out ('..', absolute); files the user linked into the folders still load
        path = Path(os.path.abspath(folder_paths.get_annotated_filepath(splat)))
        roots = [Path(os.path.abspath(folder_paths.get_directory_by_type(t))) for t in ("input", "output", "temp")]
        if not any(root in path.parents for root in roots):
            raise ValueError(f"{splat}: a splat must lie inside ComfyUI's input, output or temp folder")
        data = read_any(path)
        if isinstance(data, Sequence4D):
            raise ValueError(f"{splat} is a 4D sequence; Load Splat reads one static splat")
        return io.NodeOutput(to_splat_output(Gaussians.from_arrays(data)))


class SplatFrame4D(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DSplatFrame",
            display_name="4D Splat Frame",
            category="Fuse4D/splat",
            description="One timestep of animated Gaussians as a static splat: for Render Frozen-Time "
                        "Views, or (in ComfyUI releases with a core Splat type) its own splat nodes.",
            inputs=[Gaussians4D.Input("gaussians"),
                    io.Int.Input("timestep", default=0, min=0, max=4096)],
            outputs=[SplatType.Output(display_name="splat")],
        )

    @classmethod
    def execute(cls, gaussians: Animated4D, timestep) -> io.NodeOutput:
        if not 0 <= timestep < len(gaussians):
            raise ValueError(f"timestep {timestep} is outside 0..{len(gaussians) - 1}")
        return io.NodeOutput(to_splat_output(gaussians.frames[timestep]))


class RenderFrozenTimeViews(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DRenderFrozenTimeViews",
            display_name="Render Frozen-Time Views",
            category="Fuse4D/splat",
            description="Render V views of a static splat on an orbit: the frozen-time row that starts "
                        "'animate a captured scene'.",
            inputs=[
                SplatType.Input("splat"),
                io.Int.Input("views", default=4, min=1, max=64),
                io.Int.Input("width", default=480, min=16, max=4096, step=16),
                io.Int.Input("height", default=288, min=16, max=4096, step=16),
                io.Float.Input("radius", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="0: 2.2 x the scene's radius"),
                io.Float.Input("elevation_deg", default=15.0, min=-89.0, max=89.0),
                io.Float.Input("arc_deg", default=60.0, min=0.0, max=360.0),
                io.Float.Input("fov_deg", default=50.0, min=5.0, max=150.0),
                io.String.Input("cameras_json", default="", multiline=True, optional=True,
                                tooltip="optional: a JSON list of cameras (OpenCV world-to-camera 'viewmat', "
                                        "'K', 'width', 'height') to render from instead of the orbit, e.g. a "
                                        "Blender rig; images are rendered at width x height"),
            ],
            outputs=[io.Image.Output(display_name="images"), Cameras4D.Output(display_name="cameras")],
        )

    @classmethod
    def execute(cls, splat, views, width, height, radius, elevation_deg, arc_deg, fov_deg,
                cameras_json: str = "") -> io.NodeOutput:
        g = to_core_gaussians(splat)
        if cameras_json and cameras_json.strip():
            cams = cameras_from_json(cameras_json, width, height)
        else:
            centre, extent = scene_frame(g)
            cams = orbit_cameras(views, radius or 2.2 * extent, elevation_deg, arc_deg, target=centre.tolist(),
                                 fov_deg=fov_deg, width=width, height=height)
        return io.NodeOutput(render_images(g, cams, Steps(len(cams))), cams)


def cameras_from_json(text: str, width: int, height: int) -> Cameras:
    """Cameras given as JSON (the sequence manifest's / the Blender job's entries), resized to
    width x height."""
    from ..core.cameras import cameras_from_json_text

    try:
        cams = cameras_from_json_text(text)
    except ValueError as exc:
        raise ValueError(f"cameras_json must be a JSON list of cameras with viewmat, K, width and height ({exc})") \
            from None
    return cams.resized(width, height)


class Render4D(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DRender4D",
            display_name="Render 4D",
            category="Fuse4D/splat",
            description="Render animated Gaussians: one view over time, all views at one instant, or an "
                        "orbit while time plays. Runs on the CPU when there is no GPU.",
            inputs=[
                Gaussians4D.Input("gaussians"),
                io.Combo.Input("mode", options=list(RENDER_MODES), default="fixed view"),
                io.Int.Input("index", default=0, min=0, max=4096,
                             tooltip="fixed view / orbit: the view (orbit starts there); frozen time: the timestep"),
                io.Int.Input("width", default=0, min=0, max=4096, step=16, tooltip="0: the cameras' size"),
                io.Int.Input("height", default=0, min=0, max=4096, step=16),
                Cameras4D.Input("cameras", optional=True, tooltip="other cameras than the reconstructed"),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, gaussians: Animated4D, mode, index, width, height, cameras=None) -> io.NodeOutput:
        cams = cameras if cameras is not None else gaussians.cameras
        frames = gaussians.frames
        if mode == "orbit":
            centre, extent = scene_frame(frames[0])
            if cams is not None:  # a full turn around the scene, starting at camera `index`
                if not 0 <= index < len(cams):
                    raise ValueError(f"view {index} is outside 0..{len(cams) - 1}")
                cams = orbit_from(cams[index:index + 1], centre, len(frames))
                cams = cams.resized(width or cams.width, height or cams.height)
            else:
                cams = orbit_cameras(len(frames), 2.2 * extent, 15.0, 360.0, target=centre.tolist(),
                                     width=width or 256, height=height or 256)
            steps = Steps(len(frames))
            out = []
            for t, g in enumerate(frames):
                out.append(render_images(g, cams[t:t + 1], steps))
            return io.NodeOutput(torch.cat(out))
        if cams is None:
            raise ValueError("these Gaussians carry no cameras; connect cameras or use mode 'orbit'")
        cams = cams.resized(width or cams.width, height or cams.height)
        if mode == "fixed view":
            if not 0 <= index < len(cams):
                raise ValueError(f"view {index} is outside 0..{len(cams) - 1}")
            steps = Steps(len(frames))
            return io.NodeOutput(torch.cat([render_images(g, cams[index:index + 1], steps) for g in frames]))
        if mode == "frozen time":
            if not 0 <= index < len(frames):
                raise ValueError(f"timestep {index} is outside 0..{len(frames) - 1}")
            return io.NodeOutput(render_images(frames[index], cams, Steps(len(cams))))
        raise ValueError(f"unknown render mode {mode!r}; choose from {RENDER_MODES}")


def sequence_of(anim: Animated4D) -> Sequence4D:
    cams = cameras_to_dicts(anim.cameras) if anim.cameras is not None else None
    return Sequence4D(frames=[g.detach().to_arrays() for g in anim.frames], fps=float(anim.fps),
                      views=len(anim.cameras) if anim.cameras is not None else 0, cameras=cams,
                      corresponding=anim.corresponding, extra=dict(anim.extra))


def write_spz_sequence(folder: Path, seq: Sequence4D, steps: Steps) -> None:
    manifest = manifest_dict(seq)
    with atomic_folder(folder) as tmp:
        for t, (frame, entry) in enumerate(zip(seq.frames, manifest["frames"])):
            steps.check()
            entry["file"] = f"frame_{t:04d}.spz"
            write_spz(tmp / entry["file"], frame)
            steps.done()
        (tmp / "manifest.json").write_text(manifest_text(manifest))


class Save4DSplats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DSave4DSplats",
            display_name="Save 4D Splats",
            category="Fuse4D/splat",
            description="Save animated Gaussians into the output folder (one PLY per timestep + "
                        "manifest.json, or .spz per timestep) and play them in the node's 4D player.",
            inputs=[
                Gaussians4D.Input("gaussians"),
                io.String.Input("filename_prefix", default="fuse4d/splats"),
                io.Combo.Input("format", options=list(SAVE_FORMATS), default="ply sequence"),
                io.Float.Input("fps", default=0.0, min=0.0, max=120.0, tooltip="0: keep the sequence's fps"),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, gaussians: Animated4D, filename_prefix, format, fps) -> io.NodeOutput:
        if not len(gaussians):
            raise ValueError("no timesteps to save")
        output_dir = folder_paths.get_output_directory()
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
        name = f"{filename}_{counter:05}_"
        folder = Path(full_folder) / name
        seq = sequence_of(gaussians)
        if fps > 0:
            seq.fps = float(fps)
        steps = Steps(len(seq.frames))
        if format == "spz":
            write_spz_sequence(folder, seq, steps)
        elif format == "ply sequence":
            steps.check()
            write_sequence(folder, seq, progress=steps.tick)  # interruptible between timesteps
        else:
            raise ValueError(f"unknown format {format!r}; choose from {SAVE_FORMATS}")
        manifest = json.loads((folder / "manifest.json").read_text())
        sub = f"{subfolder}/{name}" if subfolder else name
        ui = {"fuse4d_splats": [{
            "subfolder": sub, "type": "output", "manifest": "manifest.json",
            "files": [f["file"] for f in manifest["frames"]], "fps": manifest["fps"],
            "views": manifest["views"], "format": "spz" if format == "spz" else "ply",
        }]}
        return io.NodeOutput(ui=ui)


def _input_sequences() -> list[str]:
    root = Path(folder_paths.get_input_directory())
    if not root.exists():
        return []
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("manifest.json"))


class Load4DSplats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DLoad4DSplats",
            display_name="Load 4D Splats",
            category="Fuse4D/splat",
            description="A 4D splat sequence (folder with manifest.json + one PLY or .spz per timestep) "
                        "from the input folder, to re-render or re-save it.",
            inputs=[io.Combo.Input("sequence", options=_input_sequences())],
            outputs=[Gaussians4D.Output(display_name="gaussians")],
        )

    @classmethod
    def execute(cls, sequence) -> io.NodeOutput:
        from ..core.cameras import cameras_from_dicts
        from ..core.io import read_manifest

        root = Path(folder_paths.get_input_directory()).resolve()
        folder = (root / sequence).resolve()
        if root not in folder.parents or not (folder / "manifest.json").exists():
            raise ValueError(f"no 4D splat sequence (manifest.json) at input/{sequence}")
        manifest = read_manifest(folder)  # validated: format, frames, fps, cameras
        names = [entry["file"] for entry in manifest["frames"]]  # checked to stay inside the folder
        steps = Steps(len(names))
        frames = []
        for name in names:  # .ply (the 4D format) or .spz (Save 4D Splats, format spz)
            steps.check()
            frames.append(Gaussians.from_arrays(read_any(folder / name)))
            steps.done()
        cams = cameras_from_dicts(manifest["cameras"]) if manifest.get("cameras") else None
        return io.NodeOutput(Animated4D(frames=frames, cameras=cams, fps=float(manifest.get("fps", 8.0)),
                                        corresponding=bool(manifest.get("corresponding")),
                                        extra=dict(manifest.get("extra") or {})))
