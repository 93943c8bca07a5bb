# SPDX-License-Identifier: GPL-3.0-or-later
"""The Fused View-Time Attention node (the patching itself lives in wan_patch.py)."""
from __future__ import annotations

from comfy_api.latest import io

from .fuse4d_settings import NONE, conditioning, load_settings, resolve, settings_choices
from .wan_patch import BACKENDS, patch_fused_view_time


class FusedViewTimeAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Fuse4DFusedViewTimeAttention",
            display_name="Fused View-Time Attention",
            category="Fuse4D/model",
            description="Make a native Wan 2.1 / 2.2 MODEL generate a V views x T frames grid: each token "
                        "attends to its own view (all times) and its own time (all views); RoPE time "
                        "positions become v*T_max + t. No new weights; text cross-attention unchanged.",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("views", default=4, min=0, max=64,
                             tooltip="views V of the grid (0: the settings file's, else 4)"),
                io.Int.Input("t_max", default=0, min=0, max=4096,
                             tooltip="RoPE time slots per view in latent frames (0: the settings file's, "
                                     "else exactly T, no gap)"),
                io.Combo.Input("backend", options=list(BACKENDS), default="auto"),
                io.Combo.Input("settings", options=settings_choices(), default=NONE, optional=True,
                               tooltip="a model or LoRA written by `fuse4d export-comfy`: views and t_max "
                                       "default to what it was trained with (a warning when they differ), "
                                       "and reference frames are fed the way it was trained (clean latents, "
                                       "patch-embedding addition, channel concat, per-frame timesteps)"),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, views, t_max, backend, settings=NONE) -> io.NodeOutput:
        found = load_settings(settings)
        views, t_max, _ = resolve(views, t_max, found, settings)
        return io.NodeOutput(patch_fused_view_time(model, views, t_max, backend, conditioning(found)))
