# SPDX-License-Identifier: GPL-3.0-or-later
"""Wan transformer weights in either key layout -> a diffusers WanTransformer3DModel.

Layouts:
  "original"  the Wan release / ComfyUI layout (`blocks.0.self_attn.q.weight`, `head.head.weight`, ...),
              ComfyUI files may prefix every key with `model.diffusion_model.`;
  "diffusers" WanTransformer3DModel's own names (`blocks.0.attn1.to_q.weight`, `proj_out.weight`, ...).
Naming facts (from reading both model definitions): the original block calls its cross-attention norm
`norm3` and its feed-forward norm `norm2`; diffusers swaps the two names. Only the cross-attention norm
has weights. Modulations are [1, 6, dim] per block and [1, 2, dim] in the head in both layouts.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

import torch

from ..extras import require
from ..weights_file import CONVERT_HINT, WeightsFileError, check_safetensors

COMFY_PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class WanConfig:
    """Architecture of a Wan transformer (names follow the original release's config)."""
    dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    cross_attn_norm: bool = True
    rope_max_seq_len: int = 1024

    def diffusers_kwargs(self) -> dict:
        return dict(patch_size=tuple(self.patch_size), num_attention_heads=self.num_heads,
                    attention_head_dim=self.dim // self.num_heads, in_channels=self.in_dim,
                    out_channels=self.out_dim, text_dim=self.text_dim, freq_dim=self.freq_dim,
                    ffn_dim=self.ffn_dim, num_layers=self.num_layers, cross_attn_norm=self.cross_attn_norm,
                    qk_norm="rms_norm_across_heads", eps=self.eps, rope_max_seq_len=self.rope_max_seq_len)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WanConfig":
        d = dict(d)
        d["patch_size"] = tuple(d.get("patch_size", (1, 2, 2)))
        return cls(**d)


# Published sizes (Wan 2.1 T2V 1.3B config; Wan 2.2 TI2V 5B config: 48-channel VAE 4x16x16).
WAN21_T2V_1_3B = WanConfig(dim=1536, num_layers=30, num_heads=12, ffn_dim=8960, in_dim=16, out_dim=16)
WAN22_TI2V_5B = WanConfig(dim=3072, num_layers=30, num_heads=24, ffn_dim=14336, in_dim=48, out_dim=48)
# Tests and the CPU demo: same architecture, tiny. head dim 16 -> RoPE split 6/4/6... (t gets the rest).
WAN_TINY = WanConfig(dim=32, num_layers=2, num_heads=2, ffn_dim=64, in_dim=4, out_dim=4, text_dim=16, freq_dim=32)

CONFIGS = {"wan2.1-t2v-1.3b": WAN21_T2V_1_3B, "wan2.2-ti2v-5b": WAN22_TI2V_5B, "tiny": WAN_TINY}

# Whole-name-component renames, original -> diffusers, applied to the part after `blocks.N.`.
_BLOCK_RENAMES = [
    ("self_attn.q.", "attn1.to_q."), ("self_attn.k.", "attn1.to_k."), ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."), ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."), ("cross_attn.k.", "attn2.to_k."), ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."), ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("cross_attn.k_img.", "attn2.add_k_proj."), ("cross_attn.v_img.", "attn2.add_v_proj."),
    ("cross_attn.norm_k_img.", "attn2.norm_added_k."),
    ("norm3.", "norm2."),  # the cross-attention norm (the only block norm with weights)
    ("ffn.0.", "ffn.net.0.proj."), ("ffn.2.", "ffn.net.2."),
]
_TOP_RENAMES = [
    ("patch_embedding.", "patch_embedding."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
]
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.*)$")


def _rename(name: str, table: list[tuple[str, str]], reverse: bool) -> str | None:
    for src, dst in table:
        a, b = (dst, src) if reverse else (src, dst)
        if name.startswith(a):
            return b + name[len(a):]
    return None


def original_to_diffusers_key(key: str) -> str:
    """Map one original/ComfyUI key to its diffusers name (raises KeyError for unknown keys)."""
    if key.startswith(COMFY_PREFIX):
        key = key[len(COMFY_PREFIX):]
    m = _BLOCK_RE.match(key)
    if m:
        if m.group(2) == "modulation":
            return f"blocks.{m.group(1)}.scale_shift_table"
        rest = _rename(m.group(2), _BLOCK_RENAMES, reverse=False)
        if rest is not None:
            return f"blocks.{m.group(1)}.{rest}"
    elif key == "head.modulation":
        return "scale_shift_table"
    else:
        new = _rename(key, _TOP_RENAMES, reverse=False)
        if new is not None:
            return new
    raise KeyError(f"unknown key in an original-layout Wan checkpoint: {key!r}")


def diffusers_to_original_key(key: str) -> str:
    """Inverse of `original_to_diffusers_key` (without the ComfyUI prefix)."""
    m = _BLOCK_RE.match(key)
    if m:
        if m.group(2) == "scale_shift_table":
            return f"blocks.{m.group(1)}.modulation"
        rest = _rename(m.group(2), _BLOCK_RENAMES, reverse=True)
        if rest is not None:
            return f"blocks.{m.group(1)}.{rest}"
    elif key == "scale_shift_table":
        return "head.modulation"
    else:
        new = _rename(key, _TOP_RENAMES, reverse=True)
        if new is not None:
            return new
    raise KeyError(f"unknown key in a diffusers-layout Wan state dict: {key!r}")


