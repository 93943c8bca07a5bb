# SPDX-License-Identifier: GPL-3.0-or-later
"""Load on a real ComfyUI server (not a test): a queue of mixed Fuse4D prompts, valid and invalid.

    .venv/bin/python bench/comfy_load.py [--rounds 2] [--json out.json] [--rss-growth-mib 64]

Starts ComfyUI v0.3.75 as the tests do (tests/comfy_runtime.py installs it into .cache/ once), with
the tiny models, and per round queues 24 prompts at once, in a seeded shuffled order: 14 valid ones
(the three example workflows on tiny models: 5 text-to-4D and 5 animate-a-scene with varied seeds,
4 reconstruct-only with varied fps) and 10 invalid ones, two of each kind: bad cameras_json, a
wrong image count and a sequence outside the input folder (these fail while running, with a
ValueError naming the problem), an unknown node and a broken link (both refused at /prompt).
Measured: every valid prompt completes, every invalid one fails cleanly (refused at /prompt, or a
ValueError in /history; any other exception type counts as wrong), the server answers /queue
throughout (worst latency; unanswered polls), and its resident memory (VmRSS) after each round
against the first round's, with a stated bound on the growth. Exit code 1 when anything is wrong."""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from comfy_runtime import ComfyServer, PromptFailed  # noqa: E402
from conftest_comfy import (bad_image_count_prompt, load_workflow, start_tiny_server, swap_tiny,  # noqa: E402
                            write_scene_ply)

PROMPTS_PER_ROUND = 24
CLEAN_EXECUTION_ERRORS = {"ValueError"}  # the pack's one error type for bad inputs


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def with_seed(prompt: dict, seed: int) -> dict:
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["seed"] = seed
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = f"load/{seed}_" + node["inputs"]["filename_prefix"].split("/")[-1]
    return prompt


def valid_prompts(server: ComfyServer, round_index: int) -> list[tuple[str, dict, bool]]:
    out = []
    for i in range(5):
        seed = 1000 * round_index + i
        out.append((f"text_to_4d seed {seed}", with_seed(swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"),
                                                                  server, steps=1), seed), True))
        out.append((f"animate_scene seed {seed}", with_seed(swap_tiny(load_workflow("animate_scene_wan22_ti2v_5b.json"),
                                                                     server, steps=1), seed), True))
    for i in range(4):
        recon = with_seed(swap_tiny(load_workflow("reconstruct_only.json"), server), 1000 * round_index + i)
        for node in recon.values():
            if node["class_type"] == "Fuse4DReconstruct4DGaussians":
                node["inputs"]["fps"] = 8.0 + i + 10 * round_index  # a new input: the node runs again
        out.append((f"reconstruct_only {i}", recon, True))
    return out


def invalid_prompts(server: ComfyServer) -> list[tuple[str, dict, bool]]:
    bad_cams = swap_tiny(load_workflow("animate_scene_wan22_ti2v_5b.json"), server, steps=1)
    for node in bad_cams.values():
        if node["class_type"] == "Fuse4DRenderFrozenTimeViews":
            node["inputs"]["cameras_json"] = json.dumps([{"viewmat": [[0] * 4] * 4, "K": [[0] * 3] * 3,
                                                          "width": 8, "height": 8}])
    outside = {"1": {"class_type": "Fuse4DLoad4DSplats", "inputs": {"sequence": "../../etc"}},
               "2": {"class_type": "Fuse4DSave4DSplats", "inputs": {"gaussians": ["1", 0], "filename_prefix": "x",
                                                                   "format": "ply sequence", "fps": 0.0}}}
    unknown = {"1": {"class_type": "Fuse4DNoSuchNode", "inputs": {}}}
    broken = swap_tiny(load_workflow("reconstruct_only.json"), server)
    broken["3"]["inputs"]["images"] = ["999", 0]  # a link to a node that is not there
    image_count = bad_image_count_prompt(server, "load/bad")
    out = []
    for j in range(2):
        out += [(f"bad cameras_json {j}", bad_cams, False), (f"wrong image count {j}", image_count, False),
                (f"sequence outside input {j}", outside, False), (f"unknown node {j}", unknown, False),
                (f"broken link {j}", broken, False)]
    return out


def mixed_prompts(server: ComfyServer, round_index: int) -> list[tuple[str, dict, bool]]:
    """(label, prompt, valid) x 24, valid and invalid interleaved (seeded)."""
    out = valid_prompts(server, round_index) + invalid_prompts(server)
    assert len(out) == PROMPTS_PER_ROUND
    random.Random(round_index).shuffle(out)
    return out


