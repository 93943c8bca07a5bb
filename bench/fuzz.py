# SPDX-License-Identifier: GPL-3.0-or-later
"""Long fuzzing campaigns over every parser of untrusted input (not a test; tests/test_fuzz.py runs
a bounded share of the same inputs in the suite).

    .venv/bin/python bench/fuzz.py [--inputs 5000] [--seed 0] [--only ply,spz-raw] [--json out.json]

Input i of a target is mutation `random.Random(seed * 10**9 + i)` of one of its real seed files
(tests/fuzz_targets.py), so every crash reported here is reproducible from its number. Per target:
inputs tried, parsed, refused with the clear error, crashes (anything else), the largest memory peak
of one input, and inputs over the bound (fuzz_targets.memory_bound: 64x the input + 8 MiB; SPZ,
compressed: 8800x). OpenUSD targets run each input in a forked, memory-capped child and count its
peak RSS growth too (C++ allocations); a child that dies (segfault) is a crash "process died".
read_usd itself reads crate files first in its own child process (core/io/usd_guard.py, under its
memory and time limits): that process's peak RSS, all of it (Python and pxr included), is
reported as "guard child peak". Exit code 1 if anything crashed or went over the bound."""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_targets import memory_bound, mutate, run_one, targets  # noqa: E402


def campaign(target, scratch: Path, inputs: int, seed: int) -> dict:
    counts, crashes, over, worst, worst_child = Counter(), [], [], 0, 0
    for data in target.seeds:  # warm up outside the measurement: lazy imports (torch) are not the input's
        run_one(target, scratch, data, measure=False)
    started = time.perf_counter()
    for i in range(inputs):
        rng = random.Random(seed * 10 ** 9 + i)
        data = mutate(target, rng.choice(target.seeds), rng)
        outcome = run_one(target, scratch, data)
        counts["parsed" if outcome.ok else "refused" if outcome.refused else "crashed"] += 1
        if outcome.crash:
            crashes.append({"input": i, "error": outcome.crash})
        worst = max(worst, outcome.peak)
        worst_child = max(worst_child, outcome.child_peak)
        if outcome.peak > memory_bound(target, data):
            over.append({"input": i, "bytes": len(data), "peak": outcome.peak})
    kinds = Counter(c["error"].split(":")[0] for c in crashes)
    return {"target": target.name, "inputs": inputs, "seed": seed, **{k: counts[k] for k in ("parsed", "refused", "crashed")},
            "crash_kinds": dict(kinds), "first_crashes": crashes[:5], "over_memory_bound": len(over),
            "max_peak_bytes": worst, "max_guard_child_peak_bytes": worst_child,
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=5000, help="mutated inputs per target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated target names")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets(Path(tmp)):
            if args.only and target.name not in args.only.split(","):
                continue
            row = campaign(target, Path(tmp), args.inputs, args.seed)
            rows.append(row)
            print(f"{row['target']:18s} {row['inputs']:6d} inputs  parsed {row['parsed']:5d}  refused "
                  f"{row['refused']:5d}  crashed {row['crashed']:4d}  {dict(row['crash_kinds'])}  "
                  f"max peak {row['max_peak_bytes'] / 1024:.0f} KiB  over bound {row['over_memory_bound']}  "
                  + (f"guard child peak {row['max_guard_child_peak_bytes'] / 2 ** 20:.0f} MiB  "
                     if row["max_guard_child_peak_bytes"] else "")
                  + f"{row['seconds']} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(r["crashed"] or r["over_memory_bound"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
