# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuse4D core: no ComfyUI, no bpy. Submodules import torch only where they need it."""
