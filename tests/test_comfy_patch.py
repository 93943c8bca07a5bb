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
    # The same wiring with V x T where every token sees every token (T = 1) is the base model.
    result["patched_twice_ok"] = pkg.patch_fused_view_time(fused, views=V).model_options[
        "transformer_options"]["optimized_attention_override"].fuse4d_previous is counting_override
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
def patch_results():
    ensure_comfyui()
    return run_with_comfy_path(SCRIPT.replace("PKG", repr("fuse4d")))


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


def test_non_wan_model_is_rejected(patch_results):
    assert "native Wan" in patch_results["non_wan_error"]
