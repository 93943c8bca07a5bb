# SPDX-License-Identifier: GPL-3.0-or-later
"""Animate a captured scene: V frozen-time views (+ the cameras they were rendered from) -> a V x T
grid of frames from the 4D video model -> 4D Gaussians from the feed-forward reconstructor, brought
into the cameras' world. One pipeline behind `fuse4d demo` and `fuse4d animate-scene` (Blender).

With no weights given, the tiny models shipped in weights/ run (CPU, seconds). Real weights (a
fine-tuned Wan 4D model folder, VGGT-1B) take the same path on a GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..cameras import Cameras
from ..gaussians import Gaussians
from ..recon.align import align_frames

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
TINY_VIDEO = WEIGHTS / "video_tiny"
TINY_RECON = WEIGHTS / "recon_tiny.safetensors"

Progress = Callable[[float, str], None]


@dataclass
class AnimateSettings:
    frames: int | None = None       # pixel frames per view; None = what the model was measured at
    steps: int | None = None        # sampling steps (the paper's 40); None = the model's own setting
    guidance: float | None = None   # classifier-free guidance (1 = off); None = the model's own setting
    seed: int = 0
    size: int | None = None         # working size of the video model; None = the size it was trained at
    prompt: str = ""
    backend: str = "auto"           # fused attention backend


@dataclass
class Models:
    video: torch.nn.Module
    video_config: object            # VideoModelConfig
    codec: object                   # PixelCodec | WanVAECodec
    recon: torch.nn.Module
    text_encoder: str | None = None
    names: dict = field(default_factory=dict)

    @property
    def sampling(self) -> dict:
        """views / frames / size / steps / shift / guidance the video model was trained and measured at."""
        from ..wan.tiny import sampling_defaults

        return sampling_defaults(self.video_config)

    @property
    def video_size(self) -> int:
        return int(self.sampling["size"])


@dataclass
class Animated:
    grid: torch.Tensor              # [V, T, H, W, 3] generated frames; t = 0 holds the given views
    frames: list[Gaussians]         # one Gaussian set per timestep, in the given cameras' world
    cameras: Cameras                # the given cameras (at the grid's size)
    alignment: np.ndarray           # 4x4: the reconstructor's frame -> the given cameras' world
    timings: dict


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_models(video_model: str | Path | None = None, recon: str | Path | None = None,
                vae: str | Path | None = None, text_encoder: str | Path | None = None,
                device: str | torch.device = "auto") -> Models:
    """The video model folder (config.json + model.safetensors) and reconstructor weights; the
    shipped tiny ones when not given. A Wan-VAE model needs `vae` (a diffusers AutoencoderKLWan folder)."""
    from ..recon import load_reconstructor
    from ..wan.model_io import load_video_model
    from ..wan.tiny import load_codec

    device = pick_device(device) if isinstance(device, str) else device
    video_path = Path(video_model) if video_model else TINY_VIDEO
    recon_path = Path(recon) if recon else TINY_RECON
    for path, what in ((video_path, "video model folder"), (recon_path, "reconstructor weights")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: {what} not found")
    model, config = load_video_model(video_path, device=device)
    model.eval()
    if config.codec != "pixel" and not vae:
        raise ValueError(f"{video_path}: this model works in Wan's VAE latent space; pass --vae "
                         "(a diffusers AutoencoderKLWan folder)")
    codec = load_codec(config, vae, device=device)
    recon_model = load_reconstructor(recon_path, device=device)
    return Models(model, config, codec, recon_model, str(text_encoder) if text_encoder else None,
                  {"video_model": str(video_path), "recon": str(recon_path)})


def resize_images(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, H, W, 3] -> [N, height, width, 3] (area filter when shrinking, bilinear otherwise)."""
    if images.shape[1:3] == (height, width):
        return images
    x = images.permute(0, 3, 1, 2)
    mode = "area" if height <= images.shape[1] and width <= images.shape[2] else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(x, size=(height, width), mode=mode, **kw).permute(0, 2, 3, 1).clamp(0, 1)


def _prompt_embeds(models: Models, prompt: str, device) -> torch.Tensor | None:
    if not models.text_encoder:
        return None  # the tiny model is trained without text: zeros
    from ..wan.pipeline import encode_prompt

    return encode_prompt(prompt, models.text_encoder, device=device)


