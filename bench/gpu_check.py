# SPDX-License-Identifier: GPL-3.0-or-later
"""One command that runs every CUDA path once and checks it: under 8 minutes on one GPU, no downloads
(random weights at the real sizes), one table, exit status 1 on any mismatch.

  attention   fused view-time attention at 8 views x 16 latent frames (Wan 1.3B heads at 480x288: 540
              tokens per frame, 12 heads of 128, bf16): flex / merge / dense flash SDPA forward+backward,
              values against the masked reference on a small case, time and peak memory as ratios to
              dense SDPA, memory of the block mask;
  wan         Wan 2.1 1.3B (random weights) fused forward in bf16 at 480x288 x 4 views x 9 frames, flex
              against merge;
  vggt        VGGT-1B shapes (random weights) forward in bf16 against fp32;
  render      gsplat against our rasterizer (PSNR, speed);
  train       20 steps of the video trainer on CUDA (flex backward, bf16 autocast, checkpointing, FSDP2
              in a process group of one).
`--dry-run` runs the same code at tiny sizes on the CPU (a test in the suite does).

    python bench/gpu_check.py [--dry-run] [--only attention wan vggt render train]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace

import torch

SECTIONS = ("attention", "wan", "vggt", "render", "train")


@dataclass
class Row:
    section: str
    check: str
    value: str
    status: str  # "ok" | "FAIL" | "skip"


@dataclass
class Setup:
    device: torch.device
    dry: bool

    def flex(self) -> bool:
        """FlexAttention here: on CUDA when it compiles; never in the CPU dry run (compiling it there takes
        minutes; its CPU forward is tested in tests/test_attention.py)."""
        from fuse4d.core.attention.flex import flex_available
        return self.device.type == "cuda" and flex_available(self.device)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn, repeats: int = 3) -> float:
        """Median seconds of fn() after one warm-up call."""
        fn()
        self.sync()
        times = []
        for _ in range(1 if self.dry else repeats):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def peak(self, fn) -> int | None:
        """Peak bytes allocated during fn() above what was allocated before (CUDA only)."""
        if self.device.type != "cuda":
            fn()
            return None
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        fn()
        self.sync()
        return torch.cuda.max_memory_allocated(self.device) - base


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def check(rows: list, section: str, name: str, error: float, tol: float) -> None:
    ok = math.isfinite(error) and error <= tol
    rows.append(Row(section, name, f"rel err {error:.2e} (tol {tol:.0e})", "ok" if ok else "FAIL"))


def info(rows: list, section: str, name: str, value: str) -> None:
    rows.append(Row(section, name, value, "ok"))


# ----------------------------------------------------------------------------- attention

def attention_section(s: Setup, rows: list) -> None:
    import torch.nn.functional as F

    from fuse4d.core.attention import fused_view_time_attention, reference_attention
    from fuse4d.core.attention.flex import block_mask_bytes, view_time_block_mask

    sec = "attention"
    half = torch.bfloat16 if s.device.type == "cuda" else torch.float32
    flex_grad = s.flex()  # CUDA: forward and backward
    # values on a small case, against the masked reference in fp32
    g = torch.Generator(device=s.device).manual_seed(0)
    V, T, S, H, D = 3, 4, 40, 2, 64
    q, k, v = (torch.randn(1, H, V * T * S, D, generator=g, device=s.device) for _ in range(3))
    dout = torch.randn(q.shape, generator=g, device=s.device)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = reference_attention(*leaves, V, T)
    ref_grads = torch.autograd.grad(ref, leaves, dout)
    tol = 3e-2 if half != torch.float32 else 1e-4
    for backend in ("merge", "flex"):
        if backend == "flex" and not s.flex():
            rows.append(Row(sec, "flex values", "FlexAttention not run here", "skip"))
            continue
        xs = [x.to(half).requires_grad_() for x in (q, k, v)]
        out = fused_view_time_attention(*xs, V, T, backend=backend)
        grads = torch.autograd.grad(out, xs, dout.to(half))
        check(rows, sec, f"{backend} fwd+bwd vs reference", max([rel(out, ref)] + [rel(a, b) for a, b in
                                                                               zip(grads, ref_grads)]), tol)

    # speed and memory at the real layout
    V, T, S, H, D = (8, 16, 540, 12, 128) if not s.dry else (3, 4, 40, 2, 16)
    n = V * T * S
    q, k, v = (torch.randn(1, H, n, D, generator=g, device=s.device).to(half) for _ in range(3))
    dout = torch.randn(q.shape, generator=g, device=s.device).to(half)

    def fwd_bwd(fn):
        def run():
            xs = [x.detach().requires_grad_() for x in (q, k, v)]
            torch.autograd.grad(fn(*xs), xs, dout)
        return run

    dense = fwd_bwd(lambda a, b, c: F.scaled_dot_product_attention(a, b, c))
    t_dense, m_dense = s.timed(dense), s.peak(dense)
    info(rows, sec, f"dense SDPA fwd+bwd N={n}", f"{t_dense * 1e3:.1f} ms" + (f", {m_dense / 2**30:.2f} GiB"
                                                                            if m_dense else ""))
    for backend in ("flex", "merge"):
        if backend == "flex" and not flex_grad:
            rows.append(Row(sec, "flex fwd+bwd timing", "no FlexAttention backward on this device", "skip"))
            continue
        run = fwd_bwd(lambda a, b, c, name=backend: fused_view_time_attention(a, b, c, V, T, backend=name))
        t, m = s.timed(run), s.peak(run)
        mem = f", memory {m / m_dense:.2f}x" if m and m_dense else ""
        info(rows, sec, f"{backend} fwd+bwd / dense", f"time {t / t_dense:.2f}x{mem}")
    if s.flex():
        with torch.no_grad():
            t = s.timed(lambda: fused_view_time_attention(q, k, v, V, T, backend="flex"))
        info(rows, sec, "flex forward", f"{t * 1e3:.1f} ms")
        from fuse4d.core.attention import flex
        flex._MASKS.clear()
        holder = []
        m = s.peak(lambda: holder.append(view_time_block_mask(V, T, S, s.device)))
        info(rows, sec, f"block mask N={n}", f"{block_mask_bytes(holder[0]) / 2**20:.2f} MiB held"
             + (f", build peak {m / 2**20:.1f} MiB" if m is not None else ""))


# ----------------------------------------------------------------------------- Wan

def wan_section(s: Setup, rows: list) -> None:
    from fuse4d.core.precision import inference_dtype
    from fuse4d.core.wan.attention_processor import fused_wan
    from fuse4d.core.wan.keys import WAN21_T2V_1_3B, WanConfig, build_wan_transformer

    sec = "wan"
    if s.dry:
        cfg, (lt, h, w), text_len = WanConfig(dim=64, num_layers=2, num_heads=2, ffn_dim=128, text_dim=32,
                                              freq_dim=32), (3, 8, 8), 8
    else:  # 480x288 pixels -> 60x36 latents; 9 frames -> 3 latent frames per view
        cfg, (lt, h, w), text_len = WAN21_T2V_1_3B, (3, 36, 60), 512
    views = 4
    dtype = inference_dtype(s.device)
    torch.manual_seed(0)
    model = build_wan_transformer(cfg, device=s.device).to(dtype).eval()
    x = torch.randn(1, cfg.in_dim, views * lt, h, w, device=s.device, dtype=dtype)
    text = torch.randn(1, text_len, cfg.text_dim, device=s.device, dtype=dtype)
    t = torch.tensor([500.0], device=s.device)
    outs = {}
    for backend in ("flex", "merge"):
        if backend == "flex" and not s.flex():
            rows.append(Row(sec, "flex forward", "FlexAttention not run here", "skip"))
            continue
        with fused_wan(model, views, 2 * lt, backend=backend), torch.no_grad():
            seconds = s.timed(lambda: outs.__setitem__(backend, model(x, t, text).sample))
        info(rows, sec, f"{backend} forward {views}x{lt} latent frames ({dtype})", f"{seconds:.2f} s")
    if not all(torch.isfinite(o).all() for o in outs.values()):
        rows.append(Row(sec, "finite outputs", "NaN/inf in the output", "FAIL"))
    if len(outs) == 2:
        check(rows, sec, "flex vs merge output", rel(outs["flex"], outs["merge"]),
              5e-2 if dtype != torch.float32 else 1e-4)
    del model


# ----------------------------------------------------------------------------- VGGT

def vggt_section(s: Setup, rows: list) -> None:
    from fuse4d.core.recon import VGGT4D, full, tiny

    sec = "vggt"
    torch.manual_seed(0)
    cfg = tiny() if s.dry else full()
    model = VGGT4D(cfg).to(s.device).eval()
    size = cfg.img_size
    images = torch.rand(1, 4, 2, 3, size, size, device=s.device)
    outs, times = {}, {}
    half_ctx = model._autocast
    for name in ("half", "fp32"):
        model._autocast = half_ctx if name == "half" else (lambda device: contextlib.nullcontext())
        with torch.no_grad():
            times[name] = s.timed(lambda: outs.__setitem__(name, model(images, heads=("camera", "depth"))), 2)
    model._autocast = half_ctx
    info(rows, sec, "forward 4 views x 2 timesteps", f"fp32 {times['fp32']:.2f} s, half {times['half']:.2f} s "
         f"({times['fp32'] / times['half']:.1f}x)")
    check(rows, sec, "half vs fp32 depth", rel(outs["half"]["depth"], outs["fp32"]["depth"]),
          5e-2 if s.device.type == "cuda" else 1e-6)
    check(rows, sec, "half vs fp32 pose", rel(outs["half"]["pose_enc"], outs["fp32"]["pose_enc"]),
          5e-2 if s.device.type == "cuda" else 1e-6)
    del model


# ----------------------------------------------------------------------------- render

def render_section(s: Setup, rows: list) -> None:
    from fuse4d.core.cameras import orbit_cameras
    from fuse4d.core.render import gsplat_backend, render
    from fuse4d.core.scene import sample_scene

    sec = "render"
    scene = sample_scene().to(s.device)
    size = (32, 24) if s.dry else (512, 384)
    cams = orbit_cameras(2 if s.dry else 4, 4.0, 20, width=size[0], height=size[1]).to(device=s.device)
    ours = {}
    t_ours = s.timed(lambda: ours.__setitem__("out", render(scene, cams, backend="torch")))
    info(rows, sec, f"ours {len(cams)} views {size[0]}x{size[1]}", f"{t_ours * 1e3:.1f} ms")
    if not (s.device.type == "cuda" and gsplat_backend.available()):
        rows.append(Row(sec, "gsplat", gsplat_backend.unavailable_reason() or "unavailable", "skip"))
        return
    theirs = {}
    t_gs = s.timed(lambda: theirs.__setitem__("out", render(scene, cams, backend="gsplat")))
    mse = float(((theirs["out"].rgb - ours["out"].rgb) ** 2).mean())
    psnr = 10 * math.log10(1.0 / max(mse, 1e-12))
    rows.append(Row(sec, "gsplat vs ours", f"PSNR {psnr:.1f} dB, gsplat {t_ours / t_gs:.1f}x faster",
                    "ok" if psnr >= 30 else "FAIL"))


# ----------------------------------------------------------------------------- training

def train_section(s: Setup, rows: list) -> None:
    from fuse4d.core.wan.keys import WanConfig
    from fuse4d.core.wan.trainer import smoke_config, train_video

    sec = "train"
    group = False
    try:
        with tempfile.TemporaryDirectory() as out:
            if not torch.distributed.is_initialized():  # FSDP2 in a process group of one
                cuda = s.device.type == "cuda"
                torch.distributed.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{out}/group",
                                                     rank=0, world_size=1, device_id=s.device if cuda else None)
                group = True
            cfg = smoke_config(out=out, steps=2 if s.dry else 20)
            if not s.dry:  # 4 views x 8 frames at 64x64, 128-dim heads (the kernels' real head size)
                wan = WanConfig(dim=512, num_layers=4, num_heads=4, ffn_dim=1024, in_dim=12, out_dim=12,
                                text_dim=16, freq_dim=32)
                cfg = replace(cfg, model=replace(cfg.model, wan=wan), views=4, frames=8, size=64)
            cfg = replace(cfg, device=str(s.device), backend="flex" if s.device.type == "cuda" else "merge",
                          dist="fsdp2", precision="bf16", checkpointing=True, progress=False, threads=None)
            t0 = time.perf_counter()
            result = train_video(cfg)
            seconds = time.perf_counter() - t0
        losses = result["losses"]
        ok = all(math.isfinite(x) for x in losses) and result["precision"] == "bf16" and result["checkpointing"]
        rows.append(Row(sec, f"{len(losses)} steps ({cfg.backend}, bf16, checkpointing"
                             f"{', FSDP2 x1' if group else ''})",
                        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {seconds / len(losses):.2f} s/step",
                        "ok" if ok else "FAIL"))
    finally:
        if group:
            torch.distributed.destroy_process_group()


RUNNERS = {"attention": attention_section, "wan": wan_section, "vggt": vggt_section, "render": render_section,
           "train": train_section}


def print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(r, f)) for r in rows + [Row("section", "check", "value", "status")])
              for f in ("section", "check", "value", "status")]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format("section", "check", "value", "status"))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(r.section, r.check, r.value, r.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (what the test suite runs)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        print("gpu_check: error: no CUDA device (use --dry-run for the CPU)", file=sys.stderr)
        return 2
    setup = Setup(device, args.dry_run)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"gpu_check on {name}, torch {torch.__version__}", flush=True)
    rows: list[Row] = []
    t0 = time.perf_counter()
    for section in args.only:
        start = time.perf_counter()
        try:
            RUNNERS[section](setup, rows)
        except Exception as error:  # noqa: BLE001 - one broken path must not hide the others
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            rows.append(Row(section, "run", f"{type(error).__name__}: {first}", "FAIL"))
        print(f"  {section}: {time.perf_counter() - start:.1f} s", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(rows)
    failed = [r for r in rows if r.status == "FAIL"]
    print(f"{len(rows)} checks, {len(failed)} failed, {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
