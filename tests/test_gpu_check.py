# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/gpu_check.py: its --dry-run (the GPU check's code at tiny sizes on the CPU) passes; a mismatch fails it."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_passes_every_section():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=1200,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout
    for section in ("attention", "wan", "vggt", "render", "train"):
        assert any(line.startswith(section) and line.rstrip().endswith("ok") for line in table.splitlines()), section
    assert "merge fwd+bwd vs reference" in table and " 0 failed" in table


def test_a_mismatch_or_a_crash_exits_non_zero(capsys):
    gpu_check = _module()

    def wrong(setup, rows):
        gpu_check.check(rows, "attention", "values", 0.5, 1e-3)

    def crash(setup, rows):
        raise RuntimeError("CUDA error: device-side assert triggered")

    gpu_check.RUNNERS.update(attention=wrong, wan=crash)
    assert gpu_check.main(["--dry-run", "--only", "attention"]) == 1
    assert gpu_check.main(["--dry-run", "--only", "wan"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "device-side assert" in out
