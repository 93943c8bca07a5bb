# SPDX-License-Identifier: GPL-3.0-or-later
"""Fine-tuned Wan models and LoRAs as files ComfyUI's stock loaders read.

* the model: one .safetensors in the original Wan key layout (`blocks.0.self_attn.q.weight`, ...),
  which UNETLoader ("Load Diffusion Model") detects as Wan 2.1 / 2.2;
* a LoRA: `diffusion_model.<original module>.lora_A.weight` [r, in], `.lora_B.weight` [out, r] and
  `.alpha` (scale alpha / r), a key format LoraLoaderModelOnly maps onto the base Wan's self-attention.

Both carry the Fuse4D settings the model was trained with in the safetensors metadata under "fuse4d"
(JSON: views, frames, t_max, attention, conditioning, reference_conditioning, ...); the pack's Fused
View-Time Attention node reads them (`read_fuse4d_settings`) and feeds the reference frames the way the
trainer did (`conditioning_of`, core.wan.conditioning.ReferenceConditioning):
* clean-latent replacement (every model): known cells hold the clean reference latents;
* the paper's patch-embedding addition: no weights beyond Wan's (it reuses the model's own patch
  embedding), so the file is a plain Wan; the node adds the reference term to the model input, which
  the linear patch embedding turns into exactly the added embedding;
* channel concat (in_dim 2C + 1, + position / fixed-view change / grid channels): also a plain Wan file.
  ComfyUI's Wan detection reads in_dim from the patch embedding and builds that network (a T2V Wan
  whose extra input channels ComfyUI fills with zeros); the node fills them with the references, the
  flag and the other channels instead;
* per-token timesteps (timestep 0 on known cells), per latent frame.
ComfyUI's Wan detection fixes some architecture choices (head dim 128, 256 frequency dims, 4096-wide
text, patch 1x2x2): a model outside them is refused, as is a study baseline (sequential / parallel
attention), a model with ray channels (it reads the views' cameras, which ComfyUI's sampling does not
carry) or a LoRA on layers other than self-attention.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .conditioning import ReferenceConditioning
from .keys import WanConfig, diffusers_to_original_key, read_state_dict, to_diffusers_state_dict

METADATA_KEY = "fuse4d"
SETTINGS_FORMAT = 1
LORA_PREFIX = "diffusion_model."
_LORA_RE = re.compile(r"^(blocks\.\d+\.attn1\.(?:to_q|to_k|to_v|to_out\.0))\.(lora_A|lora_B)$")


def comfy_problems(wan: WanConfig) -> list[str]:
    """Why ComfyUI's Wan detection would build a different network from these weights ([] = none)."""
    found = []
    if wan.dim % 128 or wan.num_heads != wan.dim // 128:
        found.append(f"ComfyUI reads the head count as dim / 128; this model has dim {wan.dim} with "
                     f"{wan.num_heads} heads")
    if wan.freq_dim != 256:
        found.append(f"ComfyUI's Wan has 256 time-frequency dims; this model has {wan.freq_dim}")
    if wan.text_dim != 4096:
        found.append(f"ComfyUI's Wan takes 4096-wide text (umT5); this model takes {wan.text_dim}")
    if tuple(wan.patch_size) != (1, 2, 2):
        found.append(f"ComfyUI's Wan patches 1x2x2; this model patches {'x'.join(map(str, wan.patch_size))}")
    if not wan.cross_attn_norm or wan.eps != 1e-6:
        found.append("ComfyUI's Wan has a cross-attention norm and eps 1e-6")
    return found


