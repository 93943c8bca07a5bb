# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults injected into real processes: SIGKILL at a random moment during every writer, a file
size limit standing in for a full disk, and training killed mid-run then resumed."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fault_writer import FILE_KINDS, expected, state

from fuse4d.core.io import read_ply, write_ply
from fuse4d.core.io.ply import encode_ply

HERE = Path(__file__).resolve().parent
TRIALS = 2  # per writer here (seeded); bench/faults.py runs many more
posix_only = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and RLIMIT_FSIZE are POSIX")


def kill_byte(kind: str, rng: random.Random) -> int:
    """A random byte within the next version's Python-level writes (a checkpoint's and a video
    model's are their JSON: safetensors writes its tensors itself)."""
    return rng.randrange(1, {"checkpoint": 20_000, "video-model": 4_000}.get(kind, 6_000_000))


def kill_during_writes(kind: str, path: Path, rng: random.Random, window: float = 0.4,
                       inside_bytes: int | None = None) -> None:
    """Start the looping writer, let it finish one version, then SIGKILL it `rng`-randomly later
    (or, with `inside_bytes`, let it kill itself after that many more bytes written)."""
    extra = [] if inside_bytes is None else [str(inside_bytes)]
    proc = subprocess.Popen([sys.executable, str(HERE / "fault_writer.py"), kind, str(path), *extra],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        assert proc.stdout.readline().strip() == "ready"
        if inside_bytes is None:
            time.sleep(rng.uniform(0.0, window))
        else:
            proc.wait(timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@posix_only
@pytest.mark.parametrize("kind", FILE_KINDS + ("checkpoint", "video-model"))
def test_sigkill_during_a_writer_leaves_the_old_or_the_new_output(tmp_path, kind):
    complete = expected(kind, tmp_path / "expected")
    for trial in range(TRIALS):
        path = tmp_path / f"trial{trial}" / (f"out.{kind}" if kind in ("ply", "splat", "spz") else "out")
        path.parent.mkdir()
        rng = random.Random(f"{kind}-{trial}")
        # odd trials: killed at a random byte of the next version's writes (inside a writer for sure)
        kill_during_writes(kind, path, rng, inside_bytes=kill_byte(kind, rng) if trial % 2 else None)
        found = state(kind, path)  # the project's reader: raises on a torn output
        if complete:
            assert found in complete, f"{kind} trial {trial}: neither version"


FSIZE_CHILD = r"""
import resource, signal, sys
from fuse4d.core.io import write_ply
from fuse4d.core.io.ply import encode_ply
sys.path.insert(0, sys.argv[2])
from fault_writer import arrays
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    write_ply(sys.argv[1], arrays(1))
except OSError as exc:
    print(f"refused: {exc}")
"""


@posix_only
def test_a_full_disk_is_a_clear_error_and_nothing_is_half_written(tmp_path):
    """RLIMIT_FSIZE (a real kernel limit, no root needed) makes writes past 1 MiB fail like a full
    disk: the writer raises, the old file stays intact, no temporary file is left behind."""
    from fault_writer import arrays

    path = tmp_path / "scene.ply"
    write_ply(path, arrays(0))
    before = path.read_bytes()
    out = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(path), str(HERE)], capture_output=True, text=True)
    assert "refused: [Errno 27] File too large" in out.stdout, out.stdout + out.stderr
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]
    # the command line: one line, exit code 2, no traceback, nothing written
    small = tmp_path / "small.ply"
    small.write_bytes(encode_ply(arrays(1)))
    cli = subprocess.run([sys.executable, "-c",
                          "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                          "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
                          "from fuse4d.core.cli import main; sys.exit(main(sys.argv[1:]))",
                          "convert", str(small), str(tmp_path / "out.spz")], capture_output=True, text=True)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr
    assert cli.stderr.startswith("fuse4d convert: error: ") and "disk" in cli.stderr and cli.stderr.count("\n") == 1
    assert not any(p.name.startswith(".out.spz") or p.name == "out.spz" for p in tmp_path.iterdir())
    assert len(read_ply(small)) == 30_000


TRAIN_CHILD = r"""
import sys, torch
torch.set_num_threads(1)
from fuse4d.core.recon.train import preset, train
cfg = preset("smoke", static_steps=2, dynamic_steps=2, ckpt_every=1, out=sys.argv[1], lambda_lpips=0.0)
train(cfg, progress=False)
"""


