# SPDX-License-Identifier: GPL-3.0-or-later
"""OpenUSD's own crate (.usdc) reader can segfault or allocate gigabytes on a corrupt file (found
by fuzzing: docs/reliability.md). A segfault cannot be caught, and would end the process that
reads a user's file (a ComfyUI server, Blender). So before OpenUSD opens such a file in this
process, `probe_in_child` has a short-lived child process (usd_child.py) run the same reading
under a memory and a time limit; a child that crashes, runs out of its memory or its time makes
read_usd refuse the file with SplatFormatError, and a file the child refused is refused with its
message. Only a file the child read is read again here (the same code: the same result). Plain
text layers (.usda without asset paths) skip the child: OpenUSD's text parser has not crashed
under fuzzing, and the child costs a Python start and a pxr import (docs/reliability.md).

Where no interpreter can be started for the child (sys.executable is not a Python, as in a frozen
application), the file is read in this process as before, with one warning in the log."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from .errors import SplatFormatError
from .usd_child import DONE, FAILED, OUT_OF_MEMORY, PREFIX, READY, REFUSED, UNUSABLE

CHILD_SCRIPT = Path(__file__).with_name("usd_child.py")
# What the child may allocate once pxr and numpy are imported: fuzz_targets.memory_bound's factor on
# the file size, plus room for OpenUSD's tables (a 2 KB file takes about 15 MiB; a 112 MiB
# sequence, read to numpy, about 2.5 times its size).
MEMORY_PER_FILE_BYTE = 64
MEMORY_BASE = 256 << 20
# A legitimate read runs at tens of MB/s even on a loaded machine; these are for a hung reader.
TIMEOUT_BASE_S = 30.0
TIMEOUT_S_PER_MIB = 1.0
TEXT_MAGIC = b"#usda"
ASSET_PATH = b"@"  # how .usda text writes an asset path (sublayers, references, payloads, clips)

log = logging.getLogger("fuse4d")
_warned: set[str] = set()


def probe_in_child(path: Path) -> None:
    """Return if read_usd's reading of `path` succeeded in a child process (or ended in an error
    that is not the file's fault, which the caller's own read raises again), or if no child is
    needed or possible; raise SplatFormatError if the child refused the file, or saying what
    happened if OpenUSD crashed or ran out of the child's memory limit or time."""
    if not needs_child(path):
        return
    python = child_python()
    if python is None:
        _warn_once(f"no Python interpreter to read USD files in a child process (sys.executable is "
                   f"{sys.executable!r}): reading them in this process, unguarded")
        return
    size = path.stat().st_size
    memory = MEMORY_PER_FILE_BYTE * size + MEMORY_BASE
    timeout = TIMEOUT_BASE_S + TIMEOUT_S_PER_MIB * size / (1 << 20)
    try:
        done = subprocess.run([python, "-I", str(CHILD_SCRIPT), str(CHILD_SCRIPT.parent), _pxr_home(),
                               str(path.resolve()), str(memory)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PXR_WORK_THREAD_LIMIT": "1"}, timeout=timeout,
                              creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except subprocess.TimeoutExpired:
        raise SplatFormatError(path, f"OpenUSD did not finish reading it within {timeout:.0f} s (stopped); "
                                     "the file is corrupt") from None
    except OSError as exc:
        _warn_once(f"cannot start {python} to read USD files in a child process ({exc}): reading them "
                   "in this process, unguarded")
        return
    _judge(path, done.returncode, done.stdout.decode("utf-8", "replace"), memory)


def needs_child(path: Path) -> bool:
    """Whether OpenUSD's crate reader may run on this file: anything but a text layer without asset
    paths (through which it could pull in a crate file), so .usdc, a crate .usd, .usdz, unknown."""
    with open(path, "rb") as f:
        if f.read(len(TEXT_MAGIC)) != TEXT_MAGIC:
            return True
        while chunk := f.read(1 << 20):
            if ASSET_PATH in chunk:
                return True
    return False


def child_python() -> str | None:
    """sys.executable where it is a Python interpreter (a venv, ComfyUI's, Blender 2.92 and later:
    its bundled python3.x); else the interpreter of the running standard library under sys.prefix;
    else None (a frozen application, an embedding that names itself)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [sys.executable, os.path.join(sys.prefix, "bin", f"python{version}"),
                  os.path.join(sys.prefix, "python.exe")]
    for candidate in candidates:
        if candidate and os.path.basename(candidate).lower().startswith("python") and os.path.isfile(candidate):
            return candidate
    return None


def _pxr_home() -> str:
    """The folder holding the pxr package this process imported (usd-core's or Blender's), which
    the child puts first on its path: the same OpenUSD, whatever the child's own path holds."""
    import pxr

    return str(Path(pxr.__file__).resolve().parent.parent)


def _judge(path: Path, returncode: int, stdout: str, memory: int) -> None:
    statuses = [line[len(PREFIX):] for line in stdout.splitlines() if line.startswith(PREFIX)]
    status, _, detail = (statuses[-1] if statuses else "").partition(": ")
    if status in (DONE, FAILED):  # FAILED: not a SplatFormatError; reading it here raises the same
        return
    if status == REFUSED:
        raise SplatFormatError(path, json.loads(detail))
    if status == OUT_OF_MEMORY:
        raise SplatFormatError(path, f"reading it needed more than {memory >> 20} MiB (the limit for a file of "
                                     "its size); the file is corrupt")
    if status == READY:  # it was reading the file when it died
        raise SplatFormatError(path, f"OpenUSD crashed reading it ({_how(returncode)}); the file is corrupt")
    why = detail if status == UNUSABLE else f"it ended before reading ({_how(returncode)})"
    _warn_once(f"the child process cannot read USD files ({why}): reading them in this process, unguarded")


def _how(returncode: int) -> str:
    """SIGSEGV, or an exit code (Windows reports a crash as one, e.g. 0xC0000005)."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode:#x}" if returncode > 255 else f"exit code {returncode}"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
