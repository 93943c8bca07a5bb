# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d demo --out DIR`: the main job on the embedded default.

The bundled captured scene (core/scene.py) is rendered from V cameras on an arc (its frozen-time
views), animated by the 4D video model, reconstructed into 4D Gaussians by the feed-forward
reconstructor and written out:
  DIR/sequence/        the 4D splat sequence (manifest.json + one PLY per timestep, cameras included)
  DIR/preview.gif      fixed view (view 0 over time) beside frozen time (every view at the last time)
  DIR/contact_sheet.png  the generated V x T grid (rows: views, columns: time)
  DIR/heldout.png      held-out cameras at t = 0: ground truth above, the reconstruction below
  DIR/metrics.json     timings, motion, and PSNR of the reconstruction re-rendered at held-out cameras,
                       beside the same numbers for an untrained reconstructor; under "completion" the
                       scores of the completion part
Then the 4D completion on the bundled dynamic scene (core/jobs/completion_demo.py): view 0's video and the
frozen-time row in, the other views' videos and animated Gaussians out, generated beside ground truth
beside the static copy in DIR/completion/ (sequence/, preview.gif, contact_sheet.png).
Without weights the tiny models shipped in weights/ run on the CPU; `--video-model` / `--recon`
(+ `--vae`, `--text-encoder`, `--prompt`) take real ones (a GPU is picked automatically).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _tile(image, size: int):
    from PIL import Image

    from ..images import to_uint8

    return Image.fromarray(to_uint8(image)).resize((size, size), Image.NEAREST)


def write_preview(path: Path, grid, size: int, fps: float) -> Path:
    """Animated GIF: left the fixed-view video of view 0, right the frozen-time sweep at the last t."""
    from PIL import Image

    from ..io import atomic_output

    V, T = grid.shape[:2]
    frames = []
    for k in range(max(T, V)):
        canvas = Image.new("RGB", (2 * size + 6, size), (32, 32, 32))
        canvas.paste(_tile(grid[0, k % T], size), (0, 0))
        canvas.paste(_tile(grid[k % V, T - 1], size), (size + 6, 0))
        frames.append(canvas)
    with atomic_output(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(1000 / fps), loop=0)
    return path


def scene_views(views: int, heldout: int, arc: float, size: int):
    """The captured scene, its input cameras and held-out cameras (the rig the tiny models know),
    and renders from both: (gaussians, cameras, heldout_cameras, views [V,H,W,3], heldout [H,H,W,3],
    background)."""
    import torch

    from ..render import render
    from ..scene import sample_scene
    from ..synthetic import SyntheticConfig, rig_cameras

    rig = SyntheticConfig(views=views, heldout_views=heldout, arc_deg=arc, width=size, height=size)
    cams, held = rig_cameras(rig)
    scene = sample_scene(0)
    with torch.no_grad():
        images = render(scene, cams, background=rig.background).rgb.clamp(0, 1)
        truth = render(scene, held, background=rig.background).rgb.clamp(0, 1)
    return scene, cams, held, images, truth, rig.background


def heldout_scores(frames, held, truth, background) -> tuple[float, "object"]:
    """PSNR at t = 0 of the reconstruction rendered from held-out cameras; and those renders."""
    import torch

    from ..recon.losses import psnr
    from ..render import render

    with torch.no_grad():
        pred = render(frames[0], held, background=background).rgb.clamp(0, 1)
    return psnr(pred, truth), pred


