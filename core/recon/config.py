# SPDX-License-Identifier: GPL-3.0-or-later
"""Size and switches of the VGGT-based 4D reconstructor. `full()` is VGGT-1B; `tiny()` runs in tests."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class VGGTConfig:
    img_size: int = 518              # training size of the DINOv2 position table (37 x 37 patches)
    patch_size: int = 14
    # DINOv2 patch embed (ViT-L/14 with registers)
    dino_dim: int = 1024
    dino_depth: int = 24
    dino_heads: int = 16
    num_register_tokens: int = 4
    # alternating-attention aggregator
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    rope_freq: float = 100.0
    # camera head
    camera_trunk_depth: int = 4
    camera_heads: int = 16
    camera_iterations: int = 4
    # DPT heads
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    dpt_frames_chunk: int = 8
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    # paper additions
    enable_gaussian: bool = True
    temporal_attention: bool = True
    camera_token_replacement: bool = True
    gaussian_opacity_logit: float = 2.0   # opacity logit of an untrained head / the analytic mode
    gaussian_scale_pixels: float = 1.0    # isotropic scale = this * depth / focal (one pixel footprint)
    extra: dict = field(default_factory=dict)

    @property
    def token_dim(self) -> int:
        """Width of the tokens the heads read: frame and global outputs concatenated."""
        return 2 * self.embed_dim

    def kept_layers(self) -> list[int]:
        """Aggregator layers any enabled head reads (the rest are dropped to save memory)."""
        keep = {self.depth - 1}
        if self.enable_depth or self.enable_point or self.enable_gaussian:
            keep |= set(self.dpt_layers)
        return sorted(keep)

    def validate(self) -> None:
        if self.embed_dim != self.dino_dim:
            raise ValueError("embed_dim must equal dino_dim (patch tokens enter the aggregator as they are)")
        if (self.embed_dim // self.num_heads) % 4:
            raise ValueError("head dim must be divisible by 4 for the 2D RoPE")
        if max(self.dpt_layers) >= self.depth:
            raise ValueError(f"dpt_layers {self.dpt_layers} exceed depth {self.depth}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VGGTConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown VGGTConfig fields: {sorted(unknown)}")
        data = dict(data)
        for key in ("dpt_out_channels", "dpt_layers"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def full(**overrides) -> VGGTConfig:
    """VGGT-1B (loads facebook/VGGT-1B or VGGT-1B-Commercial unchanged)."""
    return dataclasses.replace(VGGTConfig(), **overrides)


def tiny(**overrides) -> VGGTConfig:
    """A few-MB model with every module of the full one (tests, CPU training). 4 heads of 8 dims."""
    base = VGGTConfig(img_size=56, patch_size=14, dino_dim=32, dino_depth=2, dino_heads=2,
                      embed_dim=32, depth=4, num_heads=4, camera_trunk_depth=2, camera_heads=4,
                      dpt_features=16, dpt_out_channels=(8, 16, 32, 32), dpt_layers=(0, 1, 2, 3))
    return dataclasses.replace(base, **overrides)


PRESETS = {"full": full, "tiny": tiny}


def preset(name: str, **overrides) -> VGGTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown reconstructor preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name](**overrides)
