# SPDX-License-Identifier: GPL-3.0-or-later
"""Weights are safetensors: a file is checked before any loader opens it, so a pickle (a `.pt`
renamed `.safetensors`) or a corrupt header is refused with one clear error, never unpickled."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit
CONVERT_HINT = ("convert it once to safetensors: `python -m fuse4d convert-weights SRC DST` "
                "(torch.load with weights_only=True, then safetensors save_file)")


class WeightsFileError(ValueError):
    """A weights file that is not a readable safetensors file; the message says why."""


def _looks_pickled(head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04"):
        return "a torch.save zip archive (pickle inside)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    return None


def check_safetensors(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file size; WeightsFileError else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: weights file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        kind = _looks_pickled(head)
        if kind:
            raise WeightsFileError(f"{path}: is {kind}, not safetensors; pickles are never loaded; {CONVERT_HINT}")
        if len(head) < 8:
            raise WeightsFileError(f"{path}: too short for a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise WeightsFileError(f"{path}: not a readable safetensors file (header length {n} does not fit "
                                   f"the file's {size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WeightsFileError(f"{path}: not a readable safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path}: not a readable safetensors file (its header is not a JSON object)")
    data = size - 8 - n
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise WeightsFileError(f"{path}: safetensors metadata must map names to strings")
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data and isinstance(shape, list)
                and all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(entry.get("dtype"), str)):
            raise WeightsFileError(f"{path}: tensor {key!r} has a malformed entry in the safetensors header")
    return header


def convert_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """One-off conversion of a pickled state dict (tensors only: weights_only=True) to safetensors."""
    import torch
    from safetensors.torch import save_file

    from .io import atomic_output

    try:
        state = torch.load(os.fspath(src), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for what it refuses
        raise WeightsFileError(f"{src}: cannot be read as a tensors-only checkpoint ({exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{src}: expected a state dict of tensors")
    dst = Path(dst)
    with atomic_output(dst) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    return dst
