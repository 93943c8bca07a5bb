# SPDX-License-Identifier: GPL-3.0-or-later
"""Wan 2.1 / 2.2 as a fused 4D video model through diffusers (no new weights).

  attention_processor  patch_wan_transformer / unpatch / fused_wan: fused view-time attention + RoPE
  keys                 original/ComfyUI <-> diffusers key mapping, load_wan_transformer, configs
  pipeline             Generate4DConfig, generate_4d: text + references -> V x T grid of frames
  trainer              `fuse4d train-video` (self-attention / LoRA fine-tuning, tiny CPU config)
Import the submodules directly; this package imports nothing heavy.
"""
