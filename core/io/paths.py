# SPDX-License-Identifier: GPL-3.0-or-later
"""File names read from data (manifests, job files, server answers) must stay inside their folder.

Checked the same on every platform, so a file made on one cannot escape on another: no absolute
path (POSIX or Windows, drive letters and UNC included), no `..`, no NUL, no backslash tricks, and
no symlink whose target leaves the folder."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


def member_problem(folder: str | os.PathLike, name: object) -> str | None:
    """Why `name` is not a file name inside `folder`, or None when it is."""
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty relative name"
    if "\0" in name:
        return "holds a NUL character"
    windows, posix = PureWindowsPath(name), PurePosixPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        return "must be relative to its folder (no absolute path or drive letter)"
    if ".." in windows.parts or ".." in posix.parts:
        return "must not climb out of its folder ('..')"
    try:
        root = Path(folder).resolve()
        target = (root / name).resolve()  # follows symlinks, in the folder or on the way
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        return f"cannot be resolved ({exc})"
    if target != root and root not in target.parents:
        return "leaves its folder through a symlink"
    return None


def safe_member(folder: str | os.PathLike, name: object, error=ValueError, what: str = "file") -> Path:
    """`folder / name`, or `error(message)` when the name could reach outside `folder`."""
    problem = member_problem(folder, name)
    if problem:
        raise error(f"{what} {name!r} {problem}")
    return Path(folder) / name

