# SPDX-License-Identifier: GPL-3.0-or-later
"""Load on a real ComfyUI server (not a test): a queue of mixed Fuse4D prompts, valid and invalid.

    .venv/bin/python bench/comfy_load.py [--rounds 2] [--json out.json]

Starts ComfyUI v0.3.75 as the tests do (tests/comfy_runtime.py installs it into .cache/ once), with
the tiny models, and per round queues 24 prompts at once: the three example workflows on tiny
models with varied seeds and sizes, and invalid ones (a wrong image count, a missing sequence, bad
cameras_json, an unknown node, a broken link). Measured: every valid prompt completes, every
invalid one fails with an error (at /prompt or in /history), the server answers /queue throughout
(worst latency), and its resident memory after each round (VmRSS) against the first round's."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from comfy_runtime import ComfyServer, PromptFailed  # noqa: E402
from conftest_comfy import load_workflow, start_tiny_server, swap_tiny, write_scene_ply  # noqa: E402


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


def mixed_prompts(server: ComfyServer, round_index: int) -> list[tuple[str, dict, bool]]:
    """(label, prompt, valid) x 24."""
    out = []
    for i in range(6):
        seed = 1000 * round_index + i
        out.append((f"text_to_4d seed {seed}", with_seed(swap_tiny(load_workflow("text_to_4d_wan21_t2v_1.3b.json"),
                                                                  server, steps=1), seed), True))
        out.append((f"animate_scene seed {seed}", with_seed(swap_tiny(load_workflow("animate_scene_wan22_ti2v_5b.json"),
                                                                     server, steps=1), seed), True))
        out.append((f"reconstruct_only {i}", with_seed(swap_tiny(load_workflow("reconstruct_only.json"), server), seed),
                    True))
    bad_cams = swap_tiny(load_workflow("animate_scene_wan22_ti2v_5b.json"), server, steps=1)
    for node in bad_cams.values():
        if node["class_type"] == "Fuse4DRenderFrozenTimeViews":
            node["inputs"]["cameras_json"] = json.dumps([{"viewmat": [[0] * 4] * 4, "K": [[0] * 3] * 3,
                                                          "width": 8, "height": 8}])
    missing = {"1": {"class_type": "Fuse4DLoad4DSplats", "inputs": {"sequence": "../../etc"}},
               "2": {"class_type": "Fuse4DSave4DSplats", "inputs": {"gaussians": ["1", 0], "filename_prefix": "x",
                                                                   "format": "ply sequence", "fps": 0.0}}}
    unknown = {"1": {"class_type": "Fuse4DNoSuchNode", "inputs": {}}}
    broken = swap_tiny(load_workflow("reconstruct_only.json"), server)  # one link to a node that is not there
    for node in broken.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2:
                node["inputs"][key] = ["999", 0]
                break
    for j in range(2):
        out += [(f"bad cameras_json {j}", bad_cams, False), (f"sequence outside input {j}", missing, False),
                (f"unknown node {j}", unknown, False)]
    while len(out) < 24:
        out.append(("broken link", broken, False))
    return out


def run_round(server: ComfyServer, round_index: int) -> dict:
    queued, refused_at_prompt = [], 0
    for label, prompt, valid in mixed_prompts(server, round_index):
        try:
            queued.append((label, server.queue(prompt), valid))
        except PromptFailed:
            if valid:
                raise
            refused_at_prompt += 1
    worst_latency, pending = 0.0, {pid for _, pid, _ in queued}
    deadline = time.monotonic() + 3600
    results = {}
    while pending and time.monotonic() < deadline:
        started = time.monotonic()
        server.get_json("/queue", timeout=30)
        worst_latency = max(worst_latency, time.monotonic() - started)
        for pid in list(pending):
            entry = server.history(pid)
            if entry and entry.get("status", {}).get("completed") is not None:
                results[pid] = entry["status"].get("status_str")
                pending.discard(pid)
        time.sleep(0.5)
    ok = sum(1 for _, pid, valid in queued if valid and results.get(pid) == "success")
    failed_cleanly = sum(1 for _, pid, valid in queued if not valid and results.get(pid) == "error")
    wrong = [label for label, pid, valid in queued if results.get(pid) != ("success" if valid else "error")]
    valid_total = sum(1 for _, _, valid in queued if valid)
    return {"round": round_index, "prompts": len(queued) + refused_at_prompt, "valid": valid_total,
            "valid_completed": ok, "invalid_refused_at_prompt": refused_at_prompt,
            "invalid_failed_in_execution": failed_cleanly, "wrong": wrong,
            "worst_queue_latency_s": round(worst_latency, 3), "rss_mib": round(rss_mib(server.proc.pid), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json")
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
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(not r["wrong"] for r in rows) else 1


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
