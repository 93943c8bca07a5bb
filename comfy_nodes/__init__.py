# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuse4D's ComfyUI node pack (V3 API). Imported only inside ComfyUI, via the package root's
`comfy_entrypoint`; nothing here is imported by the core, the CLI or Blender."""
from __future__ import annotations


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .fused_attention import FusedViewTimeAttention
    from .grid import Decode4DGrid, GridSlice4D
    from .latents import Empty4DLatent, ReferenceFrames4D
    from .reconstruct import LoadReconstructor, Reconstruct4DGaussians, register_folders
    from .splats import Load4DSplats, LoadSplat, Render4D, RenderFrozenTimeViews, Save4DSplats, SplatFrame4D

    nodes = [FusedViewTimeAttention, Empty4DLatent, ReferenceFrames4D, Decode4DGrid, GridSlice4D,
             LoadReconstructor, Reconstruct4DGaussians, Save4DSplats, Render4D, LoadSplat,
             RenderFrozenTimeViews, Load4DSplats, SplatFrame4D]

    class Fuse4DExtension(ComfyExtension):
        async def on_load(self) -> None:
            register_folders()

        async def get_node_list(self):
            return nodes

    register_folders()
    return Fuse4DExtension()
