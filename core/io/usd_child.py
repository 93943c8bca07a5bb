# SPDX-License-Identifier: GPL-3.0-or-later
"""The child process of usd_guard.probe_in_child: runs read_usd's own reading (usd.read_usd_here)
on one file under a memory limit, so that a crash or a runaway allocation inside OpenUSD ends
this process and not the caller.

    python -I usd_child.py IO_FOLDER PXR_HOME FILE MEMORY_BYTES

Run by path, under whatever interpreter the caller has (a venv, ComfyUI's, Blender's bundled
one), where this package may not be importable by its name: it loads the folder it lives in
(core/io, or the Blender add-on's copy of it) as a package of its own. Prints status lines on
stdout (pxr's diagnostics go to stderr): READY once everything is imported and the limit set,
then DONE, REFUSED with the SplatFormatError's problem (JSON), OUT_OF_MEMORY, or FAILED (any
other exception: the caller's own read will raise it). A crash prints nothing after READY."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

PREFIX = "fuse4d-usd-child: "
READY, DONE, REFUSED, OUT_OF_MEMORY, FAILED, UNUSABLE = "ready", "done", "refused", "out of memory", "failed", \
    "unusable"
PACKAGE = "_fuse4d_usd_child_io"


def say(status: str, detail: str = "") -> None:
    print(PREFIX + status + (": " + detail if detail else ""), flush=True)


def quiet_crashes() -> None:
    """A crash here is expected, not a bug to debug: no core file in the caller's folder, and on
    Windows no crash dialog (it would hold the child until the time limit)."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform == "win32":
        import ctypes
        ctypes.windll.kernel32.SetErrorMode(0x0001 | 0x0002)  # SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX


def load_io_package(folder: str):
    """The format package in `folder` (its __init__.py and relative imports), under a private name."""
    spec = importlib.util.spec_from_file_location(PACKAGE, Path(folder) / "__init__.py",
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return package


def data_bytes() -> int | None:
    """This process's private writable memory (Linux VmData), or None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def limit_memory(extra: int) -> bool:
    """Cap private writable memory at what this process holds now plus `extra` (RLIMIT_DATA,
    Linux): a runaway allocation then fails inside OpenUSD. Not RLIMIT_AS: OpenUSD reserves
    384 MiB address ranges it never fills, and dereferences NULL when a reservation is refused."""
    now = data_bytes()
    if now is None:
        return False
    import resource
    resource.setrlimit(resource.RLIMIT_DATA, (now + extra, resource.RLIM_INFINITY))
    return True


def last_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 (pxr's text can fail to decode)
        text = ""
    return (text.strip().splitlines() or [""])[-1].strip()[:200]


def main(argv: list[str]) -> int:
    io_folder, pxr_home, path, extra = argv[1], argv[2], Path(argv[3]), int(argv[4])
    quiet_crashes()
    sys.path.insert(0, pxr_home)
    try:
        io = load_io_package(io_folder)
        io.usd._pxr()
    except Exception as exc:  # noqa: BLE001 (any failure here is the environment's, not the file's)
        say(UNUSABLE, f"{type(exc).__name__}: {last_line(exc)}")
        return 0
    say(READY, "memory capped" if limit_memory(extra) else "no memory cap on this platform")
    try:
        io.usd.read_usd_here(path)
    except io.SplatFormatError as exc:
        say(REFUSED, json.dumps(exc.problem))
    except MemoryError:
        say(OUT_OF_MEMORY)
    except Exception as exc:  # noqa: BLE001 (reported; the caller's own read raises it again)
        say(FAILED, f"{type(exc).__name__}: {last_line(exc)}")
    else:
        say(DONE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
