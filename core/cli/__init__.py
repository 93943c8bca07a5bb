# SPDX-License-Identifier: GPL-3.0-or-later
"""The `fuse4d` command line: one module per command in this package, each with
`add_arguments(parser)` and `run(args) -> int` (files.py serves both `info` and `convert`); this
file only dispatches. The work itself lives in the rest of `core`."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from ..extras import MissingExtra

# name -> (module in this package, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("files", "describe a splat file or 4D sequence (count, SH degree, bounds, timesteps)"),
    "convert": ("files", "convert between .ply, .splat, .spz and 4D sequence folders"),
    "render": ("render", "render a splat scene from orbit cameras to PNGs and a contact sheet"),
    "synth": ("synth", "write synthetic dynamic 4D scenes (moving textured objects, fixed cameras)"),
    "reconstruct": ("reconstruct", "reconstruct a V x T grid of images into a 4D splat sequence (VGGT-based)"),
    "cache-latents": ("cache_latents", "encode a frames dataset once into Wan latents + text states (sharded under torchrun)"),
    "train-video": ("train_video", "fine-tune Wan into a fused 4D video model, or train the tiny one on the CPU"),
    "train-recon": ("train_recon", "train the feed-forward 4D reconstructor (static, then dynamic stage)"),
    "animate-scene": ("animate_scene", "animate a captured scene's frozen-time views (the Blender add-on's local back end)"),
    "render-dataset": ("render_dataset", "render animated 3D assets into 4D training samples with Blender (sharded, resumable)"),
    "export-comfy": ("export_comfy", "write a fine-tuned Wan / its LoRA as files ComfyUI's stock loaders read"),
    "convert-weights": ("convert_weights", "convert a pickled checkpoint (.pt) to safetensors, tensors only"),
    "demo": ("demo", "the main job on the embedded default: sample scene -> 4D -> Gaussians"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (`only`) one whose other subcommands are not imported: a command's module
    may import torch and diffusers, which `fuse4d info` should not pay for."""
    parser = argparse.ArgumentParser(prog="fuse4d", description="Fuse4D: 4D scene generation tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        mod = importlib.import_module(f"{__package__}.{module}")
        getattr(mod, f"add_{name.replace('-', '_')}_arguments", getattr(mod, "add_arguments", None))(p)
        p.set_defaults(_module=mod, _name=name)
    return parser


def _command_of(argv: list[str]) -> str | None:
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # no (known) command: the overview or an argparse error, built without importing any command module
    args = build_parser(only=_command_of(argv) or "").parse_args(argv)
    runner = getattr(args._module, f"run_{args._name.replace('-', '_')}", None) or args._module.run
    try:
        return int(runner(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, MissingExtra) as exc:
        # Bad input: one clear line, no traceback.
        print(f"fuse4d {args._name}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # out of memory even at the smallest chunk: one line saying what was tried (nothing was written)
        oom = sys.modules.get(f"{__package__.rsplit('.', 1)[0]}.recon.oom")
        if oom is None or not isinstance(exc, oom.ReconstructionOutOfMemory):
            raise
        print(f"fuse4d {args._name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        # Outputs are written under temporary names: nothing half-written is left behind.
        print(f"fuse4d {args._name}: error: out of disk space, nothing was written ({exc})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
