#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""One-command set-up for Fuse4D on a fresh machine (Python 3.11).

    python3 install.py                 # create .venv and install Fuse4D with pinned dependencies
    python3 install.py --run-demo      # ... then run the main job (fuse4d demo --out demo_out)
    python3 install.py --run-tests     # ... with the test extras, then run the test suite

The package declares only loose requirements (what ComfyUI already has, plus extras); the exact
versions of this set-up are in constraints.txt. Idempotent: a stamp in .venv records what was
installed; a second run with the same requirements skips pip entirely.

Inside ComfyUI's custom_nodes, a bare `python install.py` (what ComfyUI-Manager runs after
installing requirements.txt into ComfyUI's environment) does nothing: the pack needs no .venv.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".fuse4d-install-stamp"
# Exact versions of every package this set-up installs (torch 2.14.1 + torchvision 0.29.1: one
# build for CPU and CUDA); the package metadata itself pins nothing.
CONSTRAINTS = ROOT / "constraints.txt"

# Extras (pyproject.toml) per mode: the stand-alone CLI and training need all but the test tools.
GROUPS = {
    "base": ["gsplat", "wan"],
    "test": ["gsplat", "wan", "test", "blender", "usd"],
}


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def requirement_fingerprint(extras: list[str]) -> str:
    text = "|".join([(ROOT / "pyproject.toml").read_text(), CONSTRAINTS.read_text(), ",".join(sorted(extras))])
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_venv() -> None:
    if not venv_python().exists():
        if sys.version_info[:2] != (3, 11):
            print(f"warning: Python 3.11 is expected (bpy 4.5 needs it); this is {sys.version.split()[0]}",
                  file=sys.stderr)
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)


def install(extras: list[str]) -> None:
    ensure_venv()
    fingerprint = requirement_fingerprint(extras)
    if STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        print("dependencies up to date (.venv)", flush=True)
        return
    spec = "." + (f"[{','.join(extras)}]" if extras else "")
    run([venv_python(), "-m", "pip", "install", "--disable-pip-version-check", "-c", CONSTRAINTS, "-e", spec],
        cwd=ROOT)
    STAMP.write_text(fingerprint)


def inside_comfyui() -> bool:
    """This checkout is a ComfyUI custom-node folder (ComfyUI-Manager and the Registry put packs there)."""
    return ROOT.parent.name == "custom_nodes"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv and inside_comfyui():
        print("install.py: inside ComfyUI's custom_nodes: nothing to do (the node pack needs only what "
              "requirements.txt lists; run `python3 install.py --run-demo` here for the stand-alone .venv)",
              flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--run-demo", action="store_true", help="set up, then run `fuse4d demo --out demo_out`")
    mode.add_argument("--run-tests", action="store_true", help="set up with test extras, then run pytest")
    parser.add_argument("--blender-addon", action="store_true",
                        help="also build the Blender add-on zip into dist/")
    args, rest = parser.parse_known_args(argv)

    extras = GROUPS["test"] if args.run_tests else GROUPS["base"]
    install(extras)
    py = str(venv_python())
    if args.blender_addon:
        run([py, "-m", "fuse4d.blender_addon.build", "--out", str(ROOT / "dist")], cwd=ROOT)
    if args.run_demo:
        run([py, "-m", "fuse4d", "demo", "--out", "demo_out", *rest], cwd=ROOT)
    elif args.run_tests:
        proc = subprocess.run([py, "-m", "pytest", *rest], cwd=ROOT)
        return proc.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
