# SPDX-License-Identifier: GPL-3.0-or-later
"""Fused view-time attention on the CPU: `merge` against masked dense SDPA (named baseline) and
compiled FlexAttention (forward; it has no CPU backward), in one run.

Layout: V=8 views x T=8 frames, 64 and 128 tokens per frame (4,096 / 8,192 tokens), 4 heads of 64,
batch 1, fp32. Work ratio VT/(V+T-1) ~ 4.3. Targets (issue 3) at 8,192 tokens: merge >= 3.5x faster
than masked SDPA forward, >= 2.5x forward+backward, faster than compiled flex, peak memory <= 1/4.
Peak memory: each (method, size, pass) runs in a fresh subprocess (glibc told to return big blocks
with MALLOC_MMAP_THRESHOLD_) after a warm-up; the peak RSS is reset through /proc/self/clear_refs
and the reported number is VmHWM - VmRSS around one call (inputs excluded, outputs and grads included).
    python bench/attention.py [--repeats 7] [--tokens 64 128] [--no-memory] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

V, T, HEADS, DIM = 8, 8, 4, 64
METHODS = ("masked_sdpa", "merge", "flex")


def make_inputs(tokens: int, grad: bool):
    import torch
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, HEADS, V * T * tokens, DIM, generator=g).requires_grad_(grad) for _ in range(3)]


def attention_fn(method: str, tokens: int):
    import torch.nn.functional as F

    from fuse4d.core.attention import fused_view_time_attention, view_time_mask
    if method == "masked_sdpa":
        mask = view_time_mask(V, T, tokens)  # built once, outside the timed call
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return lambda q, k, v: fused_view_time_attention(q, k, v, V, T, backend=method)


def run_once(fn, q, k, v, backward: bool):
    import torch
    if not backward:
        with torch.no_grad():
            return fn(q, k, v)
    out = fn(q, k, v)
    return torch.autograd.grad(out, (q, k, v), torch.ones_like(out))


def median_times(jobs: list[tuple[str, bool]], tokens: int, repeats: int) -> dict:
    """(median, best) seconds per (method, backward); repeats are interleaved across methods so that load from
    other processes on a shared machine hits every method alike."""
    setups = {(m, bw): (attention_fn(m, tokens), make_inputs(tokens, bw)) for m, bw in jobs}
    for (m, bw), (fn, qkv) in setups.items():
        run_once(fn, *qkv, bw)  # warm-up (compiles flex)
    times = {job: [] for job in jobs}
    for _ in range(repeats):
        for (m, bw), (fn, qkv) in setups.items():
            start = time.perf_counter()
            run_once(fn, *qkv, bw)
            times[m, bw].append(time.perf_counter() - start)
    return {job: (statistics.median(t), min(t)) for job, t in times.items()}


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def peak_memory_child(method: str, tokens: int, backward: bool) -> None:
    fn, qkv = attention_fn(method, tokens), make_inputs(tokens, backward)
    run_once(fn, *qkv, backward)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark
    before = _status_kb("VmRSS")
    result = run_once(fn, *qkv, backward)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024}))
    del result


def peak_memory(method: str, tokens: int, backward: bool) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--child", method, str(tokens), str(int(backward))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  (memory of {method} failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 128], help="tokens per frame")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return peak_memory_child(args.child[0], int(args.child[1]), bool(int(args.child[2])))

    import torch
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)

    from fuse4d.core.attention import available_backends
    methods = [m for m in METHODS if m != "flex" or "flex" in available_backends("cpu")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; V={V} T={T}, {HEADS} heads x {DIM}, "
          f"batch 1, fp32, median and best of {args.repeats} interleaved repeats")
    jobs = [(s, m, bw) for s in args.tokens for m in methods for bw in (False, True) if not (m == "flex" and bw)]
    times, mems = {}, {}
    for s in tqdm(args.tokens, desc="timing", leave=False):
        medians = median_times([(m, bw) for t, m, bw in jobs if t == s], s, args.repeats)
        times.update({(s, m, bw): value for (m, bw), value in medians.items()})
    if not args.no_memory:
        for s, m, bw in tqdm(jobs, desc="peak memory", leave=False):
            mems[s, m, bw] = peak_memory(m, s, bw)

    def fmt_mem(key):
        value = mems.get(key)
        return f"{value:9.1f}" if value is not None else f"{'-':>9}"

    def fmt_time(key):
        value = times.get(key)
        return f"{value[0]:8.3f} {value[1]:8.3f}" if value is not None else f"{'n/a':>8} {'n/a':>8}"

    header = (f"{'tokens':>7} {'method':<12} {'fwd med':>8} {'fwd best':>8} {'f+b med':>8} {'f+b best':>8} "
              f"{'fwd MB':>9} {'f+b MB':>9}")
    print(header + "\n" + "-" * len(header))
    for s in args.tokens:
        for m in methods:
            print(f"{V * T * s:>7} {m:<12} {fmt_time((s, m, False))} {fmt_time((s, m, True))} "
                  f"{fmt_mem((s, m, False))} {fmt_mem((s, m, True))}")
    print("\nratios baseline / merge (> 1: merge better), median [best]:")
    base = "masked_sdpa"

    def ratio(s, other, bw):
        a, b = times[s, other, bw], times[s, "merge", bw]
        return f"{a[0] / b[0]:.2f}x [{a[1] / b[1]:.2f}x]"

    for s in args.tokens:
        line = f"  {V * T * s} tokens: vs masked SDPA fwd {ratio(s, base, False)}, fwd+bwd {ratio(s, base, True)}"
        if "flex" in methods:
            line += f"; vs compiled flex fwd {ratio(s, 'flex', False)}"
        for bw, name in ((False, "fwd"), (True, "f+b")):
            if mems.get((s, base, bw)) and mems.get((s, "merge", bw)):
                line += f"; peak {name} {mems[s, 'merge', bw] / mems[s, base, bw]:.3f} of masked SDPA"
        print(line)
    print(f"targets at {V * T * 128} tokens: fwd >= 3.5x, fwd+bwd >= 2.5x, faster than flex, peak <= 0.25")


if __name__ == "__main__":
    main()
