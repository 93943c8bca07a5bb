# SPDX-License-Identifier: GPL-3.0-or-later
"""Decode 4D Grid (latent -> V*T images + grid) and 4D Grid Slice (one view, or one instant)."""
from __future__ import annotations

import torch

from comfy_api.latest import io

from .latents import grid_of
from .runtime import Steps
from .types import Grid4D, GridInfo

SLICE_MODES = ("fixed view", "frozen time")


def decode_views(vae, samples: torch.Tensor, views: int) -> torch.Tensor:
    """Decode each view's latent frames on their own (views were never compressed together)."""
    b, _, length, _, _ = samples.shape
    t_lat = length // views
    steps = Steps(b * views)
    out = []
    for i in range(b):
        for v in range(views):
            steps.check()
            images = vae.decode(samples[i:i + 1, :, v * t_lat:(v + 1) * t_lat])
            out.append(images.reshape(-1, *images.shape[-3:]))
            steps.done()
    return torch.cat(out, dim=0)


def slice_grid(images: torch.Tensor, grid: GridInfo, mode: str, index: int) -> torch.Tensor:
    grid.check_count(images.shape[0])
    cube = images.reshape(grid.batch, grid.views, grid.frames, *images.shape[1:])
    if mode == "fixed view":
        if not 0 <= index < grid.views:
            raise ValueError(f"view index {index} is outside 0..{grid.views - 1}")
        return cube[:, index].reshape(-1, *images.shape[1:])
    if mode == "frozen time":
        if not 0 <= index < grid.frames:
            raise ValueError(f"time index {index} is outside 0..{grid.frames - 1}")
        return cube[:, :, index].reshape(-1, *images.shape[1:])
    raise ValueError(f"unknown slice mode {mode!r}; choose from {SLICE_MODES}")


class Decode4DGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DDecode4DGrid",
            display_name="Decode 4D Grid",
            category="Fuse4D/latent",
            description="Decode a V x T latent grid view by view into V*T images (view-major) and a grid "
                        "description for slicing and reconstruction.",
            inputs=[
                io.Vae.Input("vae"),
                io.Latent.Input("samples"),
                io.Int.Input("views", default=0, min=0, max=64,
                             tooltip="0: read it from the latent (set by Empty 4D Latent)"),
            ],
            outputs=[io.Image.Output(display_name="images"), Grid4D.Output(display_name="grid")],
        )

    @classmethod
    def execute(cls, vae, samples, views=0) -> io.NodeOutput:
        grid = grid_of(samples, views)
        if views and views != grid.views:
            grid = GridInfo(views=views, frames=grid.frames, width=grid.width, height=grid.height)
        latent = samples["samples"]
        if latent.ndim != 5:
            raise ValueError(f"Decode 4D Grid needs a video latent [B, C, T, H, W]; got {tuple(latent.shape)}")
        if latent.shape[2] % grid.views:
            raise ValueError(f"the latent has {latent.shape[2]} frames, not a multiple of views={grid.views}")
        images = decode_views(vae, latent, grid.views)
        frames = images.shape[0] // (grid.views * latent.shape[0])
        info = GridInfo(views=grid.views, frames=frames, width=images.shape[2], height=images.shape[1],
                        batch=latent.shape[0])
        return io.NodeOutput(images, info)


class GridSlice4D(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DGridSlice",
            display_name="4D Grid Slice",
            category="Fuse4D/image",
            description="One view's video (fixed view) or all views at one instant (frozen time), "
                        "for the stock image and video save nodes.",
            inputs=[
                io.Image.Input("images"),
                Grid4D.Input("grid"),
                io.Combo.Input("mode", options=list(SLICE_MODES), default="fixed view"),
                io.Int.Input("index", default=0, min=0, max=4096),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, images, grid, mode, index) -> io.NodeOutput:
        return io.NodeOutput(slice_grid(images, grid, mode, index))