def settings_of(model_cfg, run_cfg: dict | None = None) -> dict:
    """The Fuse4D settings stored with an export (`model_cfg`: VideoModelConfig; `run_cfg`: the
    trainer's config dict, which knows the grid it trained on)."""
    conditioning = ["clean-latent"]
    if model_cfg.patch_embed_conditioning:
        conditioning.append("patch-embed")
    if model_cfg.concat_reference:
        conditioning.append("channel-concat")
    out = {"format": SETTINGS_FORMAT, "t_max": int(model_cfg.t_max), "attention": model_cfg.attention,
           "conditioning": conditioning, "per_token_timestep": bool(model_cfg.per_token_timestep),
           "prediction": model_cfg.prediction, "flow_shift": float(model_cfg.flow_shift), "codec": model_cfg.codec,
           "wan": model_cfg.wan.to_dict(), "reference_conditioning": ReferenceConditioning.of(model_cfg).to_dict()}
    if run_cfg:
        out.update(views=int(run_cfg["views"]), frames=int(run_cfg["frames"]), train=run_cfg.get("train", ""),
                   base=os.path.basename(run_cfg.get("init") or "") or None)
    return out


def _refuse_unsupported(model_cfg, what: str) -> None:
    problems = comfy_problems(model_cfg.wan)
    if model_cfg.attention != "fused":
        problems.append(f"it is a study baseline (attention {model_cfg.attention!r}); the ComfyUI pack runs "
                        f"the fused pattern only")
    if model_cfg.concat_reference and model_cfg.ray_bands:
        problems.append(f"its input channels include camera rays ({model_cfg.ray_bands} ray bands), and "
                        f"ComfyUI's sampling carries no cameras to the model")
    if model_cfg.prediction != "velocity":
        problems.append(f"it predicts {model_cfg.prediction!r}, not Wan's velocity")
    if model_cfg.codec != "wan-vae":
        problems.append(f"its latents come from the {model_cfg.codec!r} codec, not Wan's VAE")
    if problems:
        raise ValueError(f"cannot export {what} for ComfyUI: " + "; ".join(problems))


# ---------------------------------------------------------------- reading runs

def _latest_checkpoint(run: Path) -> Path | None:
    root = run / "checkpoints"
    steps = sorted(p for p in root.glob("step_*") if (p / "state.json").is_file()) if root.is_dir() else []
    return steps[-1] if steps else None


def read_run(path: str | os.PathLike) -> dict:
    """A training run folder (model/ + checkpoints/) or a bare model folder (config.json +
    model.safetensors) -> {"model_dir", "model_cfg", "run_cfg" (or None), "checkpoint" (or None)}."""
    from .model_io import VideoModelConfig

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a folder (a train-video --out folder or a model folder)")
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    ckpt = _latest_checkpoint(path)
    if not (model_dir / "config.json").is_file():
        if ckpt is None:
            raise FileNotFoundError(f"{path}: neither a model folder (config.json) nor a train-video run "
                                    f"(model/, checkpoints/)")
        model_dir = None
    run_cfg = json.loads((ckpt / "state.json").read_text())["config"] if ckpt else None
    if model_dir is not None:
        model_cfg = VideoModelConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
    else:
        model_cfg = VideoModelConfig.from_dict(run_cfg["model"])
    return {"model_dir": model_dir, "model_cfg": model_cfg, "run_cfg": run_cfg, "checkpoint": ckpt}


def _save(tensors: dict, out: str | os.PathLike, settings: dict) -> Path:
    from safetensors.torch import save_file

    from ..io import atomic_output

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: ComfyUI exports are .safetensors files")
    with atomic_output(out) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={METADATA_KEY: json.dumps(settings, sort_keys=True), "format": "pt"})
    return out


# ---------------------------------------------------------------- exports

