# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzz targets for every parser of untrusted input, shared by tests/test_fuzz.py (bounded) and
bench/fuzz.py (long runs, the figures in docs/reliability.md).

A target takes the bytes of one input, writes them where its parser expects them and parses them.
The oracle: the parser returns, or raises the target's one clear error type; any other exception
is a crash. Memory is measured with tracemalloc (numpy's buffers included) per input."""
from __future__ import annotations

import gzip
import json
import os
import random
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fuse4d.core.io import (JOB_FILE, Sequence4D, SplatArrays, SplatFormatError, read_job, read_ply,
                            read_sequence, read_splat, read_spz, write_job, write_sequence, write_splat,
                            write_spz)
from fuse4d.core.io.ply import encode_ply, ply_property_names

REPO = Path(__file__).resolve().parents[1]
RECON_WEIGHTS = REPO / "tests" / "fixtures" / "vggt_tiny" / "weights.safetensors"


def small_arrays(n: int = 12, degree: int = 1, seed: int = 0) -> SplatArrays:
    rng = np.random.default_rng(seed)
    return SplatArrays(means=rng.normal(size=(n, 3)), quats=rng.normal(size=(n, 4)),
                       log_scales=rng.normal(size=(n, 3)) - 3, opacity_logits=rng.normal(size=n),
                       sh=rng.normal(size=(n, (degree + 1) ** 2, 3)) * 0.3)


def camera(i: int = 0) -> dict:
    return {"viewmat": [[1, 0, 0, 0.1 * i], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]],
            "K": [[40, 0, 16], [0, 40, 12], [0, 0, 1]], "width": 32, "height": 24}


# --- real seed files ---------------------------------------------------------------------------

def ply_variants(arrays: SplatArrays) -> dict[str, bytes]:
    """The same Gaussians as binary little- and big-endian, ASCII, and an odd property order with
    doubles and an extra element before the vertices (what other tools write)."""
    names = ply_property_names(arrays.sh_degree)
    head, data = encode_ply(arrays).split(b"end_header\n", 1)
    matrix = np.frombuffer(data, "<f4").reshape(len(arrays), len(names))
    big = head.replace(b"binary_little_endian", b"binary_big_endian") + b"end_header\n" + \
        matrix.astype(">f4").tobytes()
    ascii_rows = "\n".join(" ".join(f"{v:.6g}" for v in row) for row in matrix)
    ascii_ply = head.replace(b"binary_little_endian", b"ascii") + b"end_header\n" + ascii_rows.encode() + b"\n"
    order = list(reversed(range(len(names))))
    odd_head = (f"ply\nformat binary_little_endian 1.0\ncomment odd order\nelement extra 2\nproperty uchar a\n"
                f"element vertex {len(arrays)}\n" + "".join(f"property double {names[i]}\n" for i in order)
                + "end_header\n").encode()
    odd = odd_head + b"\x01\x02" + matrix[:, order].astype("<f8").tobytes()
    return {"le": encode_ply(arrays), "be": big, "ascii": ascii_ply, "odd": odd}


def spz_raw(data: bytes) -> bytes:
    return gzip.decompress(data)


# --- targets -------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    seeds: list[bytes]
    run: Callable[[Path, bytes], object]  # (scratch folder, input) -> parsed value
    errors: tuple[type[BaseException], ...]
    mutator: Callable[[bytes, random.Random], bytes] | None = None  # format-aware mutation (None: the default)
    native: bool = False  # the parser allocates outside Python (C++): measure peak RSS as well
    # How a forked child faults the parser's code in before its measured input (default: `run` on
    # the first seed); OpenUSD's skips read_usd's child process, which that seed does not need.
    warm_up: Callable[[Path, bytes], object] | None = None


def _file(scratch: Path, data: bytes, name: str) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


