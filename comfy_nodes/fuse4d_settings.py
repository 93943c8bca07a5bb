# SPDX-License-Identifier: GPL-3.0-or-later
"""The Fuse4D settings in an exported model / LoRA (`fuse4d export-comfy`) against a node's inputs."""
from __future__ import annotations

import logging

NONE = "none"
FOLDERS = ("diffusion_models", "loras")
APPLIED = ("clean-latent", "patch-embed", "channel-concat")  # what the patch feeds (core ReferenceConditioning)


def settings_choices() -> list[str]:
    """'none' + every diffusion model / LoRA file as 'folder/name' (read when the node runs)."""
    import folder_paths

    names = [NONE]
    for folder in FOLDERS:
        try:
            names += [f"{folder}/{n}" for n in folder_paths.get_filename_list(folder) if n.endswith(".safetensors")]
        except KeyError:  # a ComfyUI without that folder type
            continue
    return names


def load_settings(choice: str) -> dict | None:
    if not choice or choice == NONE:
        return None
    import folder_paths

    from ..core.wan.export_comfy import read_fuse4d_settings

    folder, _, name = choice.partition("/")
    path = folder_paths.get_full_path(folder, name) if folder in FOLDERS else None
    if path is None:
        raise ValueError(f"Fuse4D settings file not found: {choice}")
    settings = read_fuse4d_settings(path)
    if settings is None:
        logging.warning("Fuse4D: %s holds no Fuse4D settings (not written by fuse4d export-comfy)", choice)
    return settings


def resolve(views: int, t_max: int, settings: dict | None, source: str = "the model file") -> tuple[int, int, list[str]]:
    """The grid to patch: inputs left at 0 take the file's values; set inputs win, with a warning
    when they disagree with what the model was trained with. Returns (views, t_max, warnings)."""
    notes: list[str] = []
    if settings is None:
        return (views or 4), t_max, notes
    trained_views, trained_tmax = settings.get("views"), settings.get("t_max")
    if views == 0:
        views = int(trained_views or 4)
    elif trained_views and views != trained_views:
        notes.append(f"{source} was trained with {trained_views} views; this node makes {views}")
    if t_max == 0:
        t_max = int(trained_tmax or 0)
    elif trained_tmax and t_max != trained_tmax:
        notes.append(f"{source} was trained with t_max {trained_tmax}; this node uses {t_max} "
                     f"(RoPE positions differ from training)")
    if settings.get("attention", "fused") != "fused":
        notes.append(f"{source} was trained with {settings['attention']} attention; this node runs fused attention")
    unknown = [c for c in settings.get("conditioning", []) if c not in APPLIED]
    if unknown:
        notes.append(f"{source} was trained with {', '.join(unknown)} conditioning, which this pack does not "
                     f"apply (only {', '.join(APPLIED)})")
    for note in notes:
        logging.warning("Fuse4D: %s", note)
    return views, t_max, notes


def conditioning(settings: dict | None):
    """The reference conditioning the model was trained with (core ReferenceConditioning), or None for a
    file without settings (a base Wan: ComfyUI's own handling of known frames stays)."""
    if settings is None:
        return None
    from ..core.wan.export_comfy import conditioning_of

    return conditioning_of(settings)
