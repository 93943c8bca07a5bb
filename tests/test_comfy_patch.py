# SPDX-License-Identifier: GPL-3.0-or-later
"""The Fused View-Time Attention patch on ComfyUI's native Wan, sampled with ComfyUI's own sampler.

Runs in a child interpreter that imports the real ComfyUI v0.3.75 (installed at test time into
.cache/comfyui), with a tiny random Wan 2.1 DiT in ComfyUI's layout.
"""
from __future__ import annotations

import pytest

from comfy_runtime import ensure_comfyui, run_with_comfy_path

SCRIPT = r'''
import importlib.util, json, sys, tempfile, torch
import comfy.sd, comfy.sample, comfy.model_management
from comfy_tiny_models import write_tiny_models, WAN_DIT
import importlib
pkg = importlib.import_module(PKG + ".comfy_nodes.wan_patch")

models = tempfile.mkdtemp()
write_tiny_models(models)
base = comfy.sd.load_diffusion_model(f"{models}/diffusion_models/{WAN_DIT}")
gen = torch.Generator().manual_seed(0)
V, T = 2, 2
latent = torch.zeros(1, 16, V * T, 8, 8)
noise = torch.randn(latent.shape, generator=gen)
pos = [[torch.randn(1, 7, 4096, generator=gen), {}]]
neg = [[torch.randn(1, 5, 4096, generator=gen), {}]]

def run(model):
    return comfy.sample.sample(model, noise.clone(), 2, 2.0, "euler", "simple", pos, neg, latent.clone(),
                               disable_pbar=True, seed=0)

result = {}
first = run(base)
result["base_finite"] = bool(torch.isfinite(first).all())
one = run(pkg.patch_fused_view_time(base, views=1))
result["v1_equal"] = bool(torch.equal(one, first))
result["v1_maxdiff"] = float((one - first).abs().max())

calls = {"self": 0, "cross": 0}
def counting_override(func, *args, **kwargs):
    q, k = args[0], args[1]
    calls["self" if q.shape[1] == k.shape[1] else "cross"] += 1
    return func(*args, **kwargs)

with_prev = base.clone()
with_prev.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = counting_override
result["prev_only"] = bool(torch.equal(run(with_prev), first))
calls.update({"self": 0, "cross": 0})
result["fused_available"] = importlib.util.find_spec(PKG + ".core.attention") is not None
if result["fused_available"]:
    fused = pkg.patch_fused_view_time(with_prev, views=V)
    out = run(fused)
    result["fused_calls"] = dict(calls)
    result["fused_differs"] = not torch.allclose(out, first)
    result["fused_finite"] = bool(torch.isfinite(out).all())
    # T_max > T swaps the RoPE positions (block patch): a different result again.
    gap = run(pkg.patch_fused_view_time(base, views=V, t_max=T + 3))
    result["tmax_differs"] = not torch.allclose(gap, out)
    # T_max = 0 means T: the same fp32 positions as T_max = T given explicitly.
    result["tmax0_equals_tmax_t"] = bool(torch.equal(run(pkg.patch_fused_view_time(base, views=V, t_max=0)),
                                                     run(pkg.patch_fused_view_time(base, views=V, t_max=T))))
    # The same wiring with V x T where every token sees every token (T = 1) is the base model.
    result["patched_twice_ok"] = pkg.patch_fused_view_time(fused, views=V).model_options[
        "transformer_options"]["optimized_attention_override"].fuse4d_previous is counting_override
# RoPE positions go to the embedder in fp32, exact at 4 views x T_max 84 (bf16 would merge 336 slots into 297).
captured = []
class _Embedder:
    def rope_embedder(self, ids):
        captured.append(ids)
        return torch.zeros(1, 1, ids.shape[1], 2)
pkg.fused_rope(_Embedder(), 4, 84, 84, 1, 1, "cpu")
result["rope_ids_dtype"] = str(captured[0].dtype)
result["rope_ids_exact"] = bool(torch.equal(captured[0][0, :, 0], torch.arange(336, dtype=torch.float32)))
# Unpatching: the base MODEL (never modified) still gives the very same output.
result["base_restored"] = bool(torch.equal(run(base), first))
result["base_options_clean"] = "optimized_attention_override" not in base.model_options.get("transformer_options", {})
try:
    pkg.wan_diffusion_model(object())
    result["non_wan_error"] = ""
except ValueError as e:
    result["non_wan_error"] = str(e)
print(json.dumps(result))
'''


