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
    from fuse4d.core.wan.conditioning import ReferenceConditioning
    from fuse4d.core.wan.export_comfy import conditioning_of

    assert conditioning_of(s) == ReferenceConditioning()  # clean latents only
    # a file written before `reference_conditioning` was stored: from its conditioning list
    assert conditioning_of({"conditioning": ["clean-latent", "patch-embed"], "per_token_timestep": True}) == \
        ReferenceConditioning(patch_embed=True, per_token_timestep=True)


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
    rays = VideoModelConfig(wan=COMFY_TINY, codec="wan-vae", concat_reference=True, ray_bands=4)
    (run / "config.json").write_text(json.dumps(rays.to_dict()))
    with pytest.raises(ValueError, match="camera rays .4 ray bands.*carries no cameras"):
        export_model(run.parent, tmp_path / "x.safetensors")
    r = subprocess.run([sys.executable, "-m", "fuse4d", "export-comfy", str(exported["run"]), "--model-out",
                        str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "are .safetensors files" in r.stderr


# Shared by both child scripts (pasted where they say ONE_STEP; they define comfy, torch, noise, text, sigma)
ONE_STEP = r"""
def sample_one_step(model, captured, latent_image, denoise_mask=None):
    # one call of ComfyUI's own sampling at sigma (CFG 1): the network's input x and the velocity
    # (x - denoised) / sigma go into captured
    def one_call(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
        denoised = model_fn(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
        captured["x"], captured["v"] = x.clone(), (x - denoised) / sigmas[0]
        return x
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds([[text, {}]], [[torch.zeros_like(text), {}]])
    guider.set_cfg(1.0)
    guider.sample(noise, latent_image, comfy.samplers.KSAMPLER(one_call), torch.tensor([sigma, 0.0]),
                  denoise_mask=denoise_mask, seed=0)
    return captured
"""


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

ONE_STEP

def velocity(model):
    return sample_one_step(model, {}, torch.zeros_like(noise))

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
    result = run_with_comfy_path(CHILD.replace("ONE_STEP", ONE_STEP).replace("ARGS", repr(args)), timeout=600)
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


# --- trained reference conditioning inside ComfyUI: the paper's patch-embedding addition (+ per-token
# timesteps, a LoRA run) and channel concat (in_dim 2C + 1 + position, fixed-view change and grid
# channels, trained from scratch). Known cells: the frozen-time row and view 0's video. -----------------
T3 = 3  # latent frames per view (9 pixel frames)
CONCAT_IN = 2 * 16 + 1 + 2 + 16 + 2


@pytest.fixture(scope="module")
def conditioned(exported):
    from safetensors.torch import save_file

    from fuse4d.core.wan.export_comfy import export_lora, export_model
    from fuse4d.core.wan.model_io import VideoModelConfig
    from fuse4d.core.wan.trainer import TrainVideoConfig, train_video

    root = exported["root"]
    gen = torch.Generator().manual_seed(11)
    for i in range(2):
        folder = root / "data3" / f"sample_{i:05d}"
        folder.mkdir(parents=True)
        save_file({"latents": torch.randn(16, V * T3, 8, 8, generator=gen)}, str(folder / "latents.safetensors"),
                  metadata={"views": str(V)})
        save_file({"text_embeds": torch.randn(6, 4096, generator=gen) * 0.1}, str(folder / "text_embeds.safetensors"))
    runs = {
        "patch": (VideoModelConfig(wan=COMFY_TINY, t_max=T_MAX, codec="wan-vae", patch_embed_conditioning=True,
                                   per_token_timestep=True), "lora", str(exported["base"])),
        "concat": (VideoModelConfig(wan=WanConfig(**{**COMFY_TINY.to_dict(), "patch_size": (1, 2, 2),
                                                     "in_dim": CONCAT_IN}),
                                    t_max=T_MAX, codec="wan-vae", concat_reference=True, position_channels=True,
                                    view_change_channels=True, grid_channels=True), "full", None),
    }
    out = {"root": root}
    for name, (model_cfg, train, init) in runs.items():
        torch.manual_seed(3)
        cfg = TrainVideoConfig(out=str(root / f"run_{name}"), model=model_cfg, init=init, data=str(root / "data3"),
                               views=V, frames=9, steps=3, lr=2e-2, warmup=0, train=train, lora_rank=4, save_every=3,
                               log_every=1, threads=1, progress=False, device="cpu", p_uncond=0.0,
                               cond_probs=(0.0, 0.0, 0.0, 1.0))
        train_video(cfg)
        out[name] = export_model(root / f"run_{name}", root / f"fuse4d_{name}.safetensors", torch.float32)
        out[f"run_{name}"] = root / f"run_{name}"
    out["patch_lora"] = export_lora(root / "run_patch", root / "fuse4d_patch_lora.safetensors")
    return out


COND_CHILD = r'''
import json, torch
import comfy.sd, comfy.samplers, comfy.utils, comfy.latent_formats, comfy.patcher_extension
import importlib
patch = importlib.import_module("fuse4d.comfy_nodes.wan_patch")
fsettings = importlib.import_module("fuse4d.comfy_nodes.fuse4d_settings")
from fuse4d.core.wan.export_comfy import read_fuse4d_settings
from safetensors.torch import load_file, save_file

args = ARGS
inp = load_file(args["inputs"])
noise, text, sigma, ref, noise_mask = inp["noise"], inp["text"], float(inp["sigma"]), inp["ref"], inp["noise_mask"]
# what 4D Reference Frames puts in a LATENT: raw VAE latents (the sampler's process_in maps them to `ref`)
latent_image = comfy.latent_formats.Wan21().process_out(ref)

ONE_STEP

def velocity(model):
    captured = {}
    def inner(executor, *a, **kw):  # runs inside the pack's wrapper: sees what the network gets
        out = executor(*a, **kw)
        captured["x_in"], captured["t_in"], captured["raw"] = a[0].clone(), a[1].clone(), out.clone()
        refs = a[5].get(patch.REFERENCES_KEY)
        if refs is not None:
            captured["ref_seen"] = refs["latent"].clone()
        return out
    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_capture", inner)
    return sample_one_step(model, captured, latent_image.clone(), noise_mask.clone())

out, result = {}, {}
for name in ("patch", "concat", "patch_lora"):
    settings = read_fuse4d_settings(args[name])
    views, t_max, notes = fsettings.resolve(0, 0, settings)
    result[name + "_notes"] = notes
    cond = fsettings.conditioning(settings)
    result[name + "_conditioning"] = cond.to_dict()
    if name == "patch_lora":
        base = comfy.sd.load_diffusion_model(args["base"])
        model, _ = comfy.sd.load_lora_for_models(base, None, comfy.utils.load_torch_file(args[name]), 1.0, 0)
    else:
        model = comfy.sd.load_diffusion_model(args[name])            # what UNETLoader does
        result[name + "_class"] = type(model.model).__name__
        result[name + "_in_dim"] = int(model.model.diffusion_model.patch_embedding.weight.shape[1])
    c = velocity(patch.patch_fused_view_time(model, views, t_max, conditioning=cond))
    for k, v in c.items():
        out[f"{name}_{k}"] = v
    if name != "patch_lora":  # the same MODEL through the node without its settings: no trained conditioning
        out[f"{name}_unconditioned"] = velocity(patch.patch_fused_view_time(model, views, t_max))["v"]
try:
    patch.patch_fused_view_time(comfy.sd.load_diffusion_model(args["base"]), args["views"], 0,
                                conditioning=fsettings.conditioning(read_fuse4d_settings(args["concat"])))
    result["wrong_settings_error"] = ""
except ValueError as e:
    result["wrong_settings_error"] = str(e)
save_file({k: v.contiguous() for k, v in out.items()}, args["out"])
print(json.dumps(result))
'''


@pytest.fixture(scope="module")
def comfy_conditioned(exported, conditioned):
    from safetensors.torch import load_file, save_file

    from comfy_runtime import ensure_comfyui, run_with_comfy_path

    ensure_comfyui()
    gen = torch.Generator().manual_seed(7)
    ref = torch.randn(1, 16, V * T3, 8, 8, generator=gen)
    known = torch.tensor([True, True, True, True, False, False])  # view 0 all, view 1 at t = 0
    ref[:, :, ~known] = 0
    noise_mask = torch.ones(1, 1, V * T3, 8, 8)
    noise_mask[:, :, known] = 0
    inputs = {"noise": torch.randn(1, 16, V * T3, 8, 8, generator=gen), "ref": ref, "noise_mask": noise_mask,
              "text": torch.randn(1, 6, 4096, generator=gen) * 0.1, "sigma": torch.tensor(SIGMA)}
    root = conditioned["root"]
    save_file(inputs, str(root / "cond_inputs.safetensors"))
    args = {k: str(conditioned[k]) for k in ("patch", "concat", "patch_lora")}
    args.update(base=str(exported["base"]), inputs=str(root / "cond_inputs.safetensors"),
                out=str(root / "comfy_cond.safetensors"), views=V)
    result = run_with_comfy_path(COND_CHILD.replace("ONE_STEP", ONE_STEP).replace("ARGS", repr(args)), timeout=600)
    return result, load_file(args["out"]), inputs, known


def _pipeline_velocity(run, x, ref, known, text):
    """What generate_4d's sampling loop feeds the trained model at noise level SIGMA (its own code path:
    replace_clean, ConditionedPatchEmbedding, token_timesteps, concat_input)."""
    from fuse4d.core.wan.attention_processor import fused_wan
    from fuse4d.core.wan.conditioning import (concat_input, install_patch_conditioning, reference_term,
                                              replace_clean, set_reference, token_timesteps)
    from fuse4d.core.wan.model_io import load_video_model

    model, vcfg = load_video_model(run / "model")
    mask = known.reshape(V, T3)
    x_in = replace_clean(x, ref, mask)
    t = torch.tensor([SIGMA * 1000.0])
    if vcfg.per_token_timestep:
        t = token_timesteps(mask, t, (x.shape[-2] // 2) * (x.shape[-1] // 2))
    if vcfg.patch_embed_conditioning:
        install_patch_conditioning(model)
        set_reference(model, reference_term(ref, mask))
    inp = (concat_input(x_in, ref, mask, vcfg.position_channels, vcfg.view_change_channels, vcfg.grid_channels)
           if vcfg.concat_reference else x_in)
    with fused_wan(model, V, T_MAX), torch.no_grad():
        return model(inp, t, text).sample, inp


def test_exports_of_conditioned_models_carry_their_conditioning(conditioned):
    from safetensors import safe_open

    from fuse4d.core.wan.export_comfy import read_fuse4d_settings

    s = read_fuse4d_settings(conditioned["concat"])
    assert s["conditioning"] == ["clean-latent", "channel-concat"] and s["wan"]["in_dim"] == CONCAT_IN
    assert s["reference_conditioning"] == {"patch_embed": False, "concat": True, "position": True,
                                           "view_change": True, "grid": True, "per_token_timestep": False}
    with safe_open(str(conditioned["concat"]), "pt") as f:  # a plain Wan file: ComfyUI reads in_dim from it
        assert f.get_slice("patch_embedding.weight").get_shape()[1] == CONCAT_IN
        assert not [k for k in f.keys() if k.split(".")[0] not in ("blocks", "patch_embedding", "text_embedding",
                                                                   "time_embedding", "time_projection", "head")]
    p = read_fuse4d_settings(conditioned["patch"])
    assert p["conditioning"] == ["clean-latent", "patch-embed"] and p["reference_conditioning"]["per_token_timestep"]


def test_comfyui_applies_trained_conditioning_as_our_pipeline(conditioned, comfy_conditioned):
    result, comfy, inputs, known = comfy_conditioned
    assert result["concat_class"] == "WAN21" and result["concat_in_dim"] == CONCAT_IN  # stock loader builds it
    assert result["patch_class"] == "WAN21" and result["patch_in_dim"] == 16
    for name in ("patch", "concat", "patch_lora"):
        assert result[name + "_notes"] == []  # everything the file says is applied: no warning
    assert "this MODEL takes 16" in result["wrong_settings_error"]
    ref, text = inputs["ref"], inputs["text"]
    for name, run in (("patch", "run_patch"), ("concat", "run_concat"), ("patch_lora", "run_patch")):
        x = comfy[f"{name}_x"]
        assert torch.allclose(x, SIGMA * inputs["noise"] + (1 - SIGMA) * ref, atol=1e-5)  # the sampler's latent
        assert torch.allclose(comfy[f"{name}_ref_seen"], ref, atol=1e-5)  # the references reached the model
        ours, inp = _pipeline_velocity(conditioned[run], x, ref, known, text)
        scale = float(ours.abs().max())
        raw = float((comfy[f"{name}_raw"] - ours).abs().max())
        sampled = float((comfy[f"{name}_v"][:, :, ~known] - ours[:, :, ~known]).abs().max())
        print(f"{name}: max |ComfyUI - ours| = {raw:.3g} (network output), {sampled:.3g} (sampler velocity, "
              f"generated cells); scale {scale:.3g}")
        assert raw < 2e-4 * scale and sampled < 2e-4 * scale, (name, raw, sampled, scale)
        if name == "concat":  # ComfyUI's zeros in the extra channels were replaced by the trainer's inputs
            assert torch.allclose(comfy["concat_x_in"], inp, atol=1e-5)
            assert comfy["concat_t_in"].tolist() == [SIGMA * 1000.0]
        else:  # per-token timesteps, per latent frame: 0 on the known cells
            t_in = comfy[f"{name}_t_in"]
            assert t_in.shape == (1, V * T3) and float(t_in[0, known].abs().max()) == 0.0
            assert torch.allclose(t_in[0, ~known], torch.tensor(SIGMA * 1000.0))
        if name != "patch_lora":  # without the settings the node leaves ComfyUI's handling: another output
            off = float((comfy[f"{name}_unconditioned"][:, :, ~known] - ours[:, :, ~known]).abs().max())
            assert off > 1e-2 * scale, (name, off)


def test_server_graph_feeds_the_channel_concat_model_its_references(conditioned, comfy_server):
    """Over HTTP: UNETLoader (the exported channel-concat model) -> the node with the file as `settings`
    -> KSampler on a LATENT from 4D Reference Frames (frozen-time row) -> SaveLatent. With the settings
    the generated latents differ from the same graph without them (ComfyUI's zeros in the extra input
    channels), the known frames are kept, and the log has no warning."""
    import shutil

    from safetensors.torch import load_file

    name = "fuse4d_test_concat.safetensors"
    (comfy_server.models / "diffusion_models").mkdir(parents=True, exist_ok=True)
    shutil.copy(conditioned["concat"], comfy_server.models / "diffusion_models" / name)
    vae = ["vae", 0]

    def graph(settings: str, prefix: str) -> dict:
        node = {"views": 0, "t_max": 0} if settings != "none" else {"views": V, "t_max": T_MAX}
        return {
            "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
            "fused": {"class_type": "Fuse4DFusedViewTimeAttention",
                      "inputs": {"model": ["unet", 0], "backend": "auto", "settings": settings, **node}},
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": comfy_server.tiny["vae"]}},
            "empty": {"class_type": "Fuse4DEmpty4DLatent", "inputs": {"vae": vae, "width": 64, "height": 48,
                                                                     "views": V, "frames": 9, "batch_size": 1}},
            "row": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": V,
                                                           "color": 0x8040C0}},
            "refs": {"class_type": "Fuse4DReferenceFrames", "inputs": {"vae": vae, "latent": ["empty", 0],
                                                                      "frozen_time": ["row", 0]}},
            "pos": {"class_type": "Fuse4DTestTinyText", "inputs": {"text": "a dancer"}},
            "neg": {"class_type": "Fuse4DTestTinyText", "inputs": {"text": ""}},
            "ks": {"class_type": "KSampler", "inputs": {"model": ["fused", 0], "seed": 3, "steps": 2, "cfg": 1.0,
                                                        "sampler_name": "euler", "scheduler": "simple",
                                                        "positive": ["pos", 0], "negative": ["neg", 0],
                                                        "latent_image": ["refs", 0], "denoise": 1.0}},
            "save": {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": prefix}},
        }

    def latent(entry) -> torch.Tensor:
        item = next(i for out in entry["outputs"].values() for i in out.get("latents", []))
        return load_file(str(comfy_server.output_dir / item["subfolder"] / item["filename"]))["latent_tensor"]

    on = latent(comfy_server.run(graph(f"diffusion_models/{name}", "fuse4d/concat_on")))
    log = comfy_server.log_tail(200)
    off = latent(comfy_server.run(graph("none", "fuse4d/concat_off")))
    assert on.shape == off.shape == (1, 16, V * T3, 6, 8)
    known = torch.tensor([t == 0 for v in range(V) for t in range(T3)])
    assert torch.equal(on[:, :, known], off[:, :, known])  # the frozen-time row, kept by the sampler
    gap = float((on[:, :, ~known] - off[:, :, ~known]).abs().mean())
    # a 3-step model leans little on its extra channels; float noise would be ~1e-6 of the magnitude
    assert gap > 1e-3 * float(on[:, :, ~known].abs().mean()), gap
    assert "was trained with" not in log and "Traceback" not in log
