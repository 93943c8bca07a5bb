# SPDX-License-Identifier: GPL-3.0-or-later
"""Feed-forward 4D Gaussian reconstructor: a VGGT-compatible model (loads VGGT-1B unchanged) with the
paper's Gaussian head, camera token replacement and temporal attention layers."""
from .config import VGGTConfig, full, preset, tiny
from .gaussian_head import pixel_gaussians
from .model import VGGT4D, parameter_group, replace_camera_tokens
from .weights import LoadReport, WeightsError, convert, load_vggt_weights, save_weights

__all__ = ["VGGTConfig", "full", "tiny", "preset", "VGGT4D", "parameter_group", "replace_camera_tokens",
           "pixel_gaussians", "load_vggt_weights", "convert", "save_weights", "LoadReport", "WeightsError"]