def _sequence_folder(scratch: Path, manifest: bytes) -> Path:
    folder = scratch / "seq"
    if not folder.exists():
        write_sequence(folder, Sequence4D(frames=[small_arrays(), small_arrays(seed=1)], views=2,
                                          cameras=[camera(0), camera(1)]))
    (folder / "manifest.json").write_bytes(manifest)
    return folder


def _job_folder(scratch: Path, job: bytes) -> Path:
    folder = scratch / "job"
    if not folder.exists():
        write_job(folder, [dict(camera(i), image=f"views/view_{i:03d}.png") for i in range(2)], frames=4, fps=8)
        (folder / "views").mkdir()
        for i in range(2):
            (folder / "views" / f"view_{i:03d}.png").write_bytes(b"png")
        (folder / "source.ply").write_bytes(encode_ply(small_arrays()))
    (folder / JOB_FILE).write_bytes(job)
    return folder


def _cameras_json(scratch: Path, data: bytes):
    try:
        from fuse4d.core.cameras import cameras_from_json_text
    except ImportError:  # an older checkout (bench/fuzz.py measuring what the fixes fixed): the node's code
        from fuse4d.core.cameras import cameras_from_dicts

        def cameras_from_json_text(text):
            try:
                return cameras_from_dicts(json.loads(text))
            except (KeyError, TypeError) as exc:  # what the node caught and turned into ValueError
                raise ValueError(str(exc)) from None
    return cameras_from_json_text(data.decode("utf-8", errors="replace"))


def _recon_header(scratch: Path, data: bytes):
    from fuse4d.core.recon.weights import read_header

    return read_header(_file(scratch, data, "model.safetensors"))


def _wan_weights(scratch: Path, data: bytes):
    from fuse4d.core.wan.keys import read_state_dict

    return read_state_dict(_file(scratch, data, "wan.safetensors"))