def export_model(run: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """The run's final model (LoRA merged by the trainer) as one original-layout Wan file."""
    info = read_run(run)
    if info["model_dir"] is None:
        raise FileNotFoundError(f"{run}: the run has no final model/ yet (training not finished)")
    _refuse_unsupported(info["model_cfg"], f"the model in {info['model_dir']}")
    sd = to_diffusers_state_dict(read_state_dict(info["model_dir"] / "model.safetensors"))
    extra = [k for k in sd if k.split(".")[0] not in ("blocks", "patch_embedding", "condition_embedder",
                                                      "proj_out", "scale_shift_table", "norm_out")]
    if extra:
        raise ValueError(f"cannot export the model for ComfyUI: keys beyond Wan's: {extra[:4]}")
    try:
        tensors = {diffusers_to_original_key(k): (v.to(dtype) if dtype else v) for k, v in sd.items()}
    except KeyError as exc:
        raise ValueError(f"cannot export the model for ComfyUI: {exc.args[0]}") from None
    return _save(tensors, out, dict(settings_of(info["model_cfg"], info["run_cfg"]), kind="model"))


def lora_tensors(trainable: dict, rank: int, alpha: float | None) -> dict:
    """Our adapter parameters (diffusers module names) -> ComfyUI's LoRA keys for the base Wan."""
    out: dict = {}
    other = sorted(k for k in trainable if not _LORA_RE.match(k))
    if other:
        raise ValueError(f"these weights are not a LoRA on Wan's self-attention (q, k, v, o): found "
                         f"{other[:4]}{' ...' if len(other) > 4 else ''}")
    modules = sorted({_LORA_RE.match(k).group(1) for k in trainable})
    scale_alpha = float(alpha if alpha is not None else rank)
    for module in modules:
        a, b = trainable.get(f"{module}.lora_A"), trainable.get(f"{module}.lora_B")
        if a is None or b is None:
            raise ValueError(f"LoRA of {module}: lora_A and lora_B must both be present")
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ValueError(f"LoRA of {module}: rank {a.shape[0]}, the run's config says {rank}")
        name = LORA_PREFIX + diffusers_to_original_key(module + ".weight")[: -len(".weight")]
        out[f"{name}.lora_A.weight"] = a.float()
        out[f"{name}.lora_B.weight"] = b.float()
        out[f"{name}.alpha"] = torch.tensor(scale_alpha)
    if not out:
        raise ValueError("no LoRA weights found")
    return out


def export_lora(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The adapters of a `train-video --train lora` run (its last checkpoint; EMA weights when the run
    kept them, as the merged model does) as a LoRA file for LoraLoaderModelOnly on the base Wan."""
    from safetensors.torch import load_file

    info = read_run(run)
    if info["checkpoint"] is None:
        raise FileNotFoundError(f"{run}: no checkpoints/ (a LoRA is exported from a train-video run folder)")
    run_cfg = info["run_cfg"]
    if run_cfg.get("train") != "lora":
        raise ValueError(f"{run}: the run trained {run_cfg.get('train')!r} weights, not a LoRA; "
                         f"export the model instead (--model-out)")
    _refuse_unsupported(info["model_cfg"], f"the LoRA of {run}")
    ckpt = info["checkpoint"]
    trainable = load_file(str(ckpt / "trainable.safetensors"))
    if (ckpt / "ema.safetensors").is_file():
        trainable.update({k: v for k, v in load_file(str(ckpt / "ema.safetensors")).items() if k in trainable})
    tensors = lora_tensors(trainable, int(run_cfg["lora_rank"]), run_cfg.get("lora_alpha"))
    settings = dict(settings_of(info["model_cfg"], run_cfg), kind="lora", lora_rank=int(run_cfg["lora_rank"]),
                    step=int(json.loads((ckpt / "state.json").read_text())["step"]))
    return _save(tensors, out, settings)


def conditioning_of(settings: dict) -> ReferenceConditioning:
    """How the exported model takes its reference frames, from its stored settings (files written before
    `reference_conditioning` was stored: from the `conditioning` list and `per_token_timestep`)."""
    stored = settings.get("reference_conditioning")
    if isinstance(stored, dict):
        return ReferenceConditioning.from_dict(stored)
    kinds = settings.get("conditioning", [])
    if "channel-concat" in kinds:
        raise ValueError("the settings name channel-concat conditioning but not its input channels")
    return ReferenceConditioning(patch_embed="patch-embed" in kinds,
                                 per_token_timestep=bool(settings.get("per_token_timestep", False)))


def read_fuse4d_settings(path: str | os.PathLike) -> dict | None:
    """The Fuse4D settings stored in an exported file's metadata (None: a file without them)."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), "pt") as f:
        meta = f.metadata() or {}
    text = meta.get(METADATA_KEY)
    if not text:
        return None
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the '{METADATA_KEY}' metadata is not JSON ({exc})") from None
    return settings if isinstance(settings, dict) else None
