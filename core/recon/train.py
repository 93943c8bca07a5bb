# SPDX-License-Identifier: GPL-3.0-or-later
"""Trainer of the feed-forward 4D reconstructor (PAPER.md §2.5).

Static stage: single-timestep samples, the Gaussian head trained on a frozen backbone. Dynamic stage:
V views x T timesteps, temporal layers + Gaussian head trained. The loss is the MSE of renders of
the predicted per-timestep Gaussians (our differentiable rasterizer on the CPU, gsplat on CUDA) at
the input cameras and at held-out cameras, all expressed in the first input camera's frame, plus
lambda * LPIPS when LPIPS weights are already on this machine. AdamW; safetensors checkpoints with the
optimizer state; resume from the last checkpoint; DDP under torchrun (WORLD_SIZE > 1).

The model is VGGT4D (model_api builds it from the reconstructor presets 'tiny' / 'full'). A tiny
model has no pretrained backbone to freeze, so presets may train the backbone in the static stage
(`static_trainable="all"`), helped by camera and depth terms the synthetic data gives for free
(`lambda_camera`, `lambda_depth`) and started from depth / field-of-view priors; the paper's recipe
is `static_trainable="head"` from VGGT-1B weights (`init_weights`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..cameras import Cameras, to_vggt_pose_encoding
from ..synthetic import SyntheticConfig
from .losses import LPIPSLoss, lpips_term, psnr, render_views, resize_targets
from .train_ckpt import list_checkpoints, load_checkpoint, save_checkpoint, unflatten_optimizer
from .train_data import EVAL_SEED_BASE, Sample, make_source, shard

log = logging.getLogger("fuse4d.recon.train")


@dataclass
class ReconTrainConfig:
    # model ----------------------------------------------------------------------------------
    model: str = "tiny"                       # reconstructor preset: tiny / full (config.py)
    model_overrides: dict = field(default_factory=dict)   # VGGTConfig fields
    camera_token_replacement: bool = True     # ablation switches
    temporal_attention: bool = True
    init_weights: str = ""                    # safetensors to start from (e.g. converted VGGT-1B)
    prior_depth: float = 3.2                  # from scratch only: initial depth and FoV (radians)
    prior_fov: float = 0.785
    # data -----------------------------------------------------------------------------------
    data: str = "synthetic"                   # or a dataset folder in the 4D layout
    synth: SyntheticConfig = field(default_factory=SyntheticConfig)
    train_scenes: int = 64                    # training seeds seed .. seed + train_scenes - 1
    eval_scenes: int = 4                      # held-out seeds EVAL_SEED_BASE + i
    cache_scenes: bool = True                 # keep made synthetic scenes on disk (resume, sibling runs)
    scene_cache: str = ""                     # their folder ("" = <out>/scenes)
    seed: int = 0
    # schedule -------------------------------------------------------------------------------
    static_steps: int = 100
    dynamic_steps: int = 100
    static_trainable: str = "head"            # "head" (paper: backbone frozen) or "all"
    dynamic_trainable: str = "head"           # "head" (paper: + temporal layers) or "all" (+ backbone)
    dynamic_frames: int = 4                   # timesteps per dynamic sample (paper: 4 views x 4)
    batch: int = 1                            # samples per step (gradient accumulation)
    lr_static: float = 2e-4
    lr_dynamic: float = 2e-5
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    warmup: int = 10
    # loss -----------------------------------------------------------------------------------
    loss_timesteps: int = 2                   # timesteps rendered per dynamic sample
    loss_input_views: int = 2                 # input cameras rendered per timestep (0 = all)
    loss_heldout_views: int = 1               # held-out cameras rendered per timestep (0 = all)
    render_scale: float = 1.0                 # render the loss at this fraction of the resolution
    lambda_lpips: float = 0.05
    lambda_camera: float = 0.0
    lambda_depth: float = 0.0
    # bookkeeping ----------------------------------------------------------------------------
    out: str = "runs/recon"
    ckpt_every: int = 50
    keep_checkpoints: int = 2
    device: str = "auto"

    @property
    def total_steps(self) -> int:
        return self.static_steps + self.dynamic_steps

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ReconTrainConfig":
        data = dict(data)
        data["synth"] = SyntheticConfig(**{**data.get("synth", {}),
                                           "background": tuple(data.get("synth", {}).get("background", (0.55, 0.65, 0.8)))})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Synthetic scenes at sizes that suit patch 14 (4 x 4 patches for the tiny model).
TINY_SYNTH = SyntheticConfig(width=56, height=56, frames=4)
# The shipped CPU model: the tiny preset at twice its width (~2M parameters, 8 MB in fp32); learning
# geometry from scratch is what limits it, and at 4 x 4 tokens per frame width is nearly free.
TINY_MODEL = {"dino_dim": 64, "embed_dim": 64, "dino_heads": 4, "num_heads": 4, "camera_heads": 4,
              "dpt_features": 32, "dpt_out_channels": (16, 32, 64, 64)}


def preset(name: str, **overrides) -> ReconTrainConfig:
    """Named training configurations: 'tiny' (the shipped CPU model, ~25 min on one thread),
    'ablation' (one variant of studies/recon_ablation.py), 'smoke' (tests), 'paper' (PAPER.md §2.5)."""
    if name == "tiny":
        # ~25 CPU minutes on one thread: geometry (camera + depth terms) and the head learn together,
        # and from scratch the backbone keeps learning in the dynamic stage too
        cfg = ReconTrainConfig(model="tiny", model_overrides=dict(TINY_MODEL), static_steps=350, dynamic_steps=150,
                               static_trainable="all", dynamic_trainable="all", lr_static=2e-3, lr_dynamic=5e-4,
                               train_scenes=40, eval_scenes=4, synth=TINY_SYNTH, dynamic_frames=4,
                               lambda_camera=1.0, lambda_depth=0.5, loss_input_views=2, loss_heldout_views=1,
                               render_scale=1.0, ckpt_every=25, out="runs/recon_tiny")
    elif name == "ablation":
        # the paper's protocol at a CPU budget: a shared static stage, then per variant a dynamic stage
        # with the backbone frozen (studies/recon_ablation.py)
        cfg = ReconTrainConfig(model="tiny", model_overrides=dict(TINY_MODEL), static_steps=150, dynamic_steps=150,
                               static_trainable="all", dynamic_trainable="head", lr_static=2e-3, lr_dynamic=1e-3,
                               train_scenes=32, eval_scenes=6, synth=TINY_SYNTH, dynamic_frames=4,
                               lambda_camera=1.0, lambda_depth=0.5, loss_input_views=2, loss_heldout_views=1,
                               render_scale=1.0, ckpt_every=25, out="runs/recon_ablation")
    elif name == "smoke":
        cfg = ReconTrainConfig(model="tiny", static_steps=3, dynamic_steps=3, static_trainable="all",
                               lr_static=2e-3, lr_dynamic=1e-3, train_scenes=2, eval_scenes=1, warmup=0,
                               synth=SyntheticConfig(views=2, frames=2, heldout_views=1, width=28, height=28,
                                                     gaussians_per_object=150, ground_gaussians=400),
                               dynamic_frames=2, loss_timesteps=1, render_scale=1.0, lambda_camera=1.0,
                               lambda_depth=0.5, ckpt_every=3)
    elif name == "paper":
        cfg = ReconTrainConfig(model="full", static_steps=20000, dynamic_steps=15000, static_trainable="head",
                               lr_static=2e-4, lr_dynamic=2e-5, batch=14, train_scenes=100000,
                               synth=SyntheticConfig(width=518, height=350, frames=8), dynamic_frames=4,
                               loss_input_views=0, loss_heldout_views=0, ckpt_every=1000, out="runs/recon")
    else:
        raise ValueError(f"unknown training config {name!r} (choose from tiny, ablation, smoke, paper)")
    return dataclasses.replace(cfg, **overrides)


# --- model plumbing (through model_api) ---------------------------------------------------------

def build_model(cfg: ReconTrainConfig) -> torch.nn.Module:
    """The VGGT4D to train, as it is before step 0 (the same for a given config and seed)."""
    from . import model_api

    torch.manual_seed(cfg.seed)
    model = model_api.build(cfg.model, cfg.camera_token_replacement, cfg.temporal_attention, cfg.model_overrides)
    if cfg.init_weights:
        model_api.load_weights(model, cfg.init_weights)
    else:
        model_api.init_from_scratch(model, cfg.prior_depth, cfg.prior_fov)
    return model


def parameter_groups(model: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    from . import model_api

    return model_api.parameter_groups(model)


def trainable_parameters(model: torch.nn.Module, stage: str, static_trainable: str,
                         dynamic_trainable: str = "head") -> list[torch.nn.Parameter]:
    """Stage 'static': the Gaussian head (or everything but the temporal layers, for models without
    a pretrained backbone); stage 'dynamic': temporal layers + Gaussian head (+ the backbone when
    `dynamic_trainable` is "all": a from-scratch model keeps learning geometry on dynamic samples)."""
    for value in (static_trainable, dynamic_trainable):
        if value not in ("head", "all"):
            raise ValueError(f"trainable groups must be 'head' or 'all', got {value!r}")
    groups = parameter_groups(model)
    if stage == "static":
        names = ("head",) if static_trainable == "head" else ("head", "backbone")
    else:
        names = ("head", "temporal") if dynamic_trainable == "head" else ("head", "temporal", "backbone")
    chosen = {id(p) for g in names for _, p in groups.get(g, [])}
    params = []
    for _, p in model.named_parameters():  # model order: the optimizer's indices stay stable
        p.requires_grad_(id(p) in chosen)
        if id(p) in chosen:
            params.append(p)
    if not params:
        raise ValueError(f"stage {stage!r}: the model has no trainable parameters in groups {names}")
    return params


# --- distributed -------------------------------------------------------------------------------

@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world <= 1:
        return DistInfo(0, 1, torch.device(device))
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), dev)


# --- loss --------------------------------------------------------------------------------------

def sample_plan(cfg: ReconTrainConfig, step: int, rank: int, seeds: list[int], stage: str, frames: int,
                views: int, heldout: int) -> dict:
    """Which scene, timesteps and cameras step `step` uses: a pure function of (seed, step, rank),
    so a resumed run sees exactly the samples it would have seen."""
    rng = np.random.default_rng([cfg.seed, step, rank])
    length = 1 if stage == "static" else min(cfg.dynamic_frames, frames)
    plan = {"scenes": [int(seeds[rng.integers(len(seeds))]) for _ in range(cfg.batch)], "windows": [],
            "render_t": [], "views": [], "heldout": []}
    for _ in range(cfg.batch):
        plan["windows"].append(int(rng.integers(0, frames - length + 1)))
        k = length if stage == "static" else min(cfg.loss_timesteps or length, length)
        plan["render_t"].append(sorted(rng.choice(length, size=k, replace=False).tolist()))
        nv = views if cfg.loss_input_views <= 0 else min(cfg.loss_input_views, views)
        nh = heldout if cfg.loss_heldout_views <= 0 else min(cfg.loss_heldout_views, heldout)
        plan["views"].append(sorted(rng.choice(views, size=nv, replace=False).tolist()))
        plan["heldout"].append(sorted(rng.choice(heldout, size=nh, replace=False).tolist()))
    plan["length"] = length
    return plan


def sample_loss(model, sample: Sample, render_t: list[int], views: list[int], heldout: list[int],
                cfg: ReconTrainConfig, lpips_model=None) -> tuple[torch.Tensor, dict]:
    """Render loss (+ optional camera/depth terms) of one sample window."""
    from . import model_api

    device = next(model.parameters()).device
    images = sample.images.to(device)
    pred = model_api.predict(model, images)
    cams = Cameras.cat([sample.cameras[views], sample.heldout[heldout]]).to(device)
    total = torch.zeros((), device=device)
    stats = {"mse": 0.0}
    for t in render_t:
        target = torch.cat([images[views, t], sample.heldout_images[heldout, t].to(device)])
        target = resize_targets(target, cfg.render_scale)
        rgb = render_views(pred.gaussians[t], cams, sample.background, cfg.render_scale)
        mse = torch.mean((rgb - target) ** 2)
        total = total + mse / len(render_t)
        stats["mse"] += float(mse.detach()) / len(render_t)
        if lpips_model is not None and cfg.lambda_lpips > 0:
            total = total + cfg.lambda_lpips * lpips_term(lpips_model, rgb, target) / len(render_t)
    if cfg.lambda_camera > 0 and pred.pose_encoding is not None:
        gt = to_vggt_pose_encoding(sample.cameras.to(device))          # [V, 9]
        cam_loss = (pred.pose_encoding - gt[:, None]).abs().mean()     # pred [V, T, 9]
        total = total + cfg.lambda_camera * cam_loss
        stats["camera"] = float(cam_loss.detach())
    if cfg.lambda_depth > 0 and pred.depth is not None and sample.depth is not None:
        gt_depth = sample.depth.to(device)
        valid = gt_depth > 0
        depth_loss = ((pred.depth - gt_depth).abs() * valid).sum() / valid.sum().clamp_min(1)
        total = total + cfg.lambda_depth * depth_loss
        stats["depth"] = float(depth_loss.detach())
    return total, stats


# --- training ----------------------------------------------------------------------------------

def _lr_at(cfg: ReconTrainConfig, stage: str, local_step: int, stage_steps: int) -> float:
    """Linear warm-up then cosine decay to 10 %, per stage."""
    base = cfg.lr_static if stage == "static" else cfg.lr_dynamic
    if cfg.warmup and local_step < cfg.warmup:
        return base * (local_step + 1) / cfg.warmup
    progress = (local_step - cfg.warmup) / max(stage_steps - cfg.warmup, 1)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _make_optimizer(params, cfg: ReconTrainConfig, stage: str) -> torch.optim.Optimizer:
    lr = cfg.lr_static if stage == "static" else cfg.lr_dynamic
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def train(cfg: ReconTrainConfig, resume: bool = True, progress: bool = True, max_steps: int | None = None) -> dict:
    """Run (or continue) training; returns {'step', 'losses' (every step so far, across resumes),
    'seconds' / 'cpu_seconds' (training wall / process CPU time so far, across resumes), 'checkpoint': path,
    'model'}. On a shared machine CPU time is the honest measure of a one-thread run.
    `max_steps` stops early after that global step (for tests and time-boxed runs)."""
    from tqdm import tqdm

    dist_info = init_distributed(cfg.device)
    model = build_model(cfg).to(dist_info.device)
    out = Path(cfg.out)
    start, meta, optim_tensors = 0, {}, {}
    existing = list_checkpoints(out) if resume else []
    if existing:
        model_sd, optim_tensors, meta = load_checkpoint(existing[-1])
        model.load_state_dict(model_sd)
        start = int(meta["step"])
        if dist_info.main:
            log.info("resuming from %s (step %d)", existing[-1], start)
    losses: list[float] = list(meta.get("losses", []))[:start]
    seconds_before = float(meta.get("seconds", 0.0))
    cpu_before = float(meta.get("cpu_seconds", 0.0))
    clock, cpu_clock = time.perf_counter(), time.process_time()

    source = make_source(cfg.data, cfg.synth, scene_cache(cfg), depth=cfg.lambda_depth > 0)
    all_seeds = list(range(cfg.seed, cfg.seed + cfg.train_scenes)) if cfg.data == "synthetic" \
        else list(range(len(source)))
    seeds = shard(all_seeds, dist_info.rank, dist_info.world)
    lpips_model = LPIPSLoss.available(dist_info.device) if cfg.lambda_lpips > 0 else None
    if lpips_model is None and dist_info.main:
        print("LPIPS weights not available locally: training with the MSE render loss only")

    stages = [("static", 0, cfg.static_steps), ("dynamic", cfg.static_steps, cfg.total_steps)]
    end = cfg.total_steps if max_steps is None else min(cfg.total_steps, max_steps)
    bar = tqdm(total=end, initial=min(start, end), desc="train-recon", unit="step",
               disable=not (progress and dist_info.main))
    last_ckpt = existing[-1] if existing else None
    for stage, first, stop in stages:
        if start >= stop or first >= end:
            continue
        params = trainable_parameters(model, stage, cfg.static_trainable, cfg.dynamic_trainable)
        net = model
        if dist_info.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None,
                find_unused_parameters=True)
        optimizer = _make_optimizer(params, cfg, stage)
        if optim_tensors and meta.get("stage") == stage and meta.get("optimizer"):
            optimizer.load_state_dict(unflatten_optimizer(optim_tensors, meta["optimizer"]))
        model.train()
        frames, views, heldout = _sample_dims(source, cfg, model)
        for step in range(max(start, first), min(stop, end)):
            plan = sample_plan(cfg, step, dist_info.rank, seeds, stage, frames, views, heldout)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, stage, step - first, stop - first)
            optimizer.zero_grad(set_to_none=True)
            step_stats = {}
            for b in range(cfg.batch):
                sample = source.get(plan["scenes"][b]).window(plan["windows"][b], plan["length"])
                loss, stats = sample_loss(net, sample, plan["render_t"][b], plan["views"][b], plan["heldout"][b],
                                          cfg, lpips_model)
                (loss / cfg.batch).backward()
                for k, v in stats.items():
                    step_stats[k] = step_stats.get(k, 0.0) + v / cfg.batch
                step_stats["loss"] = step_stats.get("loss", 0.0) + float(loss.detach()) / cfg.batch
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            losses.append(step_stats["loss"])
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{step_stats['loss']:.4f}", mse=f"{step_stats['mse']:.4f}")
            done = step + 1
            if dist_info.main and (done % cfg.ckpt_every == 0 or done == stop or done == end):
                last_ckpt = save_checkpoint(out, done, model, optimizer,
                                            {"stage": stage, "config": cfg.to_json(), "loss": step_stats["loss"],
                                             "losses": losses, "seconds": seconds_before + time.perf_counter() - clock,
                                             "cpu_seconds": cpu_before + time.process_time() - cpu_clock,
                                             "time": time.time()}, keep=cfg.keep_checkpoints)
        start = max(start, min(stop, end))
    bar.close()
    return {"step": max(start, 0), "losses": losses, "seconds": seconds_before + time.perf_counter() - clock,
            "cpu_seconds": cpu_before + time.process_time() - cpu_clock,
            "checkpoint": str(last_ckpt) if last_ckpt else None, "model": model}


def scene_cache(cfg: ReconTrainConfig) -> Path | None:
    if not cfg.cache_scenes or cfg.data != "synthetic":
        return None
    return Path(cfg.scene_cache) if cfg.scene_cache else Path(cfg.out) / "scenes"


def _sample_dims(source, cfg: ReconTrainConfig, model: torch.nn.Module) -> tuple[int, int, int]:
    """(timesteps, views, held-out views) of the data; its images must suit the model's patch size."""
    from .model_api import unwrap

    probe = source.get(cfg.seed if cfg.data == "synthetic" else 0)
    H, W = probe.images.shape[2:4]
    patch = unwrap(model).cfg.patch_size
    if H % patch or W % patch:
        raise ValueError(f"training images are {W}x{H}: both sides must be multiples of the patch size {patch} "
                         f"(e.g. synthetic width/height 56)")
    return probe.images.shape[1], probe.images.shape[0], probe.heldout_images.shape[0]