def input_scores(frames, cams, grid, background) -> float:
    """Mean PSNR of the reconstruction rendered at the input cameras against the generated grid."""
    import torch

    from ..recon.losses import psnr
    from ..render import render

    with torch.no_grad():
        values = [psnr(render(g, cams, background=background).rgb, grid[:, t]) for t, g in enumerate(frames)]
    return sum(values) / len(values)


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from . import animate
    from ..images import contact_sheet, save_png
    from ..io import atomic_output, write_sequence
    from ..recon import VGGT4D

    if args.views < 1 or (args.frames or 1) < 1 or (args.steps or 1) < 1 or args.heldout < 1:
        raise ValueError("--views, --frames, --steps and --heldout must be at least 1")
    out = Path(args.out)
    start = time.perf_counter()
    print("loading models", flush=True)
    models = animate.load_models(args.video_model, args.recon, args.vae, args.text_encoder, args.device)
    prepared = None
    if not args.no_completion:  # a scene or model that does not fit fails here, before anything is written
        from .completion_demo import DYNAMIC_SCENE, prepare_completion

        prepared = prepare_completion(args.scene or DYNAMIC_SCENE, args.completion_model,
                                      next(models.recon.parameters()).device)
    out.mkdir(parents=True, exist_ok=True)
    size = models.video_size
    settings = animate.AnimateSettings(frames=args.frames, steps=args.steps, seed=args.seed,
                                       guidance=args.guidance, prompt=args.prompt)
    timings = {"load_s": time.perf_counter() - start}

    t0 = time.perf_counter()
    _, cams, held, views, truth, background = scene_views(args.views, args.heldout, args.arc, size)
    timings["render_views_s"] = time.perf_counter() - t0
    result = animate.animate_views(models, views, cams, settings)
    timings.update(result.timings)
    grid = result.grid

    t0 = time.perf_counter()
    fps = 8.0
    seq = animate.sequence_of(result, fps, {"producer": "fuse4d demo", **models.names})
    write_sequence(out / "sequence", seq)
    write_preview(out / "preview.gif", grid, args.preview_size, fps)
    V, T = grid.shape[:2]
    save_png(out / "contact_sheet.png", contact_sheet([grid[v, t] for v in range(V) for t in range(T)], columns=T))
    trained_psnr, pred = heldout_scores(result.frames, held, truth, background)
    save_png(out / "heldout.png", contact_sheet([*truth, *pred], columns=len(held)))
    timings["write_s"] = time.perf_counter() - t0

    # The same reconstruction with an untrained reconstructor: what the training buys.
    torch.manual_seed(0)
    untrained = VGGT4D(models.recon.cfg).to(next(models.recon.parameters()).device).eval()
    bare = animate.Models(models.video, models.video_config, models.codec, untrained)
    frames_u, cams_u, _ = animate.reconstruct(bare, grid, result.cameras)
    untrained_psnr, _ = heldout_scores(frames_u, held, truth, background)

    motion = float((grid[:, 1:] - grid[:, :-1]).abs().mean()) if T > 1 else 0.0
    completion = None
    if prepared is not None:
        from .completion_demo import run_completion

        print("4D completion on the dynamic scene", flush=True)
        completion = run_completion(out, prepared, models.recon, args.seed, args.preview_size // 2)
    timings["total_s"] = time.perf_counter() - start
    metrics = {
        "views": V, "frames": T, "steps": args.steps or models.sampling["steps"], "seed": args.seed, "size": size,
        "gaussians_per_timestep": len(result.frames[0]),
        "psnr_heldout_t0": trained_psnr,
        "psnr_heldout_t0_untrained_reconstructor": untrained_psnr,
        "psnr_input_views": input_scores(result.frames, result.cameras, grid, background),
        "psnr_input_views_untrained_reconstructor": input_scores(frames_u, cams_u, grid, background),
        "motion_mean_abs_frame_difference": motion,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "models": models.names,
        "device": str(next(models.video.parameters()).device),
    }
    if completion is not None:
        metrics["completion"] = completion
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    print(f"held-out PSNR at t=0: {trained_psnr:.2f} dB (untrained reconstructor {untrained_psnr:.2f} dB); "
          f"motion {motion:.4f}; {timings['total_s']:.1f} s")
    if completion is not None:
        g, st = completion["generated"], completion["static_copy"]
        print(f"completion (view 0's video + the t=0 row given): PSNR {g['psnr']:.2f} dB, moving pixels "
              f"{g['psnr_moving']:.2f} dB; static copy {st['psnr']:.2f} / {st['psnr_moving']:.2f} dB")
    print(f"wrote {out / 'sequence'}, preview.gif, contact_sheet.png, heldout.png, metrics.json"
          + (", completion/" if completion is not None else ""))
    return 0
