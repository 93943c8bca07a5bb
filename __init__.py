# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuse4D: 4D scene generation (fused view-time attention + feed-forward 4D Gaussians).

The repository root is the package ``fuse4d``. ComfyUI imports this file as a custom-node
package; nothing here imports torch or ComfyUI so that numpy-only users (Blender) stay light.
"""

__version__ = "0.1.0"

# ComfyUI (V3 API): a relative path to the frontend extension folder.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """ComfyUI V3 entry point; imported lazily so the core never needs ComfyUI."""
    from .comfy_nodes import comfy_entrypoint as entry

    return await entry()
