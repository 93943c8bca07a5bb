# SPDX-License-Identifier: GPL-3.0-or-later
"""Which reconstructor a weights file holds, read from its safetensors header (no tensor is loaded).

A Fuse4D checkpoint carries its VGGTConfig as JSON in the metadata ("config"); a VGGT-1B /
VGGT-1B-Commercial model.safetensors carries none and is recognised by its key shapes."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .config import VGGTConfig, full
from .weights import WeightsError, read_header

# keys whose shapes tell a VGGT-1B checkpoint (and their shapes in it)
VGGT_1B_SHAPES = {
    "aggregator.camera_token": (1, 2, 1, 1024),
    "aggregator.frame_blocks.23.attn.qkv.weight": (3072, 1024),
    "aggregator.global_blocks.23.attn.qkv.weight": (3072, 1024),
    "camera_head.pose_branch.fc2.weight": (9, 1024),
}


@dataclasses.dataclass
class FileInfo:
    path: Path
    metadata: dict
    shapes: dict[str, tuple[int, ...]]

    def has(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.shapes)

    @property
    def is_vggt_1b(self) -> bool:
        """Key shapes of VGGT-1B (and VGGT-1B-Commercial, which has the same keys)."""
        return all(self.shapes.get(k) == v for k, v in VGGT_1B_SHAPES.items())


def inspect(path: str | Path) -> FileInfo:
    metadata, shapes = read_header(path)
    return FileInfo(Path(path), metadata, shapes)


def stored_config(info: FileInfo) -> VGGTConfig | None:
    """The config a Fuse4D checkpoint stores, or None when the file has none."""
    text = info.metadata.get("config")
    if not text:
        return None
    try:
        data = json.loads(text)
        data.pop("architecture", None)
        return VGGTConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{info.path}: its 'config' metadata is not a reconstructor config ({exc})") from exc


def with_file_additions(cfg: VGGTConfig, info: FileInfo) -> VGGTConfig:
    """A VGGT-format file without a config: build the paper's additions only if the file has them
    (a plain VGGT file then runs as VGGT, with analytic Gaussians)."""
    return dataclasses.replace(cfg, enable_gaussian=info.has("gaussian_head."),
                               temporal_attention=info.has("aggregator.temporal_blocks."))


def file_config(path: str | Path, fallback: VGGTConfig | None = None) -> VGGTConfig:
    """The model config for a weights file: its stored config (Fuse4D checkpoint), else VGGT-1B's
    if its key shapes are VGGT-1B's, else `fallback` (e.g. a preset the user named), else an error."""
    info = inspect(path)
    cfg = stored_config(info)
    if cfg is not None:
        return cfg
    if info.is_vggt_1b:
        return with_file_additions(full(), info)
    if fallback is not None:
        return with_file_additions(fallback, info)
    width = info.shapes.get("aggregator.camera_token", (None,))[-1]
    raise WeightsError(
        f"{info.path}: neither a Fuse4D reconstructor checkpoint (no 'config' in its metadata) nor a "
        f"VGGT-1B / VGGT-1B-Commercial model.safetensors (aggregator width {width}, expected 1024; "
        f"{len(info.shapes)} tensors)")
