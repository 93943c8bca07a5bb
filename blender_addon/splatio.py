# SPDX-License-Identifier: GPL-3.0-or-later
"""The numpy-only splat format module, from wherever it lives.

In the installable zip, `build.py` copies `core/io/*.py` into the subpackage `_splatio/`
(Blender's Python has numpy but no torch and no `fuse4d` package). Inside the repository
(tests, development) that copy does not exist and we import `fuse4d.core.io` directly.
Every other module of the add-on imports formats only through this shim. (USD goes through the
`pxr` that Blender bundles, or usd-core; it is imported only when a USD file is touched.)"""
try:
    from ._splatio import (JOB_FILE, JOB_FORMAT, RESULT_DIR, SH_C0, Sequence4D, SplatArrays,  # noqa: F401
                           SplatFormatError, align_cameras, atomic_output, read_glb, read_job, read_manifest,
                           read_ply, read_ply_folder, read_sequence, read_splat, read_spz, read_usd, similarity,
                           write_glb, write_job, write_ply, write_sequence, write_splat, write_spz, write_usd)
except ImportError:
    from ..core.io import (JOB_FILE, JOB_FORMAT, RESULT_DIR, SH_C0, Sequence4D, SplatArrays,  # noqa: F401
                           SplatFormatError, align_cameras, atomic_output, read_glb, read_job, read_manifest,
                           read_ply, read_ply_folder, read_sequence, read_splat, read_spz, read_usd, similarity,
                           write_glb, write_job, write_ply, write_sequence, write_splat, write_spz, write_usd)

STATIC_READERS = {".ply": read_ply, ".glb": read_glb, ".gltf": read_glb, ".spz": read_spz, ".splat": read_splat}
STATIC_WRITERS = {".ply": write_ply, ".glb": write_glb, ".spz": write_spz, ".splat": write_splat,
                  ".usd": write_usd, ".usda": write_usd, ".usdc": write_usd}
USD_SUFFIXES = (".usd", ".usda", ".usdc")
