# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the installable Blender extension: `python -m fuse4d.blender_addon.build --out DIR`
writes DIR/fuse4d_blender-<version>.zip with blender_manifest.toml and the add-on's modules at the
zip root, plus a copy of core/io/*.py as the subpackage `_splatio/` (see splatio.py)."""
from __future__ import annotations

import argparse
import os
import re
import zipfile
from pathlib import Path

ADDON = Path(__file__).resolve().parent
CORE_IO = ADDON.parent / "core" / "io"
BUNDLED = "_splatio"
DATA_FILES = ("blender_manifest.toml", "comfy_workflow.json")
# Run by `fuse4d render-dataset` as their own processes, not parts of the add-on.
NOT_SHIPPED = {"build.py", "dataset_worker.py", "animated_assets.py"}


def version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (ADDON / "blender_manifest.toml").read_text(), re.M)
    if not m:
        raise ValueError(f"{ADDON / 'blender_manifest.toml'}: no version")
    return m.group(1)


def members() -> list[tuple[Path, str]]:
    """(source file, name in the zip)."""
    out = [(p, p.name) for p in sorted(ADDON.glob("*.py")) if p.name not in NOT_SHIPPED]
    out += [(ADDON / name, name) for name in DATA_FILES]
    out += [(p, f"{BUNDLED}/{p.name}") for p in sorted(CORE_IO.glob("*.py"))]
    return out


def build(out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"fuse4d_blender-{version()}.zip"
    tmp = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, name in members():
            zf.write(path, name)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dist", help="output folder (default: dist)")
    print(build(parser.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
