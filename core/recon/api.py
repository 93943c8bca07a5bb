# SPDX-License-Identifier: GPL-3.0-or-later
"""The reconstructor's public entry points, for the ComfyUI nodes, the demo and the CLI:
load a weights file, reconstruct a V x T grid, write tiny random weights for tests.

Weights and licences: facebook/VGGT-1B is CC BY-NC 4.0 (non-commercial); facebook/VGGT-1B-Commercial
is the checkpoint for commercial use (its own licence); Fuse4D checkpoints carry their config."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..cameras import Cameras
from ..gaussians import Gaussians
from .checkpoint import file_config
from .config import tiny
from .frames import fit_to_patch
from .model import VGGT4D
from .model_api import save_reconstructor
from .oom import run_or_fail_clearly, run_with_oom_retry
from .weights import load_vggt_weights


def load_reconstructor(path: str | Path, device: str | torch.device = "cpu") -> VGGT4D:
    """A VGGT-1B / VGGT-1B-Commercial model.safetensors (full config, analytic Gaussians) or a Fuse4D
    checkpoint (config from its metadata), in eval mode on `device`. Raises WeightsError for any
    other file, listing what does not fit. `model.load_report` tells what was loaded."""
    cfg = file_config(path)
    model = VGGT4D(cfg)
    # the config was read from the file, so every parameter of the model must be in it
    model.load_report = load_vggt_weights(model, path, strict_additions=True)
    return model.to(device).eval()


def uses_head(model: VGGT4D, analytic: bool | None) -> bool:
    """analytic=None: the Gaussian head when the model has one, the analytic mode otherwise."""
    if analytic is None:
        return model.gaussian_head is not None
    return not analytic and model.gaussian_head is not None


@torch.no_grad()
def reconstruct_timesteps(model: torch.nn.Module, images: torch.Tensor, progress: Callable[[], object] | None = None,
                          analytic: bool | None = None, width: int | None = None,
                          check: Callable[[], object] | None = None) -> tuple[list[Gaussians], list[Cameras]]:
    """`reconstruct_grid` with the cameras of every timestep (identical across time with camera token
    replacement; without it each timestep predicts its own)."""
    model = getattr(model, "module", model)
    if images.dim() != 5 or images.shape[2] != 3:
        raise ValueError(f"expected images [V, T, 3, H, W], got {tuple(images.shape)}")
    param = next(model.parameters())
    x = fit_to_patch(images.to(param.device, torch.float32), width or model.cfg.img_size, model.cfg.patch_size)
    grid = x[None]                                                     # [1, V, T, 3, H, W]
    _, V, T, _, H, W = grid.shape
    head = uses_head(model, analytic)
    heads = ("camera", "depth", "gaussian") if head else ("camera", "depth")
    layers = run_or_fail_clearly(lambda: model.encode(grid, after_layer=check), (
        f"out of memory in the backbone at {W}x{H} ({V} views x {T} timesteps; its attention spans every "
        "frame, so it is not chunked); try a smaller width (fuse4d reconstruct --width), fewer views or "
        "fewer timesteps"))
    frames: list[Gaussians] = []
    cameras: list[Cameras] = []
    chunk = min(V, model.cfg.dpt_frames_chunk or V)    # the heads' frames per chunk; halved on OOM
    failure = (f"out of memory even with 1 frame per chunk at {W}x{H} ({V} views x {T} timesteps); "
               "try a smaller width (fuse4d reconstruct --width) or fewer views")
    for t in range(T):
        def decode(c: int, t: int = t) -> dict:
            return model.decode(layers, H, W, heads, timesteps=slice(t, t + 1), frames_chunk=c)

        out, chunk = run_with_oom_retry(decode, chunk, failure)   # later timesteps keep the smaller chunk
        frames.append(model.gaussians(grid[:, :, t:t + 1], out, analytic=not head)[0][0])
        cameras.append(model.cameras(out, W, H)[0][0])
        if progress is not None:
            progress()
    return frames, cameras


def inference_memory(model: torch.nn.Module, views: int, timesteps: int, height: int, width: int,
                     target_width: int | None = None) -> int:
    """Bytes of activations `reconstruct_grid` needs on the GPU beyond the weights (an estimate with a
    margin, for a memory manager to free room before loading): the backbone's kept layers (half
    precision, then fp32), its running activations over all V*T frames, and the heads on one timestep."""
    from .frames import target_size

    model = getattr(model, "module", model)
    cfg = model.cfg
    H, W = target_size(height, width, target_width or cfg.img_size, cfg.patch_size)
    frames = views * timesteps
    tokens = frames * (1 + cfg.num_register_tokens + (H // cfg.patch_size) * (W // cfg.patch_size))
    c = cfg.embed_dim
    kept = len(cfg.kept_layers()) * tokens * 2 * c * 2  # kept in half precision
    running = tokens * c * 30                  # residual stream (fp32) + qkv and MLP hidden (half)
    chunk = min(views, cfg.dpt_frames_chunk or views)
    heads = chunk * H * W * (cfg.dpt_features // 2) * 4 * 3  # full-resolution maps of the DPT's last stage
    return int(1.2 * (kept + running + heads))


def reconstruct_grid(model: torch.nn.Module, images: torch.Tensor, progress: Callable[[], object] | None = None,
                     analytic: bool | None = None, width: int | None = None,
                     check: Callable[[], object] | None = None) -> tuple[list[Gaussians], Cameras]:
    """images [V, T, 3, H, W] in [0, 1], any size (resized to `width`, default the model's img_size,
    with a patch-multiple height, like the CLI) -> (T Gaussians, one per timestep, of all V views in
    the first camera's frame; Cameras of the V views at the size the Gaussians were made for).
    The backbone runs once over the grid (out of memory there: ReconstructionOutOfMemory at once), then
    the heads per timestep (out of memory there: retried with half the frames per chunk down to one,
    then ReconstructionOutOfMemory); `progress()` is called with
    no arguments after each timestep (it may raise to interrupt), `check()` after each backbone layer
    (it may raise: an interrupt within one layer of the backbone pass). analytic=None: the Gaussian
    head if the model has one, Gaussians from depth and pixels otherwise."""
    frames, cameras = reconstruct_timesteps(model, images, progress, analytic, width, check)
    return frames, cameras[0]


def write_tiny_reconstructor(path: str | Path, seed: int = 0) -> Path:
    """Random weights of the tiny configuration (Gaussian head and temporal layers included) with
    their config in the metadata: a loadable reconstructor for tests. Reconstructs nothing useful."""
    from .model_api import init_from_scratch

    torch.manual_seed(seed)
    model = VGGT4D(tiny())
    init_from_scratch(model, depth=3.2, fov=0.785)   # sane depths and cameras for previews
    return save_reconstructor(model, path, {"producer": "fuse4d write_tiny_reconstructor", "seed": str(seed)})