def outcome(entry: dict) -> tuple[str, str | None, str]:
    """('success' | 'error', the exception type of an execution error, its message's start)."""
    status = entry["status"]
    errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
    if not errors:
        return status.get("status_str"), None, ""
    return status.get("status_str"), errors[0].get("exception_type"), errors[0].get("exception_message", "")[:160]


def run_round(server: ComfyServer, round_index: int) -> dict:
    queued, refused_at_prompt, wrong = [], 0, []
    how: dict[str, str] = {}  # invalid kind -> how it failed
    prompts = mixed_prompts(server, round_index)
    valid_total = sum(1 for _, _, valid in prompts if valid)
    for label, prompt, valid in prompts:
        try:
            queued.append((label, server.queue(prompt), valid))
        except PromptFailed as refusal:
            if valid:
                wrong.append(f"{label}: refused at /prompt")
            else:
                refused_at_prompt += 1
                how[label.rsplit(" ", 1)[0]] = f"refused at /prompt: {str(refusal)[:160]}"
    worst_latency, unanswered, polls = 0.0, 0, 0
    pending = {pid for _, pid, _ in queued}
    results = {}
    started = time.monotonic()
    deadline = started + 3600
    while pending and time.monotonic() < deadline:
        polls += 1
        t0 = time.monotonic()
        try:
            server.get_json("/queue", timeout=30)
            worst_latency = max(worst_latency, time.monotonic() - t0)
        except (urllib.error.URLError, OSError):
            unanswered += 1
        for pid in list(pending):
            entry = server.history(pid)
            if entry and entry.get("status", {}).get("completed") is not None:
                results[pid] = outcome(entry)
                pending.discard(pid)
        time.sleep(0.5)
    ok = failed_cleanly = 0
    error_types: dict[str, int] = {}
    for label, pid, valid in queued:
        status, error_type, message = results.get(pid, ("unfinished", None, ""))
        if error_type:
            error_types[error_type] = error_types.get(error_type, 0) + 1
        if not valid:
            how[label.rsplit(" ", 1)[0]] = f"{status} in execution: {error_type}: {message}"
        if valid and status == "success":
            ok += 1
        elif not valid and status == "error" and error_type in CLEAN_EXECUTION_ERRORS:
            failed_cleanly += 1
        else:
            wrong.append(f"{label}: {status} {error_type or ''}".strip())
    return {"round": round_index, "prompts": len(queued) + refused_at_prompt, "valid": valid_total,
            "valid_completed": ok, "invalid": PROMPTS_PER_ROUND - valid_total,
            "invalid_refused_at_prompt": refused_at_prompt, "invalid_failed_in_execution": failed_cleanly,
            "execution_error_types": error_types, "invalid_how": how, "wrong": wrong,
            "seconds": round(time.monotonic() - started, 1),
            "queue_polls": polls, "queue_unanswered": unanswered, "worst_queue_latency_s": round(worst_latency, 3),
            "rss_mib": round(rss_mib(server.proc.pid), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--rss-growth-mib", type=float, default=64.0,
                   help="bound: VmRSS after any round at most this much above the first round's")
    args = p.parse_args()
    server = start_tiny_server(Path(tempfile.mkdtemp(prefix="fuse4d-load-")))
    rows = []
    try:
        write_scene_ply(server.input_dir / "scene.ply")
        _grid_input(server)
        start_rss = rss_mib(server.proc.pid)
        for r in range(args.rounds):
            row = run_round(server, r)
            row["rss_at_start_mib"] = round(start_rss, 1)
            row["rss_growth_vs_first_mib"] = round(row["rss_mib"] - (rows[0] if rows else row)["rss_mib"], 1)
            row["rss_within_bound"] = row["rss_growth_vs_first_mib"] <= args.rss_growth_mib
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    summary = {"rounds": rows, "rss_growth_bound_mib": args.rss_growth_mib,
               "ok": all(not r["wrong"] and r["queue_unanswered"] == 0 and r["rss_within_bound"] for r in rows)}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if summary["ok"] else 1


def _grid_input(server: ComfyServer) -> None:
    """The 4 x 4 grid video the reconstruct_only workflow loads (as test_comfy_server makes it)."""
    import numpy as np
    from PIL import Image

    from conftest_comfy import small_scene
    from fuse4d.core.cameras import orbit_cameras
    from fuse4d.core.render import render

    rgb = render(small_scene(), orbit_cameras(4, 3.0, 15.0, 60.0, width=56, height=56)).rgb.clamp(0, 1).numpy()
    frames = [Image.fromarray((np.roll(rgb[v], t * 2, axis=1) * 255).astype(np.uint8)) for v in range(4)
              for t in range(4)]
    frames[0].save(server.input_dir / "grid_4x4.webp", save_all=True, append_images=frames[1:], lossless=True)


if __name__ == "__main__":
    raise SystemExit(main())
