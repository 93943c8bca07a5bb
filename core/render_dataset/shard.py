# SPDX-License-Identifier: GPL-3.0-or-later
"""One shard of `fuse4d render-dataset`: this shard's assets rendered into sample folders of the 4D
dataset layout (docs/datasets.md), the way render farms work: independent shards, resumable (a sample
folder with cameras.json is finished and never redone), every sample renamed into place only when
complete, bad assets skipped with a one-line reason, and a per-shard report."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..io import atomic_output
from .launch import run_worker
from .plan import (RenderSettings, SamplePlan, asset_root, find_assets, gltf_facts, name_caption, plan_asset,
                   shard_of, sidecar_caption)

SETTINGS_FILE = "render_dataset.json"
FORMAT = 1


def report_name(index: int, count: int) -> str:
    return f"render_report_{index:03d}_of_{count:03d}.json"


def check_settings(out: Path, settings: RenderSettings) -> None:
    """A dataset folder holds one set of render settings: refuse to mix, record them on first use."""
    path = out / SETTINGS_FILE
    mine = {"format": FORMAT, "settings": settings.to_dict()}
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        old = theirs.get("settings", {})
        diff = [f"{k} {old.get(k)!r} (now {v!r})" for k, v in mine["settings"].items() if old.get(k) != v]
        if diff:
            raise ValueError(f"{out} was rendered with other settings: {', '.join(diff[:4])}; "
                             f"use them again or another --out")
        return
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(mine, indent=1), encoding="utf-8")


def precheck(path: Path) -> str:
    """A reason to skip the asset without starting Blender ('' if none is known)."""
    if path.suffix.lower() in (".glb", ".gltf"):
        try:
            facts = gltf_facts(path)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            return f"unreadable glTF: {exc}"
        if facts["missing_images"]:
            return f"missing textures: {', '.join(facts['missing_images'][:4])}"
        if facts["animations"] == 0:
            return "no animation (the glTF has no animations)"
    return ""


def _caption(root: Path, relpath: str, info: dict) -> str:
    caption = sidecar_caption(root, relpath)
    if not caption and Path(relpath).suffix.lower() in (".glb", ".gltf"):
        caption = gltf_facts(root / relpath)["caption"]
    return caption or info.get("caption") or name_caption(relpath, info.get("action", ""))


def _composite(path: Path, background) -> np.ndarray:
    """Blender's RGBA render over the background colour (straight alpha), as uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    a = rgba[..., 3:]
    rgb = rgba[..., :3] * a + np.asarray(background, np.float32) * (1.0 - a)
    return (np.clip(rgb, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


def finish_sample(tmp: Path, plan: SamplePlan, rendered: dict, settings: RenderSettings, caption: str,
                  info: dict) -> None:
    """Turn the worker's renders in `tmp` into a complete sample folder (still under its temp name)."""
    T = settings.frames
    shown = 1 if plan.kind == "frozen" else T
    for group, prefix, count in (("", "v", settings.views), ("heldout", "h", settings.heldout)):
        folder = tmp / group if group else tmp
        for v in range(count):
            for t in range(shown):
                path = folder / f"{prefix}{v:02d}_t{t:03d}.png"
                if not path.is_file():
                    raise FileNotFoundError(f"the render {path.name} is missing")
                image = _composite(path, plan.background)
                _write_png(path, image)
                for t2 in range(shown, T):  # a frozen sample: the same frame at every time
                    _write_png(folder / f"{prefix}{v:02d}_t{t2:03d}.png", image)
    if settings.depth:
        from safetensors.numpy import save_file

        cells = [[np.load(tmp / "depth" / f"v{v:02d}_t{min(t, shown - 1):03d}.npy", allow_pickle=False)
                  for t in range(T)] for v in range(settings.views)]
        save_file({"depth": np.ascontiguousarray(np.asarray(cells, np.float32))}, str(tmp / "depth.safetensors"),
                  metadata={"layout": "[views, frames, height, width]", "unit": "camera z, 0 = background"})
        shutil.rmtree(tmp / "depth")
    if not settings.heldout:
        shutil.rmtree(tmp / "heldout", ignore_errors=True)
    meta = {"views": plan.views, "heldout": plan.heldout, "fps": float(rendered["fps"]), "frames": T,
            "prompt": caption, "seed": plan.seed, "background": list(plan.background), "asset": plan.asset,
            "kind": plan.kind, "source_frames": rendered["frames"], "lighting": plan.lights,
            "ambient": plan.ambient, "normalisation": {"centre": info["centre"], "size": info["size"]},
            "engine": settings.engine, "render_samples": settings.samples}
    (tmp / "prompt.txt").write_text(caption, encoding="utf-8")
    (tmp / "cameras.json").write_text(json.dumps(meta), encoding="utf-8")  # last: its presence = done


def _done(out: Path, name: str) -> bool:
    return (out / name / "cameras.json").is_file()


def _clear_partials(out: Path, names: set[str]) -> None:
    """Temp folders a killed run of this shard left behind (other shards' are left alone)."""
    for p in out.glob(".*.partial"):
        stem = p.name[1:].rsplit(".", 2)[0]
        if stem in names and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def run_shard(assets: str | os.PathLike, out: str | os.PathLike, settings: RenderSettings,
              shard: tuple[int, int] = (0, 1), blender: str | None = None, threads: int = 0,
              asset_timeout: float | None = None, progress: bool = True, log=None) -> dict:
    """Render this shard's samples into `out`; returns (and writes) the shard report."""
    from tqdm.auto import tqdm

    settings.check()
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    index, count = shard
    root, out = asset_root(assets), Path(out)
    mine = [a for a in find_assets(assets) if shard_of(a, count) == index]
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    plans = {a: plan_asset(a, settings) for a in mine}
    _clear_partials(out, {p.name for ps in plans.values() for p in ps})
    total = sum(len(ps) for ps in plans.values())
    before = sum(_done(out, p.name) for ps in plans.values() for p in ps)
    report = {"shard": index, "of": count, "assets": len(mine), "samples_planned": total,
              "samples_done_before": before, "samples_written": 0, "skipped_assets": [], "failed_samples": [],
              "seconds": 0.0}
    start = time.time()
    bar = tqdm(total=total, initial=before, desc=f"render-dataset {index}/{count}", unit="sample",
               disable=not progress)
    job_settings = dict(settings.to_dict(), threads=int(threads))
    try:
        for relpath in mine:
            todo = [p for p in plans[relpath] if not _done(out, p.name)]
            if not todo:
                continue
            reason = precheck(root / relpath)
            result: dict = {}
            tmps: dict[str, Path] = {}
            seen = [0]

            def rendered(_name: str) -> None:
                seen[0] += 1
                bar.update(1)

            try:
                if not reason:
                    for p in todo:
                        if (out / p.name).exists():  # an unfinished folder from elsewhere
                            shutil.rmtree(out / p.name)
                        tmps[p.name] = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".partial", dir=out))
                    job = {"asset": str((root / relpath).resolve()), "settings": job_settings,
                           "samples": [dict(p.job(), out=str(tmps[p.name])) for p in todo]}
                    result = run_worker(job, blender, on_sample=rendered, timeout=asset_timeout)
                    reason = "" if result.get("ok") else result.get("reason") or "failed"
                if reason:
                    report["skipped_assets"].append({"asset": relpath, "reason": reason})
                    log(f"render-dataset: skipped {relpath}: {reason}")
                    bar.update(len(todo) - seen[0])
                    continue
                caption = _caption(root, relpath, result["info"])
                for p in todo:
                    try:
                        finish_sample(tmps[p.name], p, result["samples"][p.name], settings, caption, result["info"])
                        os.rename(tmps[p.name], out / p.name)
                        report["samples_written"] += 1
                    except (OSError, KeyError, ValueError) as exc:
                        report["failed_samples"].append({"sample": p.name, "asset": relpath, "reason": str(exc)})
                        log(f"render-dataset: sample {p.name} of {relpath} failed: {exc}")
            finally:
                for tmp in tmps.values():
                    shutil.rmtree(tmp, ignore_errors=True)
    finally:
        bar.close()
        report["seconds"] = round(time.time() - start, 2)
        with atomic_output(out / report_name(index, count)) as tmp:
            tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report
