# SPDX-License-Identifier: GPL-3.0-or-later
"""read_usd's crash guard (core/io/usd_guard.py): OpenUSD reads a crate file in a child process
first, so a segfault or a runaway allocation inside OpenUSD becomes SplatFormatError and the
calling process lives on.

The two fixtures are bench/fuzz.py's `.usdc` inputs 678 and 49 (seed 0; random.Random(678) and
random.Random(49) applied to write_usd's seed files, tests/fuzz_interchange.py): 678 segfaults
OpenUSD 26.11's Usd.Stage.Open, 49 makes it allocate 2 GiB (5.7 s) before reading an array."""
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuse4d.core.io import SplatFormatError, read_usd, write_usd
from fuse4d.core.io import usd_guard

pytest.importorskip("pxr")

FIXTURES = Path(__file__).parent / "fixtures" / "usd_crash"
SEGFAULT = FIXTURES / "segfault_678.usdc"
ALLOC_2GIB = FIXTURES / "alloc_2gib_49.usdc"


def _peak_rss_reset() -> int | None:
    """Reset this process's peak RSS to its RSS (Linux); the RSS now in bytes, or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def _status_kib(key: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key + ":"))
    return int(line.split()[1])


def test_unguarded_openusd_segfaults_on_the_fixture():
    """The premise: without the guard this file kills the process that opens it."""
    code = "import sys; from pxr import Usd; Usd.Stage.Open(sys.argv[1]); print('survived')"
    done = subprocess.run([sys.executable, "-c", code, str(SEGFAULT)], capture_output=True, timeout=60)
    assert done.returncode < 0 and b"survived" not in done.stdout, \
        f"OpenUSD no longer crashes on {SEGFAULT.name} (exit {done.returncode}): find a new crashing input"


def test_a_file_that_segfaults_openusd_gives_the_clear_error_and_the_caller_lives():
    code = ("import sys\nfrom fuse4d.core.io import SplatFormatError, read_usd\n"
            "try:\n    read_usd(sys.argv[1])\nexcept SplatFormatError as exc:\n    print('refused:', exc)\n"
            "print('alive')")
    done = subprocess.run([sys.executable, "-c", code, str(SEGFAULT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OpenUSD crashed reading it (SIGSEGV); the file is corrupt" in done.stdout
    assert done.stdout.strip().endswith("alive")


def test_a_file_that_makes_openusd_allocate_2_gib_is_refused_within_the_child_memory_limit(tmp_path, arrays):
    read_usd(write_usd(tmp_path / "good.usdc", arrays))  # pxr's import and first read are not the file's
    before = _peak_rss_reset()
    started = time.perf_counter()
    with pytest.raises(SplatFormatError, match="alloc_2gib_49.usdc: not a readable USD stage"):
        read_usd(ALLOC_2GIB)
    assert time.perf_counter() - started < 5  # uncapped, OpenUSD spends 5.7 s filling 2 GiB
    if before is not None:  # this process allocated next to nothing (the child did the reading)
        assert _status_kib("VmHWM") * 1024 - before < 64 << 20


def test_a_text_layer_pulling_in_a_crashing_crate_is_guarded_too(tmp_path):
    """A .usda without asset paths skips the child; one with a sublayer goes through it."""
    (tmp_path / "bad.usdc").write_bytes(SEGFAULT.read_bytes())
    (tmp_path / "top.usda").write_text('#usda 1.0\n(\n    subLayers = [@./bad.usdc@]\n)\n')
    assert usd_guard.needs_child(tmp_path / "top.usda")
    with pytest.raises(SplatFormatError, match=r"top.usda: OpenUSD crashed reading it \(SIGSEGV\)"):
        read_usd(tmp_path / "top.usda")


def test_only_text_layers_without_asset_paths_skip_the_child(tmp_path, arrays):
    text = write_usd(tmp_path / "a.usda", arrays)
    crate = write_usd(tmp_path / "a.usdc", arrays)
    crate_usd = tmp_path / "a.usd"
    crate_usd.write_bytes(crate.read_bytes())
    (tmp_path / "a.usdz").write_bytes(b"PK\x03\x04" + bytes(60))
    assert not usd_guard.needs_child(text)
    assert all(usd_guard.needs_child(p) for p in (crate, crate_usd, tmp_path / "a.usdz"))


def test_a_hanging_reader_is_stopped_at_the_time_limit(tmp_path, monkeypatch, arrays):
    """Stands in for OpenUSD looping for ever: a child that says it is reading, then sleeps."""
    script = tmp_path / "hang.py"
    script.write_text(f"import time\nprint({usd_guard.PREFIX + usd_guard.READY!r}, flush=True)\ntime.sleep(60)\n")
    monkeypatch.setattr(usd_guard, "CHILD_SCRIPT", script)
    monkeypatch.setattr(usd_guard, "TIMEOUT_BASE_S", 1.0)
    started = time.perf_counter()
    with pytest.raises(SplatFormatError, match=r"did not finish reading it within 1 s \(stopped\)"):
        read_usd(write_usd(tmp_path / "a.usdc", arrays))
    assert time.perf_counter() - started < 10


def test_without_an_interpreter_it_reads_in_process_and_says_so(tmp_path, monkeypatch, arrays, caplog):
    monkeypatch.setattr(usd_guard, "child_python", lambda: None)
    monkeypatch.setattr(usd_guard, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="fuse4d"):
        got = read_usd(write_usd(tmp_path / "a.usdc", arrays))
    assert len(got) == len(arrays)
    assert "reading them in this process, unguarded" in caplog.text


def test_the_child_interpreter_is_found_when_sys_executable_is_not_python(monkeypatch):
    """Blender before 2.92 (and frozen apps) named their own binary in sys.executable: the guard
    then looks for python3.x under sys.prefix, where Blender bundles it."""
    assert usd_guard.child_python() == sys.executable
    monkeypatch.setattr(sys, "executable", "/opt/blender/blender")
    found = usd_guard.child_python()
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if os.path.isfile(os.path.join(sys.prefix, "bin", version)):
        assert found == os.path.join(sys.prefix, "bin", version)
    monkeypatch.setattr(sys, "prefix", "/nowhere")
    assert usd_guard.child_python() is None