def _safetensors_seed(path: Path, body_bytes: int = 4096) -> bytes:
    """A real file's header with its tensors cut to what fits `body_bytes` (keeps inputs small)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    kept, offset = {"__metadata__": header.get("__metadata__", {"format": "pt"})}, 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        a, b = entry["data_offsets"]
        if offset + (b - a) > body_bytes:
            continue
        kept[key] = dict(entry, data_offsets=[offset, offset + b - a])
        offset += b - a
    text = json.dumps(kept).encode()
    return len(text).to_bytes(8, "little") + text + bytes(offset)


def targets(scratch: Path) -> list[Target]:
    arrays = small_arrays(degree=1)
    plys = ply_variants(arrays)
    tmp = scratch / "seeds"
    tmp.mkdir(parents=True, exist_ok=True)
    splat = write_splat(tmp / "a.splat", arrays).read_bytes()
    spz = write_spz(tmp / "a.spz", small_arrays(degree=2)).read_bytes()
    seq_manifest = json.dumps({
        "format": "fuse4d-4d-splat", "format_version": 1, "timesteps": 2, "views": 2, "fps": 8.0,
        "coordinates": "opencv", "frames": [{"t": 0, "file": "frame_0000.ply", "count": 12},
                                            {"t": 1, "file": "frame_0001.ply", "count": 12}],
        "cameras": [camera(0), camera(1)], "corresponding": False, "extra": {}}).encode()
    job = json.dumps({"format": "fuse4d-job", "format_version": 1, "coordinates": "opencv", "views": 2,
                      "frames": 4, "fps": 8.0, "prompt": "", "source": "source.ply",
                      "cameras": [dict(camera(i), image=f"views/view_{i:03d}.png") for i in range(2)],
                      "extra": {}}).encode()
    try:
        from fuse4d.core.weights_file import WeightsFileError
    except ImportError:  # an older checkout: its loaders' own error types
        from fuse4d.core.recon.weights import WeightsError as WeightsFileError

    weights = _safetensors_seed(RECON_WEIGHTS)
    return [
        Target("ply", list(plys.values()), lambda s, d: read_ply(_file(s, d, "a.ply")), (SplatFormatError,)),
        Target("splat", [splat], lambda s, d: read_splat(_file(s, d, "a.splat")), (SplatFormatError,)),
        Target("spz-gzip", [spz], lambda s, d: read_spz(_file(s, d, "a.spz")), (SplatFormatError,)),
        # the decompressed stream mutated, then gzipped: mutations reach the SPZ parser, not the CRC
        Target("spz-raw", [spz_raw(spz)], lambda s, d: read_spz(_file(s, gzip.compress(d, 1, mtime=0), "a.spz")),
               (SplatFormatError,)),
        Target("manifest", [seq_manifest], lambda s, d: read_sequence(_sequence_folder(s, d)), (SplatFormatError,)),
        Target("job", [job], lambda s, d: read_job(_job_folder(s, d)), (ValueError,)),
        Target("cameras_json", [json.dumps([camera(0), camera(1)]).encode()], _cameras_json, (ValueError,)),
        Target("safetensors-recon", [weights], _recon_header, (WeightsFileError,)),
        Target("safetensors-wan", [weights], _wan_weights, (WeightsFileError,)),
        *_interchange_targets(scratch),
    ]


def _interchange_targets(scratch: Path) -> list[Target]:
    try:
        from fuzz_interchange import interchange_targets
    except ImportError:  # an older checkout without the glTF / USD readers
        return []
    return interchange_targets(scratch)


# --- mutation --------------------------------------------------------------------------------

HUGE = [b"1000000000000", b"-1", b"18446744073709551616", b"4294967295", b"0", b"99999999999999999999"]
JSON_VALUES = [None, True, -1, 0, 10 ** 12, 1e308, float("inf"), "", "..", "../../etc/passwd", "/etc/passwd",
               "C:\\Windows\\x.ply", "C:x.ply", "\\\\server\\share\\a.ply", "a\0b", [], {}, [[]], "x" * 300,
               [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], [[0, 0, 0], [0, 0, 0], [0, 0, 1]]]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        op = rng.randrange(8)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a bit
            j = rng.randrange(len(b))
            b[j] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # overwrite a byte with a telling value
            b[rng.randrange(len(b))] = rng.choice((0, 0xFF, 0x7F, 0x80, ord("\n"), ord(" "), ord("9")))
        elif op == 2:  # truncate
            del b[i:]
        elif op == 3:  # insert junk
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 4 and b:  # delete a chunk
            del b[i:i + rng.randrange(1, 64)]
        elif op == 5 and b:  # duplicate a chunk
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randrange(1, 64)]
        elif op == 6:  # replace a decimal number with a huge / negative one (counts, lengths)
            digits = [k for k in range(len(b)) if chr(b[k]).isdigit()]
            if digits:
                k = rng.choice(digits)
                end = k
                while end < len(b) and chr(b[end]).isdigit():
                    end += 1
                b[k:end] = rng.choice(HUGE)
        elif op == 7 and len(b) >= 8:  # a little-endian length / count field set to something absurd
            j = rng.randrange(len(b) - 7)
            b[j:j + 8] = rng.choice((2 ** 40, 2 ** 63, 10 ** 12, 0)).to_bytes(8, "little")
    return bytes(b)


def mutate_json(data: bytes, rng: random.Random) -> bytes:
    """Structure-aware: replace, drop or retype one value somewhere in the document."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return mutate_bytes(data, rng)
    nodes = []

    def walk(node, parent, key):
        nodes.append((parent, key))
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in children:
            walk(v, node, k)

    walk(doc, None, None)
    for _ in range(rng.choice((1, 1, 2, 3))):
        parent, key = rng.choice(nodes)
        if parent is None:
            if rng.random() < 0.2:  # nested beyond any recursion limit
                return b"[" * 100_000 + b"]" * 100_000
            doc = rng.choice(JSON_VALUES + [[doc]])
            break
        if rng.random() < 0.2 and isinstance(parent, dict):
            parent.pop(key, None)
        else:
            try:
                parent[key] = rng.choice(JSON_VALUES)
            except (IndexError, KeyError):
                pass
    try:
        return json.dumps(doc).encode()
    except (ValueError, RecursionError):
        return mutate_bytes(data, rng)


