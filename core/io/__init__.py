# SPDX-License-Identifier: GPL-3.0-or-later
"""Splat file formats, numpy only (no torch): Blender's Python imports this too."""
from .align import align_cameras, camera_centres, similarity
from .arrays import SH_C0, SplatArrays
from .atomic import atomic_folder, atomic_output
from .errors import SplatFormatError
from .gltf import read_glb, write_glb
from .job import JOB_FILE, JOB_FORMAT, RESULT_DIR, read_job, write_job
from .ply import read_ply, write_ply
from .sequence import Sequence4D, numbered_plys, read_manifest, read_ply_folder, read_sequence, write_sequence
from .splat import read_splat, write_splat
from .spz import read_spz, write_spz
from .usd import read_usd, write_usd  # pxr is imported only when a USD file is touched

__all__ = [
    "JOB_FILE", "JOB_FORMAT", "RESULT_DIR", "read_job", "write_job",
    "SH_C0", "SplatArrays", "align_cameras", "camera_centres", "similarity", "SplatFormatError", "Sequence4D", "atomic_folder", "atomic_output",
    "numbered_plys", "read_glb", "read_usd", "write_glb", "write_usd", "read_manifest", "read_ply", "read_ply_folder", "read_sequence", "read_splat", "read_spz",
    "write_ply", "write_sequence", "write_splat", "write_spz",
]