@pytest.fixture(scope="module")
def all_results():
    """Both scripts in one child interpreter (importing torch + ComfyUI once)."""
    ensure_comfyui()
    code = (SCRIPT.replace("PKG", repr("fuse4d")).replace("print(json.dumps(result))", "patch_result = result")
            + NODES_SCRIPT.replace("print(json.dumps(result))",
                                   'print(json.dumps({"patch": patch_result, "nodes": result}))'))
    return run_with_comfy_path(code, timeout=600)


@pytest.fixture(scope="module")
def patch_results(all_results):
    return all_results["patch"]


def test_v1_patch_equals_base_model(patch_results):
    assert patch_results["base_finite"]
    assert patch_results["v1_equal"], f"max diff {patch_results['v1_maxdiff']}"


def test_unpatching_restores_exactly(patch_results):
    assert patch_results["base_restored"]
    assert patch_results["base_options_clean"]


def test_existing_override_called_for_declined_attention(patch_results):
    assert patch_results["prev_only"]  # a pass-through override changes nothing
    if not patch_results["fused_available"]:
        pytest.fail("fuse4d.core.attention is missing: the fused backend cannot run")
    calls = patch_results["fused_calls"]
    # 2 blocks x 2 steps x cond/uncond batched -> cross-attention declined to the old override,
    # self-attention (same q/k length, V=2 x T=2 layout) handled by the fused kernel instead.
    assert calls["cross"] > 0
    assert calls["self"] == 0
    assert patch_results["fused_differs"] and patch_results["fused_finite"]
    assert patch_results["tmax_differs"]
    assert patch_results["patched_twice_ok"]


def test_rope_positions_are_fp32_and_exact(patch_results):
    assert patch_results["rope_ids_dtype"] == "torch.float32" and patch_results["rope_ids_exact"]
    if patch_results["fused_available"]:
        assert patch_results["tmax0_equals_tmax_t"]


def test_non_wan_model_is_rejected(patch_results):
    assert "native Wan" in patch_results["non_wan_error"]