def detect_layout(state_dict: dict) -> str:
    """'original' (Wan release / ComfyUI) or 'diffusers'."""
    keys = list(state_dict)
    if any(k.startswith(COMFY_PREFIX) or k.startswith("head.head.") or ".self_attn." in k for k in keys):
        return "original"
    if any(k.startswith("proj_out.") or ".attn1." in k or k.startswith("condition_embedder.") for k in keys):
        return "diffusers"
    raise ValueError("not a Wan transformer state dict: found neither original (self_attn/head.head) nor "
                     f"diffusers (attn1/proj_out) keys; first keys: {keys[:5]}")


def to_diffusers_state_dict(state_dict: dict) -> dict:
    """Any supported layout -> diffusers names (tensors are not copied)."""
    if detect_layout(state_dict) == "diffusers":
        return dict(state_dict)
    return {original_to_diffusers_key(k): v for k, v in state_dict.items()}


def to_original_state_dict(state_dict: dict, comfy_prefix: bool = False) -> dict:
    """diffusers names -> original names (used to write test files and for export)."""
    prefix = COMFY_PREFIX if comfy_prefix else ""
    return {prefix + diffusers_to_original_key(k): v for k, v in state_dict.items()}


def build_wan_transformer(config: WanConfig, device: torch.device | str | None = None):
    """An (untrained) diffusers WanTransformer3DModel with this architecture."""
    WanTransformer3DModel = require("diffusers").WanTransformer3DModel

    with torch.device(device or "cpu"):
        return WanTransformer3DModel(**config.diffusers_kwargs())


def read_state_dict(path: str | os.PathLike) -> dict:
    """A .safetensors file, or a folder of them (sharded diffusers / Wan releases)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors files in {path}")
        out: dict = {}
        for f in files:
            out.update(_load_checked(os.path.join(path, f)))
        return out
    if not os.path.exists(path):
        raise FileNotFoundError(f"Wan checkpoint not found: {path}")
    if not path.endswith(".safetensors"):
        raise WeightsFileError(f"{path}: Wan weights must be .safetensors (pickled checkpoints are not "
                               f"loaded); {CONVERT_HINT}")
    return _load_checked(path)


def _load_checked(path: str) -> dict:
    """Checked first (pickles refused, header bounded), then loaded; one error type either way."""
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types for a corrupt body
        raise WeightsFileError(f"{path}: not a readable safetensors file ({exc})") from None


def infer_config(state_dict: dict) -> WanConfig:
    """Read the architecture off the tensor shapes (either layout)."""
    sd = to_diffusers_state_dict(state_dict)
    try:
        pe = sd["patch_embedding.weight"]  # [dim, in, pt, ph, pw]
        dim, in_dim = pe.shape[0], pe.shape[1]
        patch = tuple(int(s) for s in pe.shape[2:])
        layers = 1 + max(int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k)))
        ffn_dim = sd["blocks.0.ffn.net.0.proj.weight"].shape[0]
        text_dim = sd["condition_embedder.text_embedder.linear_1.weight"].shape[1]
        freq_dim = sd["condition_embedder.time_embedder.linear_1.weight"].shape[1]
        out_dim = sd["proj_out.weight"].shape[0] // (patch[0] * patch[1] * patch[2])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"cannot infer the Wan architecture from this state dict: missing {exc}") from exc
    heads = {1536: 12, 3072: 24, 5120: 40}.get(dim)
    if heads is None:
        raise ValueError(f"cannot infer the head count for dim={dim}; pass a WanConfig")
    return WanConfig(dim=dim, num_layers=layers, num_heads=heads, ffn_dim=ffn_dim, in_dim=in_dim, out_dim=out_dim,
                     patch_size=patch, text_dim=text_dim, freq_dim=freq_dim,
                     cross_attn_norm="blocks.0.norm2.weight" in sd)


_FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
             if hasattr(torch, n))


def _cast(t: torch.Tensor, device, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    if t.dtype in _FP8:
        return t.to(device=device, dtype=torch.bfloat16)
    return t.to(device=device)


def load_wan_transformer(path_or_state_dict, config: WanConfig | str | None = None,
                         device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """Load Wan weights in either layout into a diffusers WanTransformer3DModel (strict: every key used).

    `config`: a WanConfig, a name from CONFIGS, or None to infer from the shapes (known dims only).
    `dtype`: cast floating-point weights to it; None keeps every tensor in its stored dtype, except
    8-bit floats (fp8 files), which become bf16 (torch cannot compute in them).
    """
    sd = path_or_state_dict if isinstance(path_or_state_dict, dict) else read_state_dict(path_or_state_dict)
    sd = to_diffusers_state_dict(sd)
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown Wan config {config!r}; choose one of {sorted(CONFIGS)}")
        config = CONFIGS[config]
    config = config or infer_config(sd)
    model = build_wan_transformer(config, device="meta")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(f"Wan checkpoint does not match the {config} architecture: missing {missing[:8]}"
                         f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{'...' if len(unexpected) > 8 else ''}")
    for k, t in expected.items():
        if tuple(sd[k].shape) != tuple(t.shape):
            raise ValueError(f"Wan checkpoint tensor {k} has shape {tuple(sd[k].shape)}, expected {tuple(t.shape)}")
    model.load_state_dict({k: _cast(v, device, dtype) for k, v in sd.items()}, strict=True, assign=True)
    # Non-persistent buffers (RoPE tables) were created on meta: rebuild them on the real device.
    real_rope = type(model.rope)(model.rope.attention_head_dim, model.rope.patch_size, model.rope.max_seq_len)
    model.rope = real_rope.to(device)
    return model.eval()
