# SPDX-License-Identifier: GPL-3.0-or-later
"""Debian packages that some tests install at test time when missing (as root), as ComfyUI itself
is installed at test time: Chromium for the ComfyUI frontend, Mesa's software OpenGL for EEVEE."""
from __future__ import annotations

import os
import shutil
import subprocess


def is_debian() -> bool:
    return shutil.which("dpkg-query") is not None


def can_install() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


def apt_get(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Wait for a dpkg lock held by another apt run instead of failing at once.
    cmd = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def apt_install(*packages: str) -> subprocess.CompletedProcess:
    """`apt-get install --no-install-recommends`, refreshing the package lists once if that fails
    (stale or missing lists on a fresh machine)."""
    proc = apt_get("install", "--no-install-recommends", *packages)
    if proc.returncode != 0:
        apt_get("update")
        proc = apt_get("install", "--no-install-recommends", *packages)
    return proc


def missing(*packages: str) -> list[str]:
    """The packages dpkg does not list as installed (all of them where there is no dpkg)."""
    if not is_debian():
        return list(packages)
    return [p for p in packages
            if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                              text=True).stdout.strip() != "install ok installed"]


def ensure(*packages: str) -> str | None:
    """Installs whichever of `packages` are missing; None when all are there, else why not."""
    absent = missing(*packages)
    if not absent:
        return None
    if not can_install():
        return (f"Debian packages {' '.join(absent)} are missing and cannot be installed here (needs "
                f"Debian's apt-get as root): run `apt-get install {' '.join(absent)}`")
    proc = apt_install(*absent)
    still = missing(*absent)
    if proc.returncode != 0 or still:
        return (f"apt-get install {' '.join(absent)} failed ({proc.returncode}; missing: {' '.join(still)}):\n"
                f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return None
