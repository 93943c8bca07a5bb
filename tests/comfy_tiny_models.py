# SPDX-License-Identifier: GPL-3.0-or-later
"""Tiny random models in ComfyUI's own layouts, for tests (run where ComfyUI is importable).

- a Wan 2.1-layout T2V DiT (dim 256 = 2 heads x 128, 2 blocks) -> models/diffusion_models/
  (and, for in-process tests, the same in the Wan 2.2 TI2V 5B layout: 48 latent channels)
- a Wan 2.1-layout VAE (base width 8)                          -> models/vae/
Written with our seeded init (ComfyUI's modules skip weight init), as safetensors.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

WAN_DIT = "fuse4d_tiny_wan21_t2v.safetensors"
WAN_VAE = "fuse4d_tiny_wan21_vae.safetensors"
TEXT_DIM = 4096


def _init_(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        with torch.no_grad():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name or leaf in ("gamma",):
                p.fill_(1.0 if leaf in ("weight", "gamma") else 0.0)
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(fan_in, 1)))


def tiny_wan_dit(layers: int = 2, dim: int = 256, seed: int = 0, channels: int = 16) -> dict[str, torch.Tensor]:
    """channels 16: Wan 2.1 T2V layout; 48: Wan 2.2 TI2V 5B layout (ComfyUI loads it as WAN22, whose
    per-frame timesteps come from the noise mask)."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    model = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=channels, dim=dim,
                     ffn_dim=2 * dim, freq_dim=256, text_dim=TEXT_DIM, out_dim=channels, num_heads=dim // 128,
                     num_layers=layers, operations=comfy.ops.disable_weight_init, device="cpu",
                     dtype=torch.float32)
    _init_(model, seed)
    with torch.no_grad():  # modulation tables stay small, as in trained models
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.mul_(0.1)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def tiny_wan_vae(dim: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    from comfy.ldm.wan.vae import WanVAE

    vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    _init_(vae, seed)
    return {k: v.contiguous() for k, v in vae.state_dict().items()}


def write_tiny_models(models_dir: str | Path) -> dict[str, str]:
    models_dir = Path(models_dir)
    out = {}
    for sub, name, make in (("diffusion_models", WAN_DIT, tiny_wan_dit), ("vae", WAN_VAE, tiny_wan_vae)):
        path = models_dir / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_suffix(".partial")
            save_file(make(), str(tmp))
            tmp.rename(path)
        out[sub] = name
    return out
