# SPDX-License-Identifier: GPL-3.0-or-later
"""Writers under fault injection, shared by tests/test_faults.py and bench/faults.py.

`python tests/fault_writer.py KIND PATH [BYTES]` writes versions 0, 1, 0, 1, ... of one output to
PATH forever, printing "ready" after the first complete write; the parent kills it with SIGKILL at
a random moment (or, with BYTES, the child kills itself once that many more bytes were written:
inside a writer for sure) and checks that PATH holds exactly one complete version (`state`)."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

FILE_KINDS = ("ply", "splat", "spz", "sequence", "job")
KINDS = FILE_KINDS + ("checkpoint", "video-model")


def arrays(version: int):
    from fuse4d.core.io import SplatArrays

    n = 20_000 + 10_000 * version  # versions differ in size: a torn file cannot pass for either
    rng = np.random.default_rng(version)
    return SplatArrays(means=rng.normal(size=(n, 3)), quats=rng.normal(size=(n, 4)),
                       log_scales=rng.normal(size=(n, 3)) - 3, opacity_logits=rng.normal(size=n),
                       sh=rng.normal(size=(n, 16, 3)) * 0.3)


def camera(i: int) -> dict:
    return {"viewmat": [[1, 0, 0, 0.1 * i], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]],
            "K": [[40, 0, 16], [0, 40, 12], [0, 0, 1]], "width": 32, "height": 24, "image": f"view_{i}.png"}


def write(kind: str, path: Path, version: int, cache: dict) -> None:
    from fuse4d.core import io

    if version not in cache:
        cache[version] = arrays(version)
    a = cache[version]
    if kind == "ply":
        io.write_ply(path, a)
    elif kind == "splat":
        io.write_splat(path, a)
    elif kind == "spz":
        io.write_spz(path, a)
    elif kind == "sequence":
        io.write_sequence(path, io.Sequence4D(frames=[a, a.subset(slice(0, 5000))], fps=8 + version))
    elif kind == "job":
        io.write_job(path, [camera(i) for i in range(200 + 100 * version)], frames=4, fps=8.0,
                     prompt="x" * 100_000)
    elif kind == "checkpoint":
        import torch

        from fuse4d.core.recon.train_ckpt import save_checkpoint

        model = torch.nn.Linear(256, 256 * (1 + version % 2))
        torch.nn.init.constant_(model.weight, float(version))
        save_checkpoint(path, version, model, None, {"losses": [float(version)] * 1000}, keep=2)
    elif kind == "video-model":
        import torch

        from fuse4d.core.wan.keys import WAN_TINY, build_wan_transformer
        from fuse4d.core.wan.model_io import VideoModelConfig, save_video_model

        model = cache.setdefault("video-model", build_wan_transformer(WAN_TINY))
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(version))
        # the versions' configs differ in size too: a torn config.json cannot pass for either
        save_video_model(path, model, VideoModelConfig(wan=WAN_TINY, extra={"version": version,
                                                                             "pad": "x" * (1000 * version)}))
    else:
        raise ValueError(kind)


def state(kind: str, path: Path) -> str:
    """A fingerprint of what PATH holds, read with the project's own readers (raises if torn)."""
    from fuse4d.core import io

    h = hashlib.sha256()
    if kind in ("ply", "splat", "spz"):
        reader = {"ply": io.read_ply, "splat": io.read_splat, "spz": io.read_spz}[kind]
        reader(path)
        h.update(path.read_bytes())
    elif kind == "sequence":
        seq = io.read_sequence(path)
        h.update(str(seq.fps).encode())
        for frame in seq.frames:
            h.update(frame.means.tobytes())
    elif kind == "job":
        job = io.read_job(path) if (path / io.JOB_FILE).exists() else None
        h.update(str(len(job["cameras"]) if job else "missing").encode())
    elif kind == "checkpoint":
        from fuse4d.core.recon.train_ckpt import list_checkpoints, load_checkpoint

        latest = list_checkpoints(path)[-1]
        model, _, meta = load_checkpoint(latest)
        step = int(meta["step"])
        if not (model["weight"] == float(step)).all() or model["weight"].shape[0] != 256 * (1 + step % 2):
            raise AssertionError(f"checkpoint {latest.name} does not hold step {step}'s weights")
        return f"step-{step}"
    elif kind == "video-model":
        from fuse4d.core.wan.model_io import load_video_model

        model, config = load_video_model(path)
        version = config.extra["version"]
        if not all((p == float(version)).all() for p in model.parameters()):
            raise AssertionError(f"{path}: the weights are not version {version}'s, its config is")
        return f"version-{version}"
    return h.hexdigest()


def expected(kind: str, scratch: Path) -> set[str]:
    """The fingerprints of the complete versions (any step, for checkpoints)."""
    if kind == "checkpoint":
        return set()  # checked inside `state`: the latest complete checkpoint holds its own step
    out, cache = set(), {}
    for version in (0, 1):
        target = scratch / f"v{version}" / ("out" if kind in ("sequence", "job", "video-model") else f"out.{kind}")
        write(kind, target, version, cache)
        out.add(state(kind, target))
    return out


def kill_inside_writes(after_bytes: int) -> None:
    """From now on, SIGKILL this process once `after_bytes` more bytes went through Python file
    writes: the kill lands inside a writer at a chosen point (safetensors' own writes excepted)."""
    import builtins
    import io
    import os
    import signal

    real_open, left = io.open, [after_bytes]

    class Dying:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            view = memoryview(data).cast("B") if not isinstance(data, str) else data
            if len(view) >= left[0]:
                self._f.write(view[:left[0]])
                self._f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            left[0] -= len(view)
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    def dying_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Dying(f) if any(c in mode for c in "wax+") else f

    builtins.open = io.open = dying_open


def main() -> None:
    kind, path = sys.argv[1], Path(sys.argv[2])
    kill_after = int(sys.argv[3]) if len(sys.argv) > 3 else None
    cache: dict = {}
    for n in range(10 ** 9):
        write(kind, path, n + 1 if kind == "checkpoint" else n % 2, cache)
        if n == 0:
            print("ready", flush=True)
            if kill_after is not None:
                kill_inside_writes(kill_after)


if __name__ == "__main__":
    main()
