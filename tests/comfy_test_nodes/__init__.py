# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only ComfyUI nodes: a tiny stand-in for the 11 GB umT5 text encoder (Wan's CLIP), a MODEL
inspector (what patches a model carries), and the interrupt gate (gate.py, armed by a file)."""
import hashlib
import json
import uuid

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

    class ModelState(io.ComfyNode):
        """Reports model_state(MODEL) as JSON text in the history; runs on every prompt."""

        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Fuse4DTestModelState", category="testing",
                             inputs=[io.Model.Input("model")], outputs=[], is_output_node=True)

        @classmethod
        def fingerprint_inputs(cls, model):
            return uuid.uuid4().hex  # never cached: the state is read now

        @classmethod
        def execute(cls, model) -> io.NodeOutput:
            from .model_state import model_state

            return io.NodeOutput(ui={"text": [json.dumps(model_state(model), sort_keys=True)]})

    class Ext(ComfyExtension):
        async def get_node_list(self):
            return [TinyTextConditioning, ModelState]

    from .gate import install

    install()

    return Ext()
