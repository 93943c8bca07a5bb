# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d export-comfy`: a tiny Wan fine-tuned a few steps with LoRA by our trainer, exported, loaded by
ComfyUI's own loaders (the functions behind UNETLoader and LoraLoaderModelOnly) in the real ComfyUI
v0.3.75, patched by the pack's node with the settings read from the files: the same velocity as our
pipeline for a fixed latent, timestep and text."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest_comfy import comfy_server  # noqa: F401 (fixture: the session's real ComfyUI server)
from fuse4d.core.wan.keys import WanConfig

# ComfyUI's Wan detection: head dim 128, 256 frequency dims, 4096-wide text, patch 1x2x2.
COMFY_TINY = WanConfig(dim=256, num_layers=2, num_heads=2, ffn_dim=512, in_dim=16, out_dim=16, text_dim=4096,
                       freq_dim=256)
V, T_LAT, T_MAX, SIGMA = 2, 2, 5, 0.6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from safetensors.torch import save_file

    from fuse4d.core.wan.export_comfy import export_lora, export_model
    from fuse4d.core.wan.keys import build_wan_transformer, to_original_state_dict
    from fuse4d.core.wan.model_io import VideoModelConfig
    from fuse4d.core.wan.trainer import TrainVideoConfig, train_video

    root = tmp_path_factory.mktemp("export_comfy")
    torch.manual_seed(0)
    base = build_wan_transformer(COMFY_TINY)
    save_file({k: v.contiguous() for k, v in to_original_state_dict(base.state_dict()).items()},
              str(root / "base.safetensors"))
    gen = torch.Generator().manual_seed(1)
    for i in range(2):  # precomputed latents + text states: the cache-latents layout, no VAE needed
        folder = root / "data" / f"sample_{i:05d}"
        folder.mkdir(parents=True)
        save_file({"latents": torch.randn(16, V * T_LAT, 8, 8, generator=gen)}, str(folder / "latents.safetensors"),
                  metadata={"views": str(V)})
        save_file({"text_embeds": torch.randn(6, 4096, generator=gen) * 0.1}, str(folder / "text_embeds.safetensors"))
    model_cfg = VideoModelConfig(wan=COMFY_TINY, t_max=T_MAX, codec="wan-vae")
    cfg = TrainVideoConfig(out=str(root / "run"), model=model_cfg, init=str(root / "base.safetensors"),
                           data=str(root / "data"), views=V, frames=5, steps=3, lr=2e-2, warmup=0, train="lora",
                           lora_rank=4, save_every=3, log_every=1, threads=1, progress=False, device="cpu",
                           p_uncond=0.0)
    train_video(cfg)
    model_file = export_model(root / "run", root / "fuse4d_tiny_wan.safetensors", torch.float32)
    lora_file = export_lora(root / "run", root / "fuse4d_tiny_lora.safetensors")
    return {"root": root, "run": root / "run", "model": model_file, "lora": lora_file,
            "base": root / "base.safetensors"}


def test_exports_carry_layouts_and_settings(exported):
    from safetensors import safe_open

    from fuse4d.core.wan.export_comfy import read_fuse4d_settings

    with safe_open(str(exported["model"]), "pt") as f:
        keys = set(f.keys())
    assert "head.head.weight" in keys and "blocks.1.self_attn.q.weight" in keys and "blocks.0.norm3.weight" in keys
    with safe_open(str(exported["lora"]), "pt") as f:
        lkeys = set(f.keys())
        assert float(f.get_tensor("diffusion_model.blocks.0.self_attn.o.alpha")) == 4.0
        b = f.get_tensor("diffusion_model.blocks.0.self_attn.q.lora_B.weight")
    assert len(lkeys) == 2 * 4 * 3  # 2 blocks x q, k, v, o x (A, B, alpha)
    assert float(b.abs().max()) > 0  # the adapters trained (B starts at zero)
    s = read_fuse4d_settings(exported["model"])
    assert s["views"] == V and s["t_max"] == T_MAX and s["attention"] == "fused" and s["kind"] == "model"
    assert s["conditioning"] == ["clean-latent"] and s["base"] == "base.safetensors"
    assert read_fuse4d_settings(exported["lora"])["kind"] == "lora"