# --- evaluation --------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: torch.nn.Module, synth: SyntheticConfig = TINY_SYNTH, scenes: int = 4,
             seed_base: int = EVAL_SEED_BASE, frames: int | None = None, progress: bool = False,
             analytic: bool = False, source=None) -> dict:
    """PSNR of the reconstruction re-rendered at the held-out cameras (and at the input cameras) of
    held-out synthetic scenes (seeds seed_base + i, disjoint from training seeds), all timesteps.
    `analytic` ignores the Gaussian head (Gaussians from depth and pixels). Pass `source` (a
    SyntheticSource of `synth`) to reuse its scenes across calls."""
    from tqdm import tqdm

    from . import model_api
    from .train_data import SyntheticSource

    source = source or SyntheticSource(synth, cache_size=1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    held, inp = [], []
    for i in tqdm(range(scenes), desc="evaluate", unit="scene", disable=not progress):
        sample = source.get(seed_base + i)
        if frames is not None:
            sample = sample.window(0, frames)
        pred = model_api.predict(model, sample.images.to(device), analytic=analytic)
        for t in range(sample.images.shape[1]):
            g = pred.gaussians[t]
            held.append(psnr(render_views(g, sample.heldout.to(device), sample.background).cpu(),
                             sample.heldout_images[:, t]))
            inp.append(psnr(render_views(g, sample.cameras.to(device), sample.background).cpu(),
                            sample.images[:, t]))
    model.train(was_training)
    return {"psnr_heldout": float(np.mean(held)), "psnr_input": float(np.mean(inp)), "scenes": scenes,
            "seed_base": seed_base, "timesteps": len(held) // max(scenes, 1),
            "psnr_heldout_per_sample": [float(x) for x in held]}   # scene-major, then timestep
