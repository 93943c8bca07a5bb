# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only ComfyUI nodes: a tiny stand-in for the 11 GB umT5 text encoder (Wan's CLIP)."""
import hashlib

import torch


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension, io

    class TinyTextConditioning(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Fuse4DTestTinyText", category="testing",
                             inputs=[io.String.Input("text", multiline=True)],
                             outputs=[io.Conditioning.Output()])

        @classmethod
        def execute(cls, text) -> io.NodeOutput:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            emb = torch.randn(1, 8, 4096, generator=torch.Generator().manual_seed(seed))
            return io.NodeOutput([[emb, {}]])

    class Ext(ComfyExtension):
        async def get_node_list(self):
            return [TinyTextConditioning]

    return Ext()