def test_wrong_family_and_other_layers_are_refused(exported, tmp_path):
    from fuse4d.core.wan.export_comfy import export_model, lora_tensors

    with pytest.raises(ValueError, match=r"not a LoRA on Wan's self-attention .*blocks\.0\.attn2\.to_q\.lora_A"):
        lora_tensors({"blocks.0.attn2.to_q.lora_A": torch.zeros(4, 8), "blocks.0.attn2.to_q.lora_B": torch.zeros(8, 4)},
                     4, None)
    run = tmp_path / "tinyrun" / "model"
    run.mkdir(parents=True)
    from fuse4d.core.wan.keys import WAN_TINY
    from fuse4d.core.wan.model_io import VideoModelConfig

    (run / "config.json").write_text(json.dumps(VideoModelConfig(wan=WAN_TINY, attention="parallel").to_dict()))
    with pytest.raises(ValueError, match="head count as dim / 128; this model has dim 32 with 2 heads.*study baseline"):
        export_model(run.parent, tmp_path / "x.safetensors")
    r = subprocess.run([sys.executable, "-m", "fuse4d", "export-comfy", str(exported["run"]), "--model-out",
                        str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "are .safetensors files" in r.stderr


CHILD = r'''
import json, sys, torch
import comfy.sd, comfy.lora, comfy.samplers, comfy.utils
import importlib
patch = importlib.import_module("fuse4d.comfy_nodes.wan_patch")
fsettings = importlib.import_module("fuse4d.comfy_nodes.fuse4d_settings")
from fuse4d.core.wan.export_comfy import read_fuse4d_settings
from safetensors.torch import load_file, save_file

args = ARGS
x0 = load_file(args["inputs"])
noise, text, sigma = x0["noise"], x0["text"], float(x0["sigma"])

def velocity(model):
    captured = {}
    def one_call(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
        denoised = model_fn(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
        captured["x"], captured["v"] = x.clone(), (x - denoised) / sigmas[0]
        return x
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds([[text, {}]], [[torch.zeros_like(text), {}]])
    guider.set_cfg(1.0)
    sampler = comfy.samplers.KSAMPLER(one_call)
    sigmas = torch.tensor([sigma, 0.0])
    guider.sample(noise, torch.zeros_like(noise), sampler, sigmas, seed=0)
    return captured

out, result = {}, {}
settings = read_fuse4d_settings(args["model"])
views, t_max, notes = fsettings.resolve(0, 0, settings)
result["resolved"] = [views, t_max, notes]
result["disagree"] = fsettings.resolve(3, 0, settings)[2]
merged = comfy.sd.load_diffusion_model(args["model"])           # what UNETLoader does
result["model_class"] = type(merged.model).__name__
c = velocity(patch.patch_fused_view_time(merged, views, t_max))
out["x"], out["merged"] = c["x"], c["v"]
base = comfy.sd.load_diffusion_model(args["base"])
lora = comfy.utils.load_torch_file(args["lora"])
key_map = comfy.lora.model_lora_keys_unet(base.model, {})
result["lora_patched"] = len(comfy.lora.load_lora(lora, key_map))
with_lora, _ = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0)   # what LoraLoaderModelOnly does
lv, lt, _ = fsettings.resolve(0, 0, read_fuse4d_settings(args["lora"]))
out["lora"] = velocity(patch.patch_fused_view_time(with_lora, lv, lt))["v"]
out["base"] = velocity(patch.patch_fused_view_time(base, lv, lt))["v"]
save_file({k: v.contiguous() for k, v in out.items()}, args["out"])
print(json.dumps(result))
'''


@pytest.fixture(scope="module")
def comfy_velocities(exported):
    from safetensors.torch import load_file, save_file

    from comfy_runtime import ensure_comfyui, run_with_comfy_path

    ensure_comfyui()
    gen = torch.Generator().manual_seed(5)
    inputs = {"noise": torch.randn(1, 16, V * T_LAT, 8, 8, generator=gen),
              "text": torch.randn(1, 6, 4096, generator=gen) * 0.1, "sigma": torch.tensor(SIGMA)}
    save_file(inputs, str(exported["root"] / "inputs.safetensors"))
    args = {k: str(exported[k]) for k in ("model", "lora", "base")}
    args.update(inputs=str(exported["root"] / "inputs.safetensors"), out=str(exported["root"] / "comfy.safetensors"))
    result = run_with_comfy_path(CHILD.replace("ARGS", repr(args)), timeout=600)
    return result, load_file(args["out"]), inputs


def test_comfyui_stock_loaders_and_node_give_our_velocity(exported, comfy_velocities):
    from fuse4d.core.wan.attention_processor import fused_wan
    from fuse4d.core.wan.keys import load_wan_transformer
    from fuse4d.core.wan.model_io import load_video_model

    result, comfy, inputs = comfy_velocities
    assert result["model_class"] == "WAN21"
    assert result["resolved"][:2] == [V, T_MAX] and result["resolved"][2] == []
    assert any("trained with 2 views; this node makes 3" in n for n in result["disagree"])
    assert result["lora_patched"] == 8  # every adapted projection found its weight in ComfyUI's Wan
    x, text = comfy["x"], inputs["text"]
    assert torch.allclose(x, SIGMA * inputs["noise"], atol=1e-6)  # the latent ComfyUI fed the model
    t = torch.tensor([SIGMA * 1000.0])
    ours, _ = load_video_model(exported["run"] / "model")
    with fused_wan(ours, V, T_MAX), torch.no_grad():
        v_ours = ours(x, t, text).sample
    base = load_wan_transformer(str(exported["base"]), COMFY_TINY)
    with fused_wan(base, V, T_MAX), torch.no_grad():
        v_base = base(x, t, text).sample
    scale = float(v_ours.abs().max())
    assert float((v_ours - v_base).abs().max()) > 1e-3 * scale  # the fine-tune changed the model
    for name in ("merged", "lora"):
        err = float((comfy[name] - v_ours).abs().max())
        assert err < 2e-4 * scale, f"{name}: max |ComfyUI - ours| = {err:.3g} (scale {scale:.3g})"
    assert float((comfy["base"] - v_base).abs().max()) < 2e-4 * scale


def test_example_workflow_runs_with_the_exported_lora(exported, comfy_server):
    """text_to_4d with the stock LoraLoaderModelOnly between UNETLoader (the base file) and the node,
    whose `settings` input names the exported LoRA: views and t_max come from the file."""
    import shutil

    from conftest_comfy import load_workflow, swap_tiny

    for sub, src, name in (("diffusion_models", exported["base"], "fuse4d_test_base.safetensors"),
                           ("loras", exported["lora"], "fuse4d_test_lora.safetensors")):
        (comfy_server.models / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, comfy_server.models / sub / name)
    wf = swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"), comfy_server, steps=2)
    wf = {k: v for k, v in wf.items() if v["class_type"] not in (
        "Fuse4DLoadReconstructor", "Fuse4DReconstruct4DGaussians", "Fuse4DSave4DSplats")}
    unet = next(k for k, v in wf.items() if v["class_type"] == "UNETLoader")
    wf[unet]["inputs"]["unet_name"] = "fuse4d_test_base.safetensors"
    wf["lora"] = {"class_type": "LoraLoaderModelOnly",
                  "inputs": {"model": [unet, 0], "lora_name": "fuse4d_test_lora.safetensors", "strength_model": 1.0}}
    for node in wf.values():
        if node["inputs"].get("model") == [unet, 0] and node["class_type"] != "LoraLoaderModelOnly":
            node["inputs"]["model"] = ["lora", 0]
        if node["class_type"] == "Fuse4DFusedViewTimeAttention":
            node["inputs"].update(views=0, t_max=0, settings="loras/fuse4d_test_lora.safetensors")
        if node["class_type"] == "Fuse4DEmpty4DLatent":
            node["inputs"]["views"] = V  # the grid the LoRA was trained on
        if node["class_type"] == "KSampler":
            node["inputs"]["seed"] = 777
    entry = comfy_server.run(wf)
    saved = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert len([s for s in saved if s["filename"].endswith(".png")]) == V  # frozen time: one image per view
    assert any(s["filename"].endswith(".webp") for s in saved)
    log = comfy_server.log_tail(400)
    assert "lora key not loaded" not in log
    assert "was trained with" not in log  # the node took the file's views and t_max: nothing disagrees
