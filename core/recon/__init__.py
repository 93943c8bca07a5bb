# SPDX-License-Identifier: GPL-3.0-or-later
"""Feed-forward 4D Gaussian reconstructor: a VGGT-compatible model (loads VGGT-1B unchanged) with the
paper's Gaussian head, camera token replacement and temporal attention layers.

Public entry points (ComfyUI nodes, demo, CLI): `load_reconstructor`, `reconstruct_grid`,
`write_tiny_reconstructor`; see docs/reconstruction.md."""
from .api import (inference_memory, load_reconstructor, reconstruct_grid, save_reconstructor,
                  write_tiny_reconstructor)
from .config import VGGTConfig, full, preset, tiny
from .gaussian_head import pixel_gaussians
from .model import VGGT4D, parameter_group, replace_camera_tokens
from .oom import ReconstructionOutOfMemory
from .weights import LoadReport, WeightsError, convert, load_vggt_weights, save_weights

__all__ = ["load_reconstructor", "reconstruct_grid", "inference_memory", "write_tiny_reconstructor", "save_reconstructor",
           "VGGTConfig", "full", "tiny", "preset", "VGGT4D", "parameter_group", "replace_camera_tokens",
           "pixel_gaussians", "load_vggt_weights", "convert", "save_weights", "LoadReport", "WeightsError",
           "ReconstructionOutOfMemory"]
