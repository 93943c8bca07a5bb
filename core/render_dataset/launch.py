# SPDX-License-Identifier: GPL-3.0-or-later
"""Running the Blender-side scripts (blender_addon/dataset_worker.py, animated_assets.py) as their own
processes: with this Python when it has `bpy` (the PyPI bpy==4.5.*), else a given Blender or Python.
A separate process keeps bpy out of the core and an asset that crashes Blender out of the shard."""
from __future__ import annotations

import collections
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

SCRIPTS = Path(__file__).resolve().parents[2] / "blender_addon"
WORKER = SCRIPTS / "dataset_worker.py"
ASSET_MAKER = SCRIPTS / "animated_assets.py"


def blender_command(script: Path, args: list[str], blender: str | None = None) -> list[str]:
    """The command line running `script` under Blender: a Blender executable (`blender -b --python`),
    a Python with bpy, or (None) this Python if it has bpy, else `blender` on PATH."""
    if blender is None:
        if importlib.util.find_spec("bpy") is not None:
            blender = sys.executable
        else:
            blender = shutil.which("blender")
        if blender is None:
            raise FileNotFoundError("no Blender found: install bpy==4.5.* into this Python (`python3 install.py "
                                    "--run-tests` does) or pass --blender PATH (Blender, or a Python with bpy)")
    if not (os.path.isfile(blender) or shutil.which(blender)):
        raise FileNotFoundError(f"--blender {blender}: not found")
    if Path(blender).name.lower().startswith("blender"):
        return [blender, "-b", "--factory-startup", "--python", str(script), "--", *args]
    # -P: the script's folder (the add-on's modules) is not put first on sys.path
    return [blender, "-P", str(script), *args]


def run_worker(job: dict, blender: str | None = None, on_sample: Callable[[str], None] | None = None,
               timeout: float | None = None) -> dict:
    """Render one asset's samples (job: see dataset_worker.py); returns the worker's result, or
    {"ok": False, "reason": ...} when Blender died or timed out without one."""
    with tempfile.TemporaryDirectory(prefix="fuse4d-render-job-") as tmp:
        job = dict(job, result=os.path.join(tmp, "result.json"))
        job_path = os.path.join(tmp, "job.json")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump(job, f)
        cmd = blender_command(WORKER, [job_path], blender)
        tail: collections.deque[str] = collections.deque(maxlen=20)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        timer = None
        if timeout:
            import threading

            timer = threading.Timer(timeout, proc.kill)
            timer.start()
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith("sample ") and on_sample is not None:
                    on_sample(line[len("sample "):])
                elif line.strip():
                    tail.append(line)
            rc = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if os.path.exists(job["result"]):
            with open(job["result"], encoding="utf-8") as f:
                return json.load(f)
        if timeout and rc < 0:
            return {"ok": False, "reason": f"timed out after {timeout:g} s", "samples": {}}
        last = next((line for line in reversed(tail) if line.strip()), "")
        return {"ok": False, "reason": f"Blender exited with code {rc} without a result: {last[-200:]}",
                "samples": {}}


def make_test_assets(out: str | os.PathLike, count: int, seed: int = 0, bad: bool = False,
                     blender: str | None = None) -> list[Path]:
    """Procedural animated assets (.glb, .blend, .fbx) (blender_addon/animated_assets.py); `bad` adds three that the
    dataset builder must skip."""
    args = [os.fspath(out), str(int(count)), str(int(seed))] + (["--bad"] if bad else [])
    proc = subprocess.run(blender_command(ASSET_MAKER, args, blender), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"making test assets failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    made = [Path(line) for line in proc.stdout.splitlines() if line.endswith((".glb", ".gltf", ".blend", ".fbx"))]
    return [p for p in made if p.is_file()]
