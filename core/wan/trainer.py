# SPDX-License-Identifier: GPL-3.0-or-later
"""Fine-tune a Wan transformer into a fused 4D model (or train a tiny one from scratch on the CPU).

Rectified-flow loss on V x T grids: x_s = (1 - s) x0 + s noise, target noise - x0, s logit-normal or
uniform. Data: a dataset folder (`data`), or synthetic 4D scenes rendered once per seed and cached
(`source="scenes"`, the tiny model's), or instant blob grids (`source="blobs"`, smoke tests).
Conditioned cells (a random choice of frozen-time row / fixed-view column / both / none) hold the
clean latent and are left out of the loss, exactly as the sampler conditions. Only the
self-attention projections train by default (the paper), or LoRA adapters on them, or everything
(`full`, for the tiny from-scratch model). Multi-GPU through torchrun: WORLD_SIZE > 1 initialises
torch.distributed from the environment and wraps the model in DDP or FSDP2 (`fully_shard`), one GPU
per LOCAL_RANK. On GPUs that have it the forward runs under bf16 autocast (fp32 master weights; FSDP2
gets the matching mixed-precision policy) with gradient checkpointing per transformer block; the CPU
keeps fp32 without checkpointing unless asked. Noise is drawn on the training device; the text
encoder is loaded once and prompts are encoded once each.

Output folder:
  checkpoints/step_NNNNNNN/{trainable.safetensors, optimizer.safetensors, [ema.safetensors,] state.json}
  model/{config.json, model.safetensors}   the final model (LoRA merged), loadable by load_video_model
  log.jsonl                                 one line per logged step
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..extras import require
from .attention_processor import SYNC_NAME, add_sync_layers, patch_wan_transformer
from .codecs import PixelCodec, WanVAECodec
from .conditioning import (cell_mask, concat_input, install_patch_conditioning, ray_channels, reference_term,
                           replace_clean, set_reference, token_timesteps)
from .data import BlobGrids, FolderDataset, MotionGrids, SceneGrids, default_cache_dir
from .ema import EMA
from .flow import add_noise, predicted_x0, sample_noise_levels
from .keys import CONFIGS, WanConfig, build_wan_transformer, load_wan_transformer
from .lora import add_lora, freeze_all_but_self_attention
from .model_io import VideoModelConfig, save_video_model

# Conditioning modes drawn per step: (frozen-time row, fixed-view column).
COND_MODES = ((False, False), (True, False), (False, True), (True, True))


@dataclass
class TrainVideoConfig:
    out: str = "runs/video"
    model: VideoModelConfig = field(default_factory=lambda: VideoModelConfig(wan=CONFIGS["tiny"]))
    init: str | None = None            # base Wan weights (either key layout); None = random init
    data: str | None = None            # dataset folder; None = synthetic grids of `source`
    source: str = "scenes"             # without data: "motion" (ray-cast, real motion) | "scenes" | "blobs"
    scenes: int = 160                  # synthetic training scenes (seeds 0 .. scenes-1)
    data_cache: str | None = None      # rendered-scene cache folder; None = ~/.cache/fuse4d/video_scenes
    reverse_views: float = 0.5         # probability of reversing the view order (the paper's augmentation)
    motion_scene: dict = field(default_factory=dict)  # source "motion": MotionSceneConfig overrides (e.g. arc_deg)
    mirror: float = 0.5                # probability of mirroring the world left-right
    vae: str | None = None             # diffusers AutoencoderKLWan folder (codec "wan-vae")
    text_encoder: str | None = None    # UMT5 folder to encode prompt.txt (else zeros unless text_embeds given)
    views: int = 3
    frames: int = 4                    # pixel frames per view
    size: int = 16                     # square synthetic frames
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int = 50
    lr_schedule: str = "constant"      # after warm-up: "constant" | "cosine" (down to lr * lr_min)
    lr_min: float = 0.1
    ema: float = 0.0                   # EMA decay of the exported weights (0 = export the last iterate)
    grad_clip: float = 1.0
    noise: str = "logit-normal"        # training noise levels: "logit-normal" | "uniform" | "shifted" (flow.py)
    pure_noise: float = 0.0            # probability of noise level exactly 1 (the first sampling step)
    loss_weight: str = "velocity"      # reference-residual models: "velocity" (x0 error / s) | "x0" (x0 error)
    motion_weight: float = 0.0         # extra loss weight where the target differs from its view's t = 0 frame
    loss_pyramid: int = 0              # + the loss on this many 2x average-pooled copies (coarse errors: large motions)
    train: str = "attn"                # "attn" | "lora" | "full"
    lora_rank: int = 16
    lora_alpha: float | None = None
    p_uncond: float = 0.1              # text dropout, for classifier-free guidance
    cond_probs: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # none, row, column, both
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = True
    dist: str = "ddp"                  # "ddp" | "fsdp2" when WORLD_SIZE > 1
    backend: str = "auto"              # fused attention backend
    seed: int = 0
    device: str = "auto"               # "auto" | "cpu" | "cuda" (cuda:LOCAL_RANK) | "cuda:N"
    precision: str = "auto"            # "auto" (bf16 on Ampere+ GPUs, else fp32) | "bf16" (autocast) | "fp32"
    checkpointing: bool | None = None  # gradient checkpointing per block; None = on CUDA only
    threads: int | None = None         # CPU threads for torch (tiny models run fastest on 1)
    progress: bool = True


# 48 latent channels (48x48 pixels folded 4x4); inputs 2 * 48 + 1 with channel conditioning
TINY_WAN = WanConfig(dim=128, num_layers=4, num_heads=4, ffn_dim=384, in_dim=97, out_dim=48, text_dim=16,
                     freq_dim=32)


def tiny_config(out: str = "runs/video_tiny", steps: int = 3200) -> TrainVideoConfig:
    """The shipped tiny 4D model: a Wan-architecture transformer (~1.1M parameters, fused attention)
    trained from scratch on one CPU thread on synthetic 4D scenes, 4 views x 8 frames at 48x48 in pixel
    space (pixels folded 4x4 into 48 channels; Wan's 2x2 patches make 6x6 tokens per frame). Mostly
    frozen-time-row conditioning: the demo gives the views at t=0 and asks for the motion."""
    model = VideoModelConfig(wan=TINY_WAN, t_max=16, codec="pixel", pixel_factor=4, concat_reference=True,
                             prediction="reference-residual", per_token_timestep=True, flow_shift=2.0)
    return TrainVideoConfig(out=out, model=model, source="scenes", scenes=160, views=4, frames=8, size=48,
                            steps=steps, lr=1e-3, warmup=100, lr_schedule="cosine", ema=0.999, train="full",
                            p_uncond=0.0, cond_probs=(0.1, 0.6, 0.1, 0.2), save_every=200, log_every=20,
                            threads=1)


# 48 latent channels (64x64 pixels folded 4x4 into 16x16), Wan's 2x2 patches: 8x8 tokens per frame;
# inputs 2 * 48 + 1, + 2 position channels, + 48 channels of the fixed-view video's change, + 2 grid
# channels, + 16 ray channels (4 bands)
MOTION_WAN = WanConfig(dim=128, num_layers=4, num_heads=4, ffn_dim=384, in_dim=165, out_dim=48, text_dim=16,
                       freq_dim=32)


def motion_config(out: str = "runs/video_motion", steps: int = 4000, attention: str = "fused") -> TrainVideoConfig:
    """The shipped 4D completion model (weights/video_motion): the tiny Wan architecture at 64x64, 4 views
    x 8 frames, trained from scratch on ray-cast scenes with real motion (core/motion_scenes.py), mostly
    on completion (frozen-time row + view 0's video given). Constant learning rate after warm-up, so a
    run's checkpoint at step N is the equal-budget point of the architecture study. Mirroring keeps the
    rig's geometry; view reversal would not (view 0 would sit at the other end of the arc), so it is off.
    Inputs beyond the noisy latents (position, fixed-view change, grid and ray channels), the arcs rig,
    the x0-weighted loss and the noise levels the sampler visits: docs/video.md, "How we got here"."""
    model = VideoModelConfig(wan=MOTION_WAN, t_max=16, codec="pixel", pixel_factor=4, concat_reference=True,
                             position_channels=True, view_change_channels=True, grid_channels=True, ray_bands=4,
                             prediction="reference-residual", per_token_timestep=True, flow_shift=2.0,
                             attention=attention)
    return TrainVideoConfig(out=out, model=model, source="motion", scenes=3000, views=4, frames=8, size=64,
                            motion_scene={"rig": "arcs"}, steps=steps, lr=1e-3, warmup=100, lr_schedule="constant",
                            ema=0.999, train="full", p_uncond=0.0, cond_probs=(0.05, 0.35, 0.05, 0.55),
                            save_every=250, log_every=25, keep_checkpoints=2, threads=1, reverse_views=0.0,
                            mirror=0.5, loss_weight="x0", noise="shifted", pure_noise=0.3)


def smoke_config(out: str = "runs/video-smoke", steps: int = 150) -> TrainVideoConfig:
    """~0.2M parameters on instant blob grids (3 views x 4 frames at 16x16): for tests, seconds."""
    wan = WanConfig(dim=64, num_layers=2, num_heads=4, ffn_dim=128, in_dim=12, out_dim=12, text_dim=16, freq_dim=32)
    model = VideoModelConfig(wan=wan, t_max=8, codec="pixel", pixel_factor=2, patch_embed_conditioning=True,
                             flow_shift=3.0)
    return TrainVideoConfig(out=out, model=model, source="blobs", views=3, frames=4, size=16, steps=steps, lr=2e-3,
                            warmup=20, train="full", p_uncond=0.1, save_every=max(steps, 1), log_every=10,
                            threads=1)


# ---------------------------------------------------------------- distributed

def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def training_device(name: str, local_rank: int) -> torch.device:
    """The device of this process: "auto" and a bare "cuda" mean cuda:LOCAL_RANK (one GPU per rank under
    torchrun); "cuda:N" and "cpu" are taken as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def _init_distributed(cfg: TrainVideoConfig) -> tuple[int, int, torch.device]:
    rank, world, local = _dist_env()
    device = training_device(cfg.device, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def autocast_dtype(cfg: TrainVideoConfig, device: torch.device) -> torch.dtype | None:
    """bf16 for precision "bf16" (or "auto" on a GPU with bf16 tensor cores); None = fp32 throughout.
    Pre-Ampere GPUs stay fp32 for training: fp16 would need loss scaling."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto":
        from ..precision import half_dtype
        return torch.bfloat16 if half_dtype(device) == torch.bfloat16 else None
    raise ValueError(f"unknown precision {cfg.precision!r}; choose 'auto', 'bf16' or 'fp32'")


def _wrap(model: torch.nn.Module, cfg: TrainVideoConfig, world: int, device: torch.device,
          half: torch.dtype | None = None) -> torch.nn.Module:
    """DDP or FSDP2 when WORLD_SIZE > 1 (FSDP2 also in a process group of one, e.g. the GPU check)."""
    sharded = cfg.dist == "fsdp2" and torch.distributed.is_available() and torch.distributed.is_initialized()
    if world <= 1 and not sharded:
        return model
    if cfg.dist == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # gather parameters in bf16 and reduce gradients in fp32 (sharded master weights stay fp32); inputs
        # are left alone: autocast does the compute casts, and the timesteps and RoPE tables stay fp32
        policy = (MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32, cast_forward_inputs=False)
                  if half else MixedPrecisionPolicy())
        for block in model.blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if cfg.dist == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    raise ValueError(f"unknown distribution strategy {cfg.dist!r}; choose 'ddp' or 'fsdp2'")


# ---------------------------------------------------------------- checkpoints

def _state_dict_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _latest_checkpoint(out: str) -> str | None:
    root = os.path.join(out, "checkpoints")
    if not os.path.isdir(root):
        return None
    steps = sorted(d for d in os.listdir(root) if d.startswith("step_")
                   and os.path.exists(os.path.join(root, d, "state.json")))
    return os.path.join(root, steps[-1]) if steps else None


def save_checkpoint(out: str, step: int, model, optimizer, trainable: list[str], cfg: TrainVideoConfig,
                    rank: int, keep: int = 2, ema: EMA | None = None, spent: dict | None = None) -> None:
    """Trainable weights + optimizer state (+ EMA) as safetensors, step + config as JSON (rank 0 writes)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    msd = get_model_state_dict(model, options=_state_dict_options())
    osd = get_optimizer_state_dict(model, optimizer, options=_state_dict_options())
    ema_state = ema.full_state() if ema is not None else None
    if rank != 0:
        return
    folder = os.path.join(out, "checkpoints", f"step_{step:07d}")
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    keep_names = set(trainable)
    save_file({k: v.contiguous() for k, v in msd.items() if k in keep_names}, os.path.join(tmp, "trainable.safetensors"))
    flat = {f"{name}::{key}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
            for name, st in osd["state"].items() for key, v in st.items()}
    save_file(flat, os.path.join(tmp, "optimizer.safetensors"))
    if ema_state is not None:
        save_file(ema_state, os.path.join(tmp, "ema.safetensors"))
    groups = [{k: v for k, v in g.items()} for g in osd["param_groups"]]
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
        json.dump({"step": step, "param_groups": groups, "config": _config_dict(cfg),
                   "ema_updates": ema.updates if ema is not None else 0, "spent": spent or {}}, f, indent=1)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    root = os.path.join(out, "checkpoints")
    old = sorted(d for d in os.listdir(root) if d.startswith("step_") and not d.endswith(".tmp"))
    for d in old[:-keep] if keep > 0 else []:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def load_checkpoint(folder: str, model, optimizer, ema: EMA | None = None) -> int:
    """Restore trainable weights, optimizer state and EMA; returns the step to continue from."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    with open(os.path.join(folder, "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    weights = load_file(os.path.join(folder, "trainable.safetensors"))
    set_model_state_dict(model, weights, options=replace(_state_dict_options(), strict=False))
    opt_state: dict = {}
    for flat_key, v in load_file(os.path.join(folder, "optimizer.safetensors")).items():
        name, key = flat_key.split("::", 1)
        opt_state.setdefault(name, {})[key] = v
    set_optimizer_state_dict(model, optimizer, {"state": opt_state, "param_groups": state["param_groups"]},
                             options=_state_dict_options())
    if ema is not None:
        path = os.path.join(folder, "ema.safetensors")
        if os.path.exists(path):
            ema.load(load_file(path), state.get("ema_updates", 0))
        else:  # a checkpoint from a run without EMA: start the average here
            ema.load(_plain(ema.params), 0)
    return int(state["step"])


def _plain(params: dict) -> dict:
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu() for n, p in params.items()}


def _config_dict(cfg: TrainVideoConfig) -> dict:
    from dataclasses import asdict

    d = asdict(cfg)
    d["model"] = cfg.model.to_dict()
    return d


# ---------------------------------------------------------------- the loop

def _make_codec(cfg: TrainVideoConfig, device: torch.device):
    if cfg.model.codec == "pixel":
        return PixelCodec(cfg.model.pixel_factor)
    if cfg.model.codec == "wan-vae":
        if not cfg.vae:  # fine while every sample holds latents.safetensors (fuse4d cache-latents)
            return _NoVAE()
        AutoencoderKLWan = require("diffusers").AutoencoderKLWan

        return WanVAECodec(AutoencoderKLWan.from_pretrained(cfg.vae).to(device).eval())
    raise ValueError(f"unknown codec {cfg.model.codec!r}")


class _NoVAE:
    def encode(self, frames):
        raise ValueError("codec 'wan-vae' needs --vae (a diffusers AutoencoderKLWan folder) unless the "
                         "dataset holds precomputed latents.safetensors")


class _TextStates:
    """prompt -> [L, D] text states: given embeddings, a UMT5 encoder (loaded once, on the training
    device), or zeros; each prompt is encoded once."""

    def __init__(self, cfg: TrainVideoConfig, text_dim: int, device: torch.device | str = "cpu"):
        self.cfg, self.text_dim, self.device, self.cache, self.encoder = cfg, text_dim, device, {}, None

    def __call__(self, sample: dict) -> torch.Tensor:
        if "text_embeds" in sample:
            return sample["text_embeds"]
        prompt = sample.get("prompt", "")
        if not prompt or not self.cfg.text_encoder:
            return torch.zeros(1, self.text_dim)
        if prompt not in self.cache:
            if self.encoder is None:
                from .pipeline import PromptEncoder

                self.encoder = PromptEncoder(self.cfg.text_encoder, device=self.device)
            self.cache[prompt] = self.encoder(prompt)
        return self.cache[prompt]


def _batch(source, codec, text_states, cfg: TrainVideoConfig
           ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    latents, texts, views, rays = [], [], None, None
    for _ in range(cfg.batch_size):
        s = source.next()
        if "latents" in s:
            lat, v = s["latents"], s["views"]
        else:
            v = s["frames"].shape[0]
            lat = torch.cat([codec.encode(s["frames"][i]) for i in range(v)], dim=1)  # per view, view-major
        if views is not None and (v != views or lat.shape != latents[0].shape):
            raise ValueError("all samples in a batch must share one grid layout; use --batch-size 1")
        views = v
        if cfg.model.concat_reference and cfg.model.ray_bands:
            if "cameras" not in s:
                raise ValueError("the model has ray channels: its training samples need their cameras")
            r = ray_channels(s["cameras"], *lat.shape[-2:], cfg.model.ray_bands, cfg.model.ray_height)
            if rays is not None and not torch.equal(r, rays):
                raise ValueError("all samples in a batch must share one camera rig; use --batch-size 1")
            rays = r
        latents.append(lat)
        texts.append(text_states(s))
    length = max(t.shape[0] for t in texts)
    text = torch.zeros(len(texts), length, texts[0].shape[-1])
    for i, t in enumerate(texts):
        text[i, :t.shape[0]] = t
    return torch.stack(latents), text, views, rays


def train_video(cfg: TrainVideoConfig) -> dict:
    """Run training; returns {"losses": [...], "step": n, "model_dir": path}."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainVideoConfig) -> dict:
    rank, world, device = _init_distributed(cfg)
    torch.manual_seed(cfg.seed + rank)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    # noise on the device (the CPU keeps the one stream it always had)
    noise_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    half = autocast_dtype(cfg, device)
    checkpointing = device.type == "cuda" if cfg.checkpointing is None else bool(cfg.checkpointing)
    wan = cfg.model.wan
    if cfg.init:
        model = load_wan_transformer(cfg.init, wan, device=device, dtype=torch.float32)
    else:
        model = build_wan_transformer(wan, device=device)
    if cfg.model.prediction.startswith("reference-") and not cfg.init:
        with torch.no_grad():  # start as "the scene stays as given"
            model.proj_out.weight.zero_()
            model.proj_out.bias.zero_()
    model.train()
    mode = cfg.model.attention
    if mode == "parallel":  # the baseline's sync layers exist before freezing and always train
        sync_names = add_sync_layers(model)
    if cfg.train == "attn":
        trainable = freeze_all_but_self_attention(model)
    elif cfg.train == "lora":
        trainable = add_lora(model, cfg.lora_rank, cfg.lora_alpha)
    elif cfg.train == "full":
        trainable = [n for n, _ in model.named_parameters()]
    else:
        raise ValueError(f"unknown training mode {cfg.train!r}; choose 'attn', 'lora' or 'full'")
    if mode == "parallel":
        for n, p in model.named_parameters():
            if f".{SYNC_NAME}." in n:
                p.requires_grad_(True)
        trainable = sorted(set(trainable) | set(sync_names))
    if cfg.model.patch_embed_conditioning:
        install_patch_conditioning(model)
    layout = patch_wan_transformer(model, cfg.views, cfg.model.t_max, cfg.backend, mode=mode)
    if checkpointing:
        model.enable_gradient_checkpointing()
    core = model
    model = _wrap(model, cfg, world, device, half)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    text_states = _TextStates(cfg, wan.text_dim, device)
    ph, pw = wan.patch_size[1:]
    warm = lambda i: lr_factor(cfg, i)  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warm)
    ema = EMA(core, trainable, cfg.ema) if cfg.ema > 0 else None
    start, before = 0, {}
    ckpt = _latest_checkpoint(cfg.out) if cfg.resume else None
    if ckpt:
        start = load_checkpoint(ckpt, model, optimizer, ema)
        with open(os.path.join(ckpt, "state.json"), encoding="utf-8") as f:
            before = json.load(f).get("spent", {})
        if rank == 0:
            print(f"resuming from {ckpt} at step {start}")
    if start:
        sched.last_epoch = start
        for group, base in zip(optimizer.param_groups, sched.base_lrs):
            group["lr"] = base * warm(start)
    # a resumed run continues with fresh synthetic samples, not a replay
    codec = _make_codec(cfg, device)
    source = make_source(cfg, rank, world, start)
    if rank == 0:
        os.makedirs(cfg.out, exist_ok=True)
    losses: list[float] = []
    log = open(os.path.join(cfg.out, "log.jsonl"), "a", encoding="utf-8") if rank == 0 else None
    t0, cpu0 = time.time(), time.process_time()

    def spent() -> dict:  # training time over all sessions (restored from the checkpoint on resume)
        return {"wall_seconds": round(before.get("wall_seconds", 0.0) + time.time() - t0, 2),
                "cpu_seconds": round(before.get("cpu_seconds", 0.0) + time.process_time() - cpu0, 2)}
    bar = tqdm(range(start, cfg.steps), desc="train-video", disable=not cfg.progress or rank != 0)
    for step in bar:
        x0, text, views, rays = _batch(source, codec, text_states, cfg)
        x0, text = x0.to(device, non_blocking=True), text.to(device, non_blocking=True)
        layout.views = views
        lt = x0.shape[2] // views
        probs = torch.tensor(cfg.cond_probs, dtype=torch.float)
        frozen, fixed = COND_MODES[int(torch.multinomial(probs, 1, generator=gen))]
        mask = cell_mask(views, lt, frozen, fixed, device=device)
        drop = torch.rand(text.shape[0], generator=gen) < cfg.p_uncond
        text = torch.where(drop.to(device)[:, None, None], torch.zeros_like(text), text)
        noise = torch.randn(x0.shape, generator=noise_gen, device=device)
        s = sample_noise_levels(x0.shape[0], cfg.noise, generator=gen, shift=cfg.model.flow_shift,
                                pure=cfg.pure_noise).to(device)
        x_in = replace_clean(add_noise(x0, noise, s), x0, mask)
        t = s * 1000.0
        if cfg.model.per_token_timestep and mask.any():
            t = token_timesteps(mask, t, (x0.shape[-2] // ph) * (x0.shape[-1] // pw))
        if cfg.model.patch_embed_conditioning:
            set_reference(core, reference_term(x0, mask) if mask.any() else None)
        inp = (concat_input(x_in, x0, mask, cfg.model.position_channels, cfg.model.view_change_channels,
                            cfg.model.grid_channels, rays)
               if cfg.model.concat_reference else x_in)
        with torch.autocast(device.type, dtype=half or torch.bfloat16, enabled=half is not None):
            pred = model(inp, t, text).sample.float()
        weight = (~mask).reshape(1, 1, -1, 1, 1).float()
        if cfg.motion_weight:
            weight = weight * (1.0 + cfg.motion_weight * moving_latents(x0.float(), views))
        if cfg.model.prediction == "velocity":
            diff = pred - (noise - x0).float()
        else:  # the velocity error is the x0 error / s; s >= 0.1 keeps the rare tiny s from dominating
            x0_hat = predicted_x0(pred, reference_term(x0, mask, broadcast=True), cfg.model.prediction, cfg.model.fold)
            scale = s.clamp_min(0.1).view(-1, 1, 1, 1, 1) if cfg.loss_weight == "velocity" else 1.0
            diff = (x0_hat - x0.float()) / scale
        loss = weighted_mse(diff, weight, cfg.loss_pyramid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        sched.step()
        if ema is not None:
            ema.update()
        losses.append(float(loss.detach()))
        if rank == 0 and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            recent = sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:])
            bar.set_postfix(loss=f"{recent:.4f}")
            log.write(json.dumps({"step": step + 1, "loss": recent, "lr": sched.get_last_lr()[0],
                                  "seconds": round(time.time() - t0, 2), **spent()}) + "\n")
            log.flush()
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(cfg.out, step + 1, model, optimizer, trainable, cfg, rank, cfg.keep_checkpoints, ema,
                            spent())
    if log is not None:
        log.close()
    set_reference(core, None)
    model_dir = os.path.join(cfg.out, "model")
    export_model(core, cfg, model_dir, rank, ema.full_state() if ema is not None else None)
    if world > 1:
        torch.distributed.barrier()
    return {"losses": losses, "step": cfg.steps, "model_dir": model_dir, "device": str(device),
            "precision": "bf16" if half else "fp32", "checkpointing": checkpointing, **spent()}


def weighted_mse(diff: torch.Tensor, weight: torch.Tensor, pyramid: int = 0) -> torch.Tensor:
    """Mean of diff² under `weight` (broadcast over diff [B, C, F, h, w]), plus the same on `pyramid`
    successively 2x average-pooled copies: a displaced object costs little at full resolution once it
    misses its place entirely, while the pooled levels still see how far off it is."""
    loss = (diff ** 2 * weight).sum() / weight.expand_as(diff).sum().clamp_min(1)
    for _ in range(pyramid):
        if min(diff.shape[-2:]) < 2:
            break
        diff = F.avg_pool3d(diff, (1, 2, 2))
        weight = F.avg_pool3d(weight, (1, 2, 2)) if weight.shape[-1] > 1 else weight
        loss = loss + (diff ** 2 * weight).sum() / weight.expand_as(diff).sum().clamp_min(1)
    return loss


def moving_latents(x0: torch.Tensor, views: int, threshold: float = 0.1) -> torch.Tensor:
    """[B, 1, V*T, h, w] float, 1 where some channel of a cell's latent differs from its view's t = 0
    latent by more than `threshold` (0.05 in [0, 1] pixels for the pixel codec): where the answer is
    motion. Most of a grid is static background; weighting these up spends the loss on the motion."""
    x = x0.unflatten(2, (views, -1))
    change = (x - x[:, :, :, :1]).abs().amax(1, keepdim=True) > threshold
    return change.flatten(2, 3).float()


def _merge_lora_state(sd: dict, scale: float) -> dict:
    """Fold `X.base.*` + `X.lora_A/B` entries of a full state dict into plain `X.weight/bias`."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".lora_A") or k.endswith(".lora_B"):
            continue
        if ".base." in k:
            prefix, leaf = k.rsplit(".base.", 1)
            if leaf == "weight":
                v = v + scale * (sd[prefix + ".lora_B"] @ sd[prefix + ".lora_A"]).to(v.dtype)
            k = f"{prefix}.{leaf}"
        out[k] = v
    return out


def export_model(core: torch.nn.Module, cfg: TrainVideoConfig, folder: str, rank: int = 0,
                 ema_state: dict | None = None) -> None:
    """Write the final model (unpatched, LoRA merged; the EMA weights when given) as a Fuse4D video
    model folder. Every rank gathers (a collective under FSDP2); rank 0 writes."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from .attention_processor import unpatch

    unpatch(core)
    sd = get_model_state_dict(core, options=_state_dict_options())
    if rank != 0:
        return
    sd.update(ema_state or {})
    scale = float(cfg.lora_alpha if cfg.lora_alpha is not None else cfg.lora_rank) / cfg.lora_rank
    plain = build_wan_transformer(cfg.model.wan, device="meta")
    if cfg.model.attention == "parallel":
        add_sync_layers(plain)
    plain.load_state_dict(_merge_lora_state(sd, scale), strict=True, assign=True)
    save_video_model(folder, plain, cfg.model)


def lr_factor(cfg: TrainVideoConfig, step: int) -> float:
    """Learning-rate multiplier: linear warm-up, then constant or cosine down to cfg.lr_min."""
    if step < cfg.warmup:
        return (step + 1) / max(cfg.warmup, 1)
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "cosine":
        span = max(cfg.steps - cfg.warmup, 1)
        done = min(1.0, (step - cfg.warmup) / span)
        return cfg.lr_min + (1.0 - cfg.lr_min) * 0.5 * (1.0 + math.cos(math.pi * done))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose 'constant' or 'cosine'")


def make_source(cfg: TrainVideoConfig, rank: int = 0, world: int = 1, start: int = 0):
    """The training sample stream of this rank (a resumed run continues with a fresh stream)."""
    if cfg.data:
        return FolderDataset(cfg.data, rank, world, cfg.seed)
    stream = cfg.seed * 1000 + rank + 7919 * start
    if cfg.source == "scenes":
        return SceneGrids(cfg.views, cfg.frames, cfg.size, scenes=cfg.scenes, seed=stream,
                          cache_dir=cfg.data_cache or default_cache_dir(), reverse_views=cfg.reverse_views,
                          mirror=cfg.mirror)
    if cfg.source == "motion":
        return MotionGrids(cfg.views, cfg.frames, cfg.size, scenes=cfg.scenes, seed=stream,
                           cache_dir=cfg.data_cache or default_cache_dir(), reverse_views=cfg.reverse_views,
                           mirror=cfg.mirror, **cfg.motion_scene)
    if cfg.source == "blobs":
        return BlobGrids(cfg.views, cfg.frames, cfg.size, seed=stream)
    raise ValueError(f"unknown synthetic source {cfg.source!r}; choose 'motion', 'scenes' or 'blobs'")