def mutate(target: Target, data: bytes, rng: random.Random) -> bytes:
    if target.mutator is not None:
        return target.mutator(data, rng)
    if target.name in ("manifest", "job", "cameras_json") and rng.random() < 0.7:
        return mutate_json(data, rng)
    return mutate_bytes(data, rng)


# --- one input ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    ok: bool           # parsed
    refused: bool      # our clear error
    crash: str | None  # any other exception: type and message
    peak: int          # bytes allocated at the peak (tracemalloc)
    child_peak: int = 0  # peak RSS of a process the parser started (read_usd's crash guard), bytes


def _rss_kib() -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of this process in KiB (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            values = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "VmHWM"))}
        return values["VmRSS"], values["VmHWM"]
    except (OSError, KeyError, ValueError):
        return None


def _reset_peak_rss() -> tuple[int, int] | None:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: clear_refs 5); the RSS now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _rss_kib()


# A native parser's measured input runs in a forked child (POSIX): a segfault in C++ is then
# counted as a crash instead of ending the campaign, and the child's address space is capped so
# that a lying count cannot take the machine's memory. Unmeasured runs (the well-formed seeds, as
# warm-up) stay in this process, so that the children inherit the parser's loaded state.
CHILD_ADDRESS_SPACE = 4 << 30  # bytes over the parent's


def run_one(target: Target, scratch: Path, data: bytes, measure: bool = True) -> Outcome:
    if target.native and measure and hasattr(os, "fork"):
        return _run_in_child(target, scratch, data, measure)
    return _run_here(target, scratch, data, measure)


def _run_in_child(target: Target, scratch: Path, data: bytes, measure: bool) -> Outcome:
    import resource
    import signal

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report through the pipe, never return into the caller's code
        try:
            os.close(read_end)
            size = _rss_kib()
            vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE") if size else 0
            if vm:
                resource.setrlimit(resource.RLIMIT_AS, (vm + CHILD_ADDRESS_SPACE, resource.RLIM_INFINITY))
            # A fork shares the libraries' code without mapping it: parse a seed first, so that the
            # code pages it faults in are not counted against the input.
            (target.warm_up or target.run)(scratch, target.seeds[0])
            outcome = _run_here(target, scratch, data, measure)
            outcome.child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
            os.write(write_end, json.dumps(outcome.__dict__).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    if answer:
        return Outcome(**json.loads(answer))
    why = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
    return Outcome(False, False, f"process died: {why}", 0)


def _run_here(target: Target, scratch: Path, data: bytes, measure: bool = True) -> Outcome:
    rss_before = _reset_peak_rss() if measure and target.native else None
    if measure:
        tracemalloc.start()
    try:
        target.run(scratch, data)
        result = Outcome(True, False, None, 0)
    except target.errors:
        result = Outcome(False, True, None, 0)
    except (MemoryError, RecursionError, Exception) as exc:  # noqa: BLE001 (that is the point)
        result = Outcome(False, False, f"{type(exc).__name__}: {exc}"[:300], 0)
    finally:
        if measure:
            result.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rss_after = _rss_kib() if rss_before else None
            if rss_after:  # growth of the peak RSS over this input: allocations tracemalloc cannot see
                result.peak = max(result.peak, (rss_after[1] - rss_before[0]) * 1024)
    return result


def memory_bound(target: Target, data: bytes) -> int:
    """What a parser may allocate for one input: a small multiple of its size (compressed SPZ: of
    what its header may honestly expand to, deflate's ~1032x), plus a fixed allowance."""
    factor = 1100 * 8 if target.name.startswith("spz") else 64
    return factor * len(data) + (8 << 20)