# --- the nodes in-process (no server): Wan 2.2 TI2V conditioning, progress / interrupt, errors,
# the reconstructor under model management, core-Splat interop --------------------------------------
NODES_SCRIPT = r'''
import importlib, json, tempfile, traceback
from pathlib import Path
import torch
from safetensors.torch import save_file
import comfy.sd, comfy.sample, comfy.model_base, comfy.model_management as mm, comfy.model_patcher
import comfy.patcher_extension, comfy.utils, comfy.latent_formats, folder_paths
from comfy_api.latest import io
import comfy_api.latest as latest
from comfy_tiny_models import tiny_wan_dit

wan_patch = importlib.import_module("fuse4d.comfy_nodes.wan_patch")
latents = importlib.import_module("fuse4d.comfy_nodes.latents")
grid_nodes = importlib.import_module("fuse4d.comfy_nodes.grid")
recon_nodes = importlib.import_module("fuse4d.comfy_nodes.reconstruct")
types = importlib.import_module("fuse4d.comfy_nodes.types")
splats = importlib.import_module("fuse4d.comfy_nodes.splats")
from fuse4d.comfy_nodes.fused_attention import FusedViewTimeAttention
from fuse4d.core.cameras import orbit_cameras
from fuse4d.core.scene import sample_scene

tmp = Path(tempfile.mkdtemp())
result = {}


def error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the message is what is checked
        return f"{type(e).__name__}: {e}"
    return ""


class StubWan22VAE:
    """Stands in for the Wan 2.2 VAE (48 channels, 16x spatial, 4x temporal; its real random weights
    would be 2.8 GB): deterministic encodings, one latent frame for the first pixel frame + 1 per 4."""
    latent_channels, latent_dim = 48, 3
    downscale_ratio = (lambda a: max(0, (a + 3) // 4), 16, 16)

    def encode(self, images):
        n, h, w, _ = images.shape
        seed = int(images.double().sum().item() * 1000) % (2 ** 31)
        return torch.randn(1, 48, (n - 1) // 4 + 1, h // 16, w // 16, generator=torch.Generator().manual_seed(seed))


# 1. Wan 2.2 TI2V layout: ComfyUI's WAN22 model, frozen-time row + fixed-view video as clean latents
save_file(tiny_wan_dit(channels=48), str(tmp / "wan22.safetensors"))
base = comfy.sd.load_diffusion_model(str(tmp / "wan22.safetensors"))
result["wan22_class"] = type(base.model).__name__
vae = StubWan22VAE()
V, F = 2, 5
empty = latents.Empty4DLatent.execute(vae=vae, width=64, height=64, views=V, frames=F, batch_size=1).result[0]
gen = torch.Generator().manual_seed(0)
frozen = torch.rand(V, 64, 64, 3, generator=gen)
video = torch.rand(F, 64, 64, 3, generator=gen)
row = latents.ReferenceFrames4D.execute(vae=vae, latent=empty, frozen_time=frozen).result[0]
both = latents.ReferenceFrames4D.execute(vae=vae, latent=row, fixed_view=video).result[0]
t_lat = 2
result["mask_row"] = row["noise_mask"][0, 0, :, 0, 0].tolist()
result["mask_both"] = both["noise_mask"][0, 0, :, 0, 0].tolist()
result["chain_keeps_row"] = bool(torch.equal(both["samples"][:, :, t_lat], row["samples"][:, :, t_lat]))
result["row_is_encoding"] = bool(torch.equal(row["samples"][:, :, t_lat], vae.encode(frozen[1:2])[:, :, 0]))
result["no_refs_error"] = error_of(lambda: latents.ReferenceFrames4D.execute(vae=vae, latent=empty))
result["bad_frozen_error"] = error_of(lambda: latents.ReferenceFrames4D.execute(vae=vae, latent=empty,
                                                                              frozen_time=frozen[:1]))
result["bad_frames_error"] = error_of(lambda: latents.Empty4DLatent.execute(vae=vae, width=64, height=64, views=2,
                                                                           frames=6, batch_size=1))
seen_t = []


def record_timesteps(executor, *args, **kwargs):
    seen_t.append(args[1].detach().clone())
    return executor(*args, **kwargs)


fused = wan_patch.patch_fused_view_time(base, views=V)
fused.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_t", record_timesteps)
samples, mask = both["samples"], both["noise_mask"]
noise = torch.randn(samples.shape, generator=gen)
pos = [[torch.randn(1, 7, 4096, generator=gen), {}]]
neg = [[torch.randn(1, 5, 4096, generator=gen), {}]]


def sample(model, m=mask):
    return comfy.sample.sample(model, noise.clone(), 2, 3.0, "euler", "simple", pos, neg, samples.clone(),
                               noise_mask=m, disable_pbar=True, seed=0)


out = sample(fused)
known = mask[0, 0, :, 0, 0] == 0
result["known_kept"] = float((out[:, :, known] - samples[:, :, known]).abs().max())
result["generated_finite"] = bool(torch.isfinite(out).all())
result["generated_moved"] = float((out[:, :, ~known] - samples[:, :, ~known]).abs().mean())
# WAN22 gives each latent frame its own timestep from the mask: 0 for the known frames of every view
t = seen_t[0].reshape(seen_t[0].shape[0], -1)
result["t_known"] = float(t[:, known].abs().max())
result["t_unknown_min"] = float(t[:, ~known].min())
plain = sample(base)
result["wan22_v1_equal"] = bool(torch.equal(sample(wan_patch.patch_fused_view_time(base, views=1)), plain))
result["wan22_fused_differs"] = not torch.allclose(out, plain)
# with the settings of a Fuse4D-trained Wan 2.2: the trainer's timesteps (the sampler's on every frame,
# or with per-token timesteps 0 on the known frames) and the clean known latents as input
from fuse4d.core.wan.conditioning import ReferenceConditioning
clean = comfy.latent_formats.Wan22().process_in(samples)
for per_token in (False, True):
    seen = []
    def record(executor, *args, **kwargs):
        seen.append((args[0].detach().clone(), args[1].detach().clone()))
        return executor(*args, **kwargs)
    trained = wan_patch.patch_fused_view_time(base, views=V,
                                              conditioning=ReferenceConditioning(per_token_timestep=per_token))
    trained.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_t", record)
    sample(trained)
    x_in, t_in = seen[0]
    key = "per_token" if per_token else "scalar"
    result[f"{key}_t_shape"] = list(t_in.shape[1:])  # per batch row
    result[f"{key}_t"] = t_in.reshape(t_in.shape[0], -1)[0].tolist()
    result[f"{key}_known_clean"] = float((x_in[:, :, known] - clean[:, :, known]).abs().max())

# 2. clear errors for wrong inputs
not_wan = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), load_device="cpu", offload_device="cpu")
result["non_wan_node_error"] = error_of(lambda: FusedViewTimeAttention.execute(model=not_wan, views=2, t_max=0,
                                                                              backend="auto"))
result["count_error"] = error_of(lambda: recon_nodes.Reconstruct4DGaussians.execute(
    reconstructor=None, images=torch.rand(7, 8, 8, 3), views=2))
result["grid_count_error"] = error_of(lambda: recon_nodes.Reconstruct4DGaussians.execute(
    reconstructor=None, images=torch.rand(6, 8, 8, 3), views=0, grid=types.GridInfo(views=2, frames=4)))
result["decode_views_error"] = error_of(lambda: grid_nodes.Decode4DGrid.execute(
    vae=vae, samples={"samples": torch.zeros(1, 48, 5, 4, 4)}, views=2))
result["slice_error"] = error_of(lambda: grid_nodes.slice_grid(torch.rand(8, 4, 4, 3), types.GridInfo(2, 4),
                                                                 "frozen time", 4))

# 3. the reconstructor: folder_paths registration, licence, ModelPatcher under model management
from fuse4d.core.recon import write_tiny_reconstructor
folder_paths.models_dir = str(tmp / "models")
write_tiny_reconstructor(tmp / "models" / "fuse4d" / "tiny.safetensors")
recon_nodes.register_folders()
result["recon_files"] = recon_nodes.reconstructor_files()
loaded = recon_nodes.LoadReconstructor.execute(weights="fuse4d/tiny.safetensors")
handle, licence = loaded.result
result["licence_own"] = licence
result["handle_patcher"] = isinstance(handle.patcher, comfy.model_patcher.ModelPatcher)
bar_calls = []
comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: bar_calls.append((value, total)))
anim = recon_nodes.Reconstruct4DGaussians.execute(reconstructor=handle, images=torch.rand(4 * 3, 56, 56, 3),
                                                   views=4).result[0]
result["recon_frames"], result["recon_cameras"] = len(anim.frames), len(anim.cameras)
result["recon_progress"] = bar_calls[-1] if bar_calls else None
result["recon_loaded_by_mm"] = any(m.model is handle.patcher for m in mm.current_loaded_models)
# an interrupt arriving while the backbone's layer 1 runs stops the pass after that layer
agg = handle.patcher.model.aggregator
layers_run = []
hooks = [b.register_forward_hook(lambda mod, args, out, i=i: layers_run.append(i)) for i, b in enumerate(agg.global_blocks)]
hooks.append(agg.frame_blocks[1].register_forward_hook(lambda mod, args, out: mm.interrupt_current_processing(True)))
bar_calls.clear()
result["recon_interrupt_error"] = error_of(lambda: recon_nodes.Reconstruct4DGaussians.execute(
    reconstructor=handle, images=torch.rand(4 * 3, 56, 56, 3), views=4))
for h in hooks:
    h.remove()
result["recon_interrupt_layers"] = [layers_run, len(agg.global_blocks)]
result["recon_interrupt_bar"] = bar_calls[-1] if bar_calls else None
result["recon_interrupt_cleared"] = not mm.processing_interrupted()
mm.unload_all_models()
result["recon_unloaded"] = not any(m.model is handle.patcher for m in mm.current_loaded_models)
vggt_like = {"aggregator.camera_token": torch.zeros(1, 2, 1, 1024, dtype=torch.float16),
             "aggregator.frame_blocks.23.attn.qkv.weight": torch.zeros(3072, 1024, dtype=torch.float16),
             "aggregator.global_blocks.23.attn.qkv.weight": torch.zeros(3072, 1024, dtype=torch.float16),
             "camera_head.pose_branch.fc2.weight": torch.zeros(9, 1024, dtype=torch.float16)}
save_file(vggt_like, str(tmp / "model.safetensors"))
result["licence_vggt"] = recon_nodes.licence_for(str(tmp / "model.safetensors"), "vggt/model.safetensors")
result["licence_vggt_commercial"] = recon_nodes.licence_for(str(tmp / "model.safetensors"),
                                                             "vggt/VGGT-1B-Commercial.safetensors")

# 4. progress bars and interrupt checks in a long loop (Render 4D, one camera per step)
g = sample_scene(0)[::6]  # thinned: quick CPU renders
cams = orbit_cameras(2, 3.0, 15.0, 40.0, width=24, height=16)
anim3 = types.Animated4D(frames=[g, g, g], cameras=cams)
bar_calls.clear()
frames = splats.Render4D.execute(gaussians=anim3, mode="fixed view", index=1, width=0, height=0).result[0]
result["render_shape"] = list(frames.shape)
result["render_progress"] = bar_calls[-1] if bar_calls else None
orbit = splats.Render4D.execute(gaussians=anim3, mode="orbit", index=0, width=0, height=0).result[0]
view0 = splats.Render4D.execute(gaussians=anim3, mode="fixed view", index=0, width=0, height=0).result[0]
result["orbit_shape"] = list(orbit.shape)
result["orbit_starts_at_view"] = float((orbit[0] - view0[0]).abs().max())
result["orbit_moves"] = float((orbit[1] - orbit[0]).abs().mean())
centre = splats.scene_frame(g)[0]
ring = splats.orbit_from(cams[0:1], centre, 4)
dist = (ring.centers - centre).norm(dim=-1)
result["orbit_radius_spread"] = float(dist.max() - dist.min())
mm.interrupt_current_processing(True)
result["interrupt_error"] = error_of(lambda: splats.Render4D.execute(gaussians=anim3, mode="orbit", index=0,
                                                                    width=24, height=16))
result["interrupt_cleared"] = not mm.processing_interrupted()
comfy.utils.set_progress_bar_global_hook(None)

# 5. core ComfyUI's Splat (newer releases), simulated: the same socket name and payload layout
class SPLAT:
    def __init__(self, positions, scales, rotations, opacities, sh, counts=None):
        self.positions, self.scales, self.rotations = positions, scales, rotations
        self.opacities, self.sh, self.counts = opacities, sh, counts


result["splat_type_old"] = types.SplatType.io_type
io.Splat = io.Custom("SPLAT")
latest.Types.SPLAT = SPLAT
try:
    importlib.reload(types)
    importlib.reload(splats)
    result["splat_type_new"] = splats.LoadSplat.define_schema().outputs[0].io_type
    core = splats.to_splat_output(g)
    result["core_payload"] = type(core).__name__
    result["core_shapes"] = [list(core.positions.shape), list(core.opacities.shape), list(core.sh.shape)]
    back = splats.to_core_gaussians(core)
    result["roundtrip"] = max(float((back.means - g.means).abs().max()),
                              float((back.scales - g.scales).abs().max()),
                              float((back.opacities - g.opacities).abs().max()),
                              float((back.rotations_normalized - g.rotations_normalized).abs().max()),
                              float((back.sh - g.sh).abs().max()))
    n = len(g)
    padded = SPLAT(*(torch.stack([x[0], torch.roll(x[0], 3, 0)]) for x in (core.positions, core.scales, core.rotations,
                                                                          core.opacities, core.sh)),
                   counts=torch.tensor([n, n - 10]))
    result["padded_count"] = len(splats.to_core_gaussians(padded, index=1))
    views = splats.RenderFrozenTimeViews.execute(splat=core, views=2, width=24, height=16, radius=0.0,
                                                 elevation_deg=10.0, arc_deg=30.0, fov_deg=50.0).result[0]
    views_own = splats.RenderFrozenTimeViews.execute(splat=g, views=2, width=24, height=16, radius=0.0,
                                                     elevation_deg=10.0, arc_deg=30.0, fov_deg=50.0).result[0]
    result["core_render_diff"] = float((views - views_own).abs().max())
    frame = splats.SplatFrame4D.execute(gaussians=anim3, timestep=2).result[0]
    result["frame_payload"] = type(frame).__name__
finally:
    del io.Splat
    del latest.Types.SPLAT
    importlib.reload(types)
    importlib.reload(splats)
print(json.dumps(result))
'''


