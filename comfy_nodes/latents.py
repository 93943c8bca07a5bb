# SPDX-License-Identifier: GPL-3.0-or-later
"""Empty 4D Latent and 4D Reference Frames: a V x T grid as one long Wan latent, view-major."""
from __future__ import annotations

import torch

import comfy.latent_formats
import comfy.utils
import nodes
from comfy_api.latest import io

from .runtime import Steps, intermediate_device
from .types import GridInfo

GRID_KEY = "fuse4d_grid"


def vae_factors(vae) -> tuple[int, int, int]:
    """(latent channels, spatial factor, temporal factor) of a Wan-style video VAE."""
    ratio = getattr(vae, "downscale_ratio", None)
    if getattr(vae, "latent_dim", 2) != 3 or not isinstance(ratio, tuple) or not callable(ratio[0]):
        raise ValueError("Fuse4D 4D latents need a video VAE with temporal compression (Wan 2.1 / 2.2 VAE)")
    return int(vae.latent_channels), int(ratio[1]), 4


def latent_frames(frames: int) -> int:
    """Wan's causal VAE: the first frame alone, then 4 frames per latent frame."""
    return (frames - 1) // 4 + 1


def latent_format(vae):
    return comfy.latent_formats.Wan22() if vae.latent_channels == 48 else comfy.latent_formats.Wan21()


def grid_of(latent: dict, views: int = 0) -> GridInfo:
    info = latent.get(GRID_KEY)
    if info is not None:
        return GridInfo(**info)
    if views < 1:
        raise ValueError("this LATENT has no 4D grid description (make it with 'Empty 4D Latent') "
                         "and no views count was given")
    length = latent["samples"].shape[2]
    if length % views:
        raise ValueError(f"the LATENT has {length} frames, not a multiple of views={views}")
    return GridInfo(views=views, frames=(length // views - 1) * 4 + 1)


def resize_images(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if images.shape[1] == height and images.shape[2] == width:
        return images
    return comfy.utils.common_upscale(images.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)


class Empty4DLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DEmpty4DLatent",
            display_name="Empty 4D Latent",
            category="Fuse4D/latent",
            description="An empty V views x T frames grid for a fused view-time Wan model (views are laid "
                        "end to end along the latent time axis; each view is compressed on its own).",
            inputs=[
                io.Vae.Input("vae"),
                io.Int.Input("width", default=480, min=16, max=nodes.MAX_RESOLUTION, step=16),
                io.Int.Input("height", default=288, min=16, max=nodes.MAX_RESOLUTION, step=16),
                io.Int.Input("views", default=4, min=1, max=64),
                io.Int.Input("frames", default=9, min=1, max=1024, step=4,
                             tooltip="pixel frames per view (1 + 4k for Wan's VAE)"),
                io.Int.Input("batch_size", default=1, min=1, max=64),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, vae, width, height, views, frames, batch_size) -> io.NodeOutput:
        channels, factor, _ = vae_factors(vae)
        if (frames - 1) % 4:
            raise ValueError(f"frames per view must be 1 + 4k for Wan's VAE (1, 5, 9, ...); got {frames}")
        t_lat = latent_frames(frames)
        samples = torch.zeros([batch_size, channels, views * t_lat, height // factor, width // factor],
                              device=intermediate_device())
        grid = GridInfo(views=views, frames=frames, width=width, height=height)
        return io.NodeOutput({"samples": samples, GRID_KEY: vars(grid)})


class ReferenceFrames4D(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DReferenceFrames",
            display_name="4D Reference Frames",
            category="Fuse4D/latent",
            description="Put known frames into a 4D latent: a frozen-time row (V views at t=0) and/or a "
                        "fixed-view video (view 0, all frames). Adds a noise_mask so the stock samplers "
                        "keep them and generate the rest.",
            inputs=[
                io.Vae.Input("vae"),
                io.Latent.Input("latent"),
                io.Image.Input("frozen_time", optional=True, tooltip="V images: every view at t = 0"),
                io.Image.Input("fixed_view", optional=True, tooltip="the video of view 0 (its T frames)"),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, vae, latent, frozen_time=None, fixed_view=None) -> io.NodeOutput:
        grid = grid_of(latent)
        samples = latent["samples"].clone()
        channels, factor, _ = vae_factors(vae)
        if samples.shape[1] != channels:
            raise ValueError(f"the LATENT has {samples.shape[1]} channels but the VAE makes {channels}")
        b, _, length, lh, lw = samples.shape
        t_lat = length // grid.views
        width, height = lw * factor, lh * factor
        mask = latent.get("noise_mask")
        if mask is not None and tuple(mask.shape) == (b, 1, length, lh, lw):
            # Already conditioned (e.g. a frozen-time row, now a fixed-view video): keep what is known.
            mask = mask.clone()
        else:
            mask = torch.ones([b, 1, length, lh, lw], device=samples.device)
            # Same convention as ComfyUI's Wan22ImageToVideoLatent: the unknown part of a fresh latent
            # is stored so that the sampler's process_in maps it to 0; known parts are raw VAE latents.
            samples = latent_format(vae).process_out(samples)
        jobs = []
        if frozen_time is not None:
            if frozen_time.shape[0] != grid.views:
                raise ValueError(f"frozen_time holds {frozen_time.shape[0]} images; the grid has "
                                 f"{grid.views} views (one image per view, at t = 0)")
            jobs += [(v * t_lat, frozen_time[v:v + 1]) for v in range(grid.views)]
        if fixed_view is not None:
            count = min(fixed_view.shape[0], grid.frames)
            count = (count - 1) // 4 * 4 + 1  # whole latent frames only
            jobs.append((0, fixed_view[:count]))
        if not jobs:
            raise ValueError("connect frozen_time (V images) and/or fixed_view (a video of view 0)")
        steps = Steps(len(jobs))
        for start, images in jobs:
            steps.check()
            encoded = vae.encode(resize_images(images[..., :3], width, height)).to(samples)
            n = min(encoded.shape[2], t_lat)
            samples[:, :, start:start + n] = encoded[:, :, :n]
            mask[:, :, start:start + n] = 0.0
            steps.done()
        out = dict(latent)
        out["samples"] = samples
        out["noise_mask"] = mask
        return io.NodeOutput(out)