@posix_only
def test_training_killed_at_a_random_step_resumes_to_the_same_weights(tmp_path):
    """Bit-identical on the CPU: SIGKILL once a random checkpoint exists, resume, compare with an
    uninterrupted run of the same config."""
    from fuse4d.core.recon.train import preset, train
    from fuse4d.core.recon.train_ckpt import list_checkpoints

    torch.set_num_threads(1)
    rng = random.Random(13)
    kill_after = rng.randint(1, 3)  # of 4 steps
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, str(killed)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not any(int(p.stem[5:]) >= kill_after for p in list_checkpoints(killed)):
            assert proc.poll() is None and time.monotonic() < deadline, "the training child ended early"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = int(list_checkpoints(killed)[-1].stem[5:])
    assert done_before < 4, "killed too late to test a resume"
    common = dict(static_steps=2, dynamic_steps=2, ckpt_every=1, lambda_lpips=0.0)
    resumed = train(preset("smoke", out=str(killed), **common), progress=False)
    straight = train(preset("smoke", out=str(tmp_path / "straight"), **common), progress=False)
    assert resumed["step"] == straight["step"] == 4
    assert resumed["losses"] == straight["losses"]
    a, b = resumed["model"].state_dict(), straight["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b), [k for k in b if not torch.equal(a[k], b[k])][:5]


def test_an_injected_enospc_is_one_clear_line_and_nothing_is_left(tmp_path, monkeypatch, capsys):
    """ENOSPC itself (the errno a full disk gives), injected after part of the file is written."""
    import builtins
    import errno

    from fault_writer import arrays

    from fuse4d.core.cli import main
    from fuse4d.core.io import ply

    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):  # the disk fills 4 KiB into the file
            data = bytes(data)
            self.written += self.f.write(data[:max(4096 - self.written, 0)])
            if self.written >= 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    src = tmp_path / "in.ply"
    src.write_bytes(encode_ply(arrays(0)))
    monkeypatch.setattr(ply, "open", lambda path, mode="r": FullDisk(builtins.open(path, mode)) if "w" in mode
                        else builtins.open(path, mode), raising=False)
    assert main(["convert", str(src), str(tmp_path / "out.ply")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fuse4d convert: error: out of disk space, nothing was written") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ply"]


def test_a_video_model_update_failing_after_the_weights_leaves_the_old_pair_and_keeps_other_files(
        tmp_path, monkeypatch):
    from fuse4d.core.wan import model_io
    from fuse4d.core.wan.keys import WAN_TINY, build_wan_transformer

    def model_of(value: float):
        model = build_wan_transformer(WAN_TINY)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
        return model

    folder = tmp_path / "model"
    model_io.save_video_model(folder, model_of(1.0), model_io.VideoModelConfig(wan=WAN_TINY, extra={"v": 1}))
    (folder / "record.json").write_text('{"what": "an export record"}')    # what export_tiny writes beside
    (folder / "check").mkdir()
    (folder / "check" / "grid.png").write_bytes(b"png")

    def config_write_fails(obj, fp, **kwargs):  # the new weights are written by now; the config fails
        written = Path(fp.name)
        assert written.name.startswith("config.json") and (written.parent / "model.safetensors").stat().st_size > 0
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(model_io.json, "dump", config_write_fails)
    with pytest.raises(OSError, match="Input/output"):
        model_io.save_video_model(folder, model_of(2.0), model_io.VideoModelConfig(wan=WAN_TINY, extra={"v": 2}))
    monkeypatch.undo()
    model, config = model_io.load_video_model(folder)
    assert config.extra == {"v": 1} and all((p == 1.0).all() for p in model.parameters())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]        # no temporary folder left
    # a successful update swaps in the new pair and keeps the folder's other files
    model_io.save_video_model(folder, model_of(2.0), model_io.VideoModelConfig(wan=WAN_TINY, extra={"v": 2}))
    model, config = model_io.load_video_model(folder)
    assert config.extra == {"v": 2} and all((p == 2.0).all() for p in model.parameters())
    assert sorted(p.name for p in folder.iterdir()) == ["check", "config.json", "model.safetensors", "record.json"]
    assert (folder / "check" / "grid.png").read_bytes() == b"png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