@pytest.fixture(scope="module")
def node_results(all_results):
    return all_results["nodes"]


def test_wan22_ti2v_reference_frames_are_kept_per_view(node_results):
    r = node_results
    assert r["wan22_class"] == "WAN22"
    # view-major latent frames [v0 t0, v0 t1, v1 t0, v1 t1]: the frozen-time row is t0 of every view
    assert r["mask_row"] == [0.0, 1.0, 0.0, 1.0]
    # + the fixed-view video (view 0, 5 frames = 2 latent frames), chained: the row stays known
    assert r["mask_both"] == [0.0, 0.0, 0.0, 1.0]
    assert r["chain_keeps_row"] and r["row_is_encoding"]
    assert r["known_kept"] < 1e-4, "sampling changed a known (reference) latent frame"
    assert r["generated_finite"] and r["generated_moved"] > 1e-3
    assert r["t_known"] == 0.0 and r["t_unknown_min"] > 0.0  # Wan 2.2: clean frames at timestep 0
    assert r["wan22_v1_equal"] and r["wan22_fused_differs"]
    # the settings of a Fuse4D-trained Wan 2.2 (patch + ReferenceConditioning): its trainer's timesteps
    t = r["t_unknown_min"]
    assert r["scalar_t_shape"] == [] and r["scalar_t"] == [pytest.approx(t)]
    assert r["per_token_t_shape"] == [4] and r["per_token_t"] == [0.0, 0.0, 0.0, pytest.approx(t)]
    assert r["scalar_known_clean"] < 1e-5 and r["per_token_known_clean"] < 1e-5