def generate_grid(models: Models, views: torch.Tensor, settings: AnimateSettings,
                  cameras: Cameras | None = None) -> torch.Tensor:
    """Frozen-time views [V, H, W, 3] (H = W = the working size) -> generated grid [V, T, H, W, 3].
    `cameras`: the views' cameras, read only by video models with ray channels (which need them)."""
    from ..wan.pipeline import Generate4DConfig, generate_4d

    V, H, W, _ = views.shape
    own = models.sampling
    cfg = Generate4DConfig(views=V, frames=settings.frames or own["frames"], height=H, width=W, seed=settings.seed,
                           steps=settings.steps or own["steps"], shift=own["shift"],
                           guidance=own["guidance"] if settings.guidance is None else settings.guidance,
                           backend=settings.backend)
    device = next(models.video.parameters()).device
    out = generate_4d(models.video, models.codec, cfg, prompt_embeds=_prompt_embeds(models, settings.prompt, device),
                      frozen_time=views, video_config=models.video_config, cameras=cameras)
    return out.frames


def reconstruct(models: Models, grid: torch.Tensor, cameras: Cameras | None,
                progress: Callable[[], None] | None = None) -> tuple[list[Gaussians], Cameras, np.ndarray]:
    """Grid [V, T, H, W, 3] -> (Gaussians per timestep in the cameras' world, cameras, alignment).
    Without known cameras the reconstructor's own (first camera = world) are returned."""
    from ..recon import reconstruct_grid

    device = next(models.recon.parameters()).device
    with torch.no_grad():
        frames, predicted = reconstruct_grid(models.recon, grid.permute(0, 1, 4, 2, 3).to(device), progress=progress)
    frames = [g.detach().to("cpu") for g in frames]
    predicted = predicted.to("cpu")
    if cameras is None:
        return frames, predicted, np.eye(4)
    aligned, align = align_frames(frames, predicted, cameras)
    return aligned, cameras, align


def animate_views(models: Models, views: torch.Tensor, cameras: Cameras | None = None,
                  settings: AnimateSettings | None = None, progress: Progress | None = None) -> Animated:
    """Frozen-time views [V, H, W, 3] in [0, 1] (any size) and the cameras they were seen from ->
    generated grid and 4D Gaussians in the cameras' world."""
    settings = settings or AnimateSettings()
    views = torch.as_tensor(views).float()
    if views.dim() != 4 or views.shape[-1] != 3:
        raise ValueError(f"views must be [V, H, W, 3] images; got {tuple(views.shape)}")
    if cameras is not None and len(cameras) != views.shape[0]:
        raise ValueError(f"{views.shape[0]} views but {len(cameras)} cameras")
    report = progress or (lambda fraction, message: None)
    size = settings.size or models.video_size
    timings = {}
    t0 = time.perf_counter()
    report(0.0, "generating the 4D grid")
    grid = generate_grid(models, resize_images(views, size, size), settings,
                         None if cameras is None else cameras.resized(size, size))
    timings["generate_s"] = time.perf_counter() - t0
    report(0.6, "reconstructing 4D Gaussians")
    t1 = time.perf_counter()
    T = grid.shape[1]
    done = [0]

    def tick() -> None:
        done[0] += 1
        report(0.6 + 0.35 * done[0] / T, f"reconstructed timestep {done[0]}/{T}")

    sized = None if cameras is None else cameras.resized(grid.shape[3], grid.shape[2])
    frames, cams, align = reconstruct(models, grid, sized, progress=tick)
    timings["reconstruct_s"] = time.perf_counter() - t1
    report(1.0, "done")
    return Animated(grid, frames, cams, align, timings)


def sequence_of(animated: Animated, fps: float, extra: dict | None = None):
    """The result as a Sequence4D (one PLY per timestep, the cameras in the manifest)."""
    from ..cameras import cameras_to_dicts
    from ..io import Sequence4D

    return Sequence4D(frames=[g.to_arrays() for g in animated.frames], fps=float(fps),
                      views=len(animated.cameras), cameras=cameras_to_dicts(animated.cameras),
                      corresponding=False, extra=dict(extra or {}))
