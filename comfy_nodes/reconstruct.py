# SPDX-License-Identifier: GPL-3.0-or-later
"""Load Reconstructor and Reconstruct 4D Gaussians (the feed-forward VGGT-based reconstructor)."""
from __future__ import annotations

import os

import torch

import comfy.model_management
import comfy.model_patcher
import folder_paths
from comfy_api.latest import io

from .runtime import Steps
from .types import Animated4D, Cameras4D, GridInfo, Grid4D, Gaussians4D, Reconstructor

FOLDERS = ("fuse4d", "vggt")
WEIGHT_EXTENSIONS = {".safetensors"}
VGGT_NONCOMMERCIAL = (
    "VGGT-1B weights (facebook/VGGT-1B) are licensed CC BY-NC 4.0: non-commercial use only. "
    "For commercial use take facebook/VGGT-1B-Commercial (its own licence) or Fuse4D checkpoints "
    "trained by you."
)
VGGT_COMMERCIAL = ("VGGT-1B-Commercial weights (facebook/VGGT-1B-Commercial): commercial use under the "
                   "licence that came with them; check its terms before use.")
OWN_WEIGHTS = ("Fuse4D checkpoint: licensed by whoever trained it (Fuse4D's code is GPL-3.0-or-later). "
               "If it was fine-tuned from VGGT-1B, VGGT-1B's CC BY-NC 4.0 terms carry over.")


def register_folders() -> None:
    """models/fuse4d and models/vggt, with the extensions we read (safetensors only, never pickles)."""
    for name in FOLDERS:
        path = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[name]
            if path not in paths:
                paths.append(path)
            folder_paths.folder_names_and_paths[name] = (paths, set(exts) | WEIGHT_EXTENSIONS)
        else:
            folder_paths.folder_names_and_paths[name] = ([path], set(WEIGHT_EXTENSIONS))


def reconstructor_files() -> list[str]:
    register_folders()
    return [f"{folder}/{name}" for folder in FOLDERS for name in folder_paths.get_filename_list(folder)]


def licence_for(path: str, name: str) -> str:
    """What the file is, read from its safetensors header (core.recon.checkpoint), and its licence."""
    from ..core.recon.checkpoint import inspect

    info = inspect(path)
    stated = info.metadata.get("licence") or info.metadata.get("license")
    if info.metadata.get("config"):
        return OWN_WEIGHTS + (f" The file states: {stated}" if stated else "")
    if stated:
        return f"The file states its licence: {stated}"
    if info.is_vggt_1b:
        # VGGT-1B and VGGT-1B-Commercial have the same keys: only the name tells them apart.
        return VGGT_COMMERCIAL if "commercial" in name.lower() else VGGT_NONCOMMERCIAL
    return "Unknown weights (neither a Fuse4D checkpoint nor VGGT-1B): " + VGGT_NONCOMMERCIAL


def _recon_api():
    try:
        from ..core import recon
    except ImportError as e:
        raise RuntimeError("Fuse4D's reconstructor (fuse4d.core.recon) is not available in this install: "
                           f"{e}") from e
    return recon


class ReconstructorHandle:
    """A reconstructor under ComfyUI's model management (moved to the GPU when used, offloaded after)."""

    def __init__(self, model: torch.nn.Module, name: str):
        self.name = name
        self.patcher = comfy.model_patcher.ModelPatcher(
            model, load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device())

    def load(self, memory_required: int = 0) -> torch.nn.Module:
        """On the GPU in full (a partial load would leave the camera tokens and normalisation buffers on
        the CPU), with room freed for `memory_required` bytes of activations."""
        comfy.model_management.load_models_gpu([self.patcher], memory_required=memory_required,
                                               force_full_load=True)
        return self.patcher.model


class LoadReconstructor(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DLoadReconstructor",
            display_name="Load Reconstructor",
            category="Fuse4D/reconstruct",
            description="The feed-forward 4D Gaussian reconstructor (VGGT backbone + Gaussian head) from "
                        "models/fuse4d or models/vggt (.safetensors). " + VGGT_NONCOMMERCIAL,
            inputs=[io.Combo.Input("weights", options=reconstructor_files(),
                                   tooltip="VGGT-1B is CC BY-NC (non-commercial); VGGT-1B-Commercial exists")],
            outputs=[Reconstructor.Output(display_name="reconstructor"), io.String.Output(display_name="licence")],
        )

    @classmethod
    def execute(cls, weights) -> io.NodeOutput:
        register_folders()
        folder, _, name = weights.partition("/")
        if folder not in FOLDERS or not name:
            raise ValueError(f"pick a file from models/fuse4d or models/vggt; got {weights!r}")
        path = folder_paths.get_full_path(folder, name)
        if path is None:
            raise ValueError(f"reconstructor weights not found: models/{weights}")
        recon = _recon_api()
        licence = licence_for(path, weights)
        model = recon.load_reconstructor(path, device="cpu")
        return io.NodeOutput(ReconstructorHandle(model, weights), licence, ui={"text": [licence]})


class Reconstruct4DGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DReconstruct4DGaussians",
            display_name="Reconstruct 4D Gaussians",
            category="Fuse4D/reconstruct",
            description="Feed-forward reconstruction of a V views x T frames IMAGE grid (view-major) "
                        "into one Gaussian set per timestep, in the first camera's frame, plus V cameras.",
            inputs=[
                Reconstructor.Input("reconstructor"),
                io.Image.Input("images"),
                io.Int.Input("views", default=0, min=0, max=64, tooltip="0: take it from the grid input"),
                Grid4D.Input("grid", optional=True),
                io.Float.Input("fps", default=8.0, min=0.1, max=120.0),
                Cameras4D.Input("cameras", optional=True,
                                tooltip="the known cameras of the V views (e.g. Render Frozen-Time Views): "
                                        "the Gaussians come out aligned with that world (the captured scene)"),
            ],
            outputs=[Gaussians4D.Output(display_name="gaussians")],
        )

    @classmethod
    def execute(cls, reconstructor: ReconstructorHandle, images, views, grid: GridInfo | None = None,
                fps: float = 8.0, cameras=None) -> io.NodeOutput:
        if grid is None and views < 1:
            raise ValueError("give the number of views (or connect the grid from Decode 4D Grid)")
        v = views or grid.views
        count = images.shape[0]
        if count % v:
            raise ValueError(f"IMAGE holds {count} images, not V x T for V={v} views")
        if grid is not None and views in (0, grid.views):
            grid.check_count(count)
        if cameras is not None and len(cameras) != v:
            raise ValueError(f"{len(cameras)} known cameras for {v} views; give one camera per view")
        t = count // v
        cube = images[..., :3].reshape(v, t, *images.shape[1:3], 3).permute(0, 1, 4, 2, 3).contiguous()
        api = _recon_api()
        model = reconstructor.load(api.inference_memory(reconstructor.patcher.model, v, t, *images.shape[1:3]))
        steps = Steps(t)
        frames, predicted = api.reconstruct_grid(model, cube, progress=steps.tick, check=steps.check)
        frames = [g.detach().to("cpu") for g in frames]
        predicted = predicted.to("cpu")
        extra = {"reconstructor": reconstructor.name}
        if cameras is not None:
            from ..core.recon.align import align_frames

            frames, align = align_frames(frames, predicted, cameras)
            predicted = cameras
            extra["alignment"] = align.tolist()
        return io.NodeOutput(Animated4D(frames=frames, cameras=predicted, fps=fps, extra=extra))