def test_clear_errors_for_wrong_inputs(node_results):
    r = node_results
    assert "native Wan" in r["non_wan_node_error"] and "Linear" in r["non_wan_node_error"]
    assert "IMAGE holds 7 images, not V x T for V=2 views" in r["count_error"]
    assert "IMAGE holds 6 images" in r["grid_count_error"] and "2 views x 4 frames" in r["grid_count_error"]
    assert "not a multiple of views=2" in r["decode_views_error"]
    assert "time index 4 is outside 0..3" in r["slice_error"]
    assert "connect frozen_time" in r["no_refs_error"]
    assert "frozen_time holds 1 images; the grid has 2 views" in r["bad_frozen_error"]
    assert "1 + 4k" in r["bad_frames_error"]


def test_reconstructor_is_managed_and_licensed(node_results):
    r = node_results
    assert "fuse4d/tiny.safetensors" in r["recon_files"]
    assert r["handle_patcher"] and r["recon_loaded_by_mm"] and r["recon_unloaded"]
    assert (r["recon_frames"], r["recon_cameras"]) == (3, 4)
    assert r["recon_progress"] == [3, 3]  # one step per timestep
    # interrupted inside the backbone pass: it stops after the layer it arrived in, before any head
    assert r["recon_interrupt_error"].startswith("InterruptProcessingException")
    assert r["recon_interrupt_layers"] == [[0, 1], 4] and r["recon_interrupt_bar"] is None
    assert r["recon_interrupt_cleared"]
    assert "Fuse4D checkpoint" in r["licence_own"] and "CC BY-NC 4.0" in r["licence_own"]
    assert "CC BY-NC 4.0" in r["licence_vggt"] and "non-commercial" in r["licence_vggt"]
    assert "VGGT-1B-Commercial" in r["licence_vggt_commercial"] and "BY-NC" not in r["licence_vggt_commercial"]


def test_progress_bar_and_interrupt_in_long_loops(node_results):
    r = node_results
    assert r["render_shape"] == [3, 16, 24, 3]
    assert r["render_progress"] == [3, 3]
    assert r["interrupt_error"].startswith("InterruptProcessingException")
    # the orbit turns around the scene, starting at the chosen camera
    assert r["orbit_shape"] == [3, 16, 24, 3] and r["orbit_starts_at_view"] < 1e-5 and r["orbit_moves"] > 1e-3
    assert r["orbit_radius_spread"] < 1e-4
    assert r["interrupt_cleared"]


def test_core_splat_interop_when_present(node_results):
    r = node_results
    assert r["splat_type_old"] == "FUSE4D_SPLAT"  # v0.3.75 has no core Splat
    assert r["splat_type_new"] == "SPLAT" and r["core_payload"] == "SPLAT" and r["frame_payload"] == "SPLAT"
    n = r["core_shapes"][0][1]
    assert r["core_shapes"][0] == [1, n, 3] and r["core_shapes"][1] == [1, n, 1] and r["core_shapes"][2][:2] == [1, n]
    assert r["roundtrip"] < 1e-5
    assert r["padded_count"] == n - 10
    assert r["core_render_diff"] < 1e-4
