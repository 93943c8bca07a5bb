# SPDX-License-Identifier: GPL-3.0-or-later
"""The numpy-only splat format module, from wherever it lives.

In the installable zip, `build.py` copies `core/io/*.py` into the subpackage `_splatio/`
(Blender's Python has numpy but no torch and no `fuse4d` package). Inside the repository
(tests, development) that copy does not exist and we import `fuse4d.core.io` directly.
Every other module of the add-on imports formats only through this shim."""
try:
    from ._splatio import (JOB_FILE, JOB_FORMAT, RESULT_DIR, SH_C0, Sequence4D, SplatArrays,  # noqa: F401
                           SplatFormatError, align_cameras, atomic_output, read_job, read_manifest,
                           read_ply, read_ply_folder, read_sequence, similarity, write_job, write_ply, write_sequence)
except ImportError:
    from ..core.io import (JOB_FILE, JOB_FORMAT, RESULT_DIR, SH_C0, Sequence4D, SplatArrays,  # noqa: F401
                           SplatFormatError, align_cameras, atomic_output, read_job, read_manifest,
                           read_ply, read_ply_folder, read_sequence, similarity, write_job, write_ply, write_sequence)
