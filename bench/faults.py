# SPDX-License-Identifier: GPL-3.0-or-later
"""SIGKILL at random moments during every writer, many times (not a test; tests/test_faults.py runs
a seeded few). Figures for docs/reliability.md: kills per writer (even trials: at a random moment;
odd: at a random byte of the next version's Python-level writes), outputs found complete (old or
new version), torn outputs (target: 0).

    .venv/bin/python bench/faults.py [--kills 50] [--window 0.4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fault_writer import KINDS, expected, state  # noqa: E402
from test_faults import kill_byte, kill_during_writes  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--window", type=float, default=0.4, help="seconds after the first complete write")
    p.add_argument("--only", default="")
    p.add_argument("--json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            if args.only and kind not in args.only.split(","):
                continue
            scratch = Path(tmp) / kind
            complete, torn, started = expected(kind, scratch / "expected"), [], time.perf_counter()
            for trial in range(args.kills):
                path = scratch / f"t{trial}" / (f"out.{kind}" if kind in ("ply", "splat", "spz") else "out")
                path.parent.mkdir(parents=True)
                rng = random.Random(f"{kind}-{trial}")
                inside = kill_byte(kind, rng) if trial % 2 else None  # odd: at a random written byte
                kill_during_writes(kind, path, rng, args.window, inside)
                try:
                    found = state(kind, path)
                    if complete and found not in complete:
                        torn.append({"trial": trial, "error": "neither version"})
                except Exception as exc:  # noqa: BLE001 (a torn output is what we count)
                    torn.append({"trial": trial, "error": f"{type(exc).__name__}: {exc}"[:200]})
                leftovers = [q.name for q in path.parent.rglob("*") if q.name.endswith((".partial", ".tmp"))]
                rows.append({"kind": kind, "trial": trial, "leftover_temporaries": len(leftovers)})
            summary = {"kind": kind, "kills": args.kills, "complete": args.kills - len(torn), "torn": len(torn),
                       "first_torn": torn[:3], "kills_leaving_a_temporary": sum(
                           1 for r in rows if r["kind"] == kind and r["leftover_temporaries"]),
                       "seconds": round(time.perf_counter() - started, 1)}
            print(json.dumps(summary), flush=True)
            rows.append(summary)
    if args.json:
        Path(args.json).write_text(json.dumps([r for r in rows if "kills" in r], indent=1) + "\n")
    return 1 if any(r.get("torn") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
