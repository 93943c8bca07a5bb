# SPDX-License-Identifier: GPL-3.0-or-later
"""A Fuse4D video model folder: `config.json` (architecture + 4D settings) + `model.safetensors`.

The safetensors file uses the diffusers key layout; `load_video_model` also accepts a bare Wan
checkpoint (either layout) with a config given in code. A "parallel" baseline's file also holds its
sync layers (blocks.N.attn1.parallel_sync.*), the only keys beyond the Wan architecture's.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field

import torch

from .keys import WanConfig, load_wan_transformer


@dataclass
class VideoModelConfig:
    """What the sampler and trainer need to know about a (fine-tuned) 4D video model."""
    wan: WanConfig
    t_max: int = 32                        # RoPE time slots per view (latent frames)
    codec: str = "pixel"                   # "pixel" (tiny models) or "wan-vae"
    pixel_factor: int = 2                  # PixelCodec space-to-depth factor
    patch_embed_conditioning: bool = False  # trained with the paper's additive reference embeddings
    per_token_timestep: bool = False       # timestep 0 on conditioned tokens (Wan 2.2 TI2V style)
    concat_reference: bool = False         # channel conditioning: input [noisy, references, flag], 2C + 1 channels
    position_channels: bool = False        # with concat_reference: + the token's image x, y (2 channels)
    view_change_channels: bool = False     # with concat_reference: + the fixed-view video's change (C channels)
    grid_channels: bool = False            # with concat_reference: + the cell's view and time index (2 channels)
    ray_bands: int = 0                     # with concat_reference: + where camera rays meet a plane (4 per band; needs cameras)
    ray_height: float = 0.35               # that plane's height above the ground (world units, OpenCV world, up -y)
    prediction: str = "velocity"           # network output: "velocity" (Wan) | "reference-residual" | "reference-warp" (flow.py)
    flow_shift: float = 5.0
    attention: str = "fused"               # "fused", a study baseline ("sequential" | "parallel"), or "time"
    extra: dict = field(default_factory=dict)  # e.g. the sampling settings a shipped model was measured with

    @property
    def fold(self) -> int:
        """Pixels folded per latent pixel side: what a "reference-warp" output's flow is upsampled by."""
        return self.pixel_factor if self.codec == "pixel" else 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["wan"] = self.wan.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VideoModelConfig":
        d = dict(d)
        d["wan"] = WanConfig.from_dict(d["wan"])
        return cls(**d)


WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def _keep_other_files(folder: str, into: str) -> None:
    """The folder's files other than the weights and config (an export's record.json, check images,
    licence files), hard-linked (copied where links fail) into the new folder."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for entry in os.scandir(folder):
        if entry.name in (WEIGHTS_FILE, CONFIG_FILE) or entry.name.endswith((".tmp", ".partial")):
            continue
        target = os.path.join(into, entry.name)
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, target, symlinks=True, copy_function=link)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        else:
            link(entry.path, target)


def save_video_model(folder: str | os.PathLike, model: torch.nn.Module, config: VideoModelConfig) -> None:
    """Write config.json and model.safetensors into a new folder beside `folder` (with the folder's
    other files) and swap it in at once: a kill at any moment leaves the old pair or the new one,
    never new weights with an old config."""
    from safetensors.torch import save_file

    from ..io import atomic_folder

    folder = os.fspath(folder)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_folder(folder) as tmp:
        if os.path.isdir(folder):
            _keep_other_files(folder, os.fspath(tmp))
        save_file(sd, os.path.join(tmp, WEIGHTS_FILE), metadata={"format": "pt", "fuse4d": "video-model"})
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config.to_dict(), f, indent=2)


def load_video_model(folder: str | os.PathLike, device: torch.device | str = "cpu",
                     dtype: torch.dtype | str | None = "auto"):
    """(model, VideoModelConfig) from a folder written by `save_video_model` (or the trainer).

    `dtype`: "auto" samples in bf16 on CUDA (fp16 before Ampere) and keeps the stored dtype on the CPU;
    None keeps the stored dtype everywhere; or a torch dtype."""
    folder = os.fspath(folder)
    cfg_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{folder}: no config.json (not a Fuse4D video model folder)")
    with open(cfg_path, encoding="utf-8") as f:
        config = VideoModelConfig.from_dict(json.load(f))
    from .attention_processor import SYNC_NAME, add_sync_layers
    from .keys import read_state_dict

    sd = read_state_dict(os.path.join(folder, WEIGHTS_FILE))
    sync = {k: sd.pop(k) for k in [k for k in sd if f".{SYNC_NAME}." in k]}
    if dtype == "auto":
        from ..precision import half_dtype
        dtype = half_dtype(device)
    model = load_wan_transformer(sd, config.wan, device=device, dtype=dtype)
    if config.attention == "parallel":
        add_sync_layers(model)
        sync = {k: v.to(next(model.parameters()).dtype) for k, v in sync.items()}
        missing, unexpected = model.load_state_dict(sync, strict=False)
        absent = [k for k in missing if f".{SYNC_NAME}." in k]
        if absent or unexpected:
            raise ValueError(f"{folder}: sync layers of the parallel model do not match: missing {absent[:4]}, "
                             f"unexpected {unexpected[:4]}")
    elif sync:
        raise ValueError(f"{folder}: holds sync layers but its config says attention={config.attention!r}")
    return model.eval(), config
