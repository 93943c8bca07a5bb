# SPDX-License-Identifier: GPL-3.0-or-later
"""The CPU rasterizer: analytic image, gsplat's per-pixel rules (dense reference), gradients (finite
differences, autograd), gsplat's projection, SH transform vs moving the camera, the sample scene."""
import math

import pytest
import torch

from fuse4d.core.cameras import Cameras, orbit_cameras
from fuse4d.core.gaussians import Gaussians
from fuse4d.core.render import render
from fuse4d.core.render import torch_raster
from fuse4d.core.render.projection import EPS2D, covariances, project


def single_camera(width=32, height=24, f=40.0, dtype=torch.float32):
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)
    return Cameras(torch.eye(4, dtype=dtype)[None], K[None], width, height)


def test_single_gaussian_matches_its_analytic_image():
    cam = single_camera()
    mean = torch.tensor([[0.1, -0.05, 2.0]])
    scales = torch.tensor([[0.05, 0.08, 0.03]])
    g = Gaussians.from_activated(mean, torch.tensor([[1.0, 0, 0, 0]]), scales, torch.tensor([0.8]),
                                 torch.tensor([[0.9, 0.3, 0.1]]))
    bg = torch.tensor([0.2, 0.4, 0.6])
    out = render(g, cam, background=bg)
    # Analytic: EWA with an axis-aligned Gaussian facing the camera, plus the 0.3 px low-pass.
    f, z = 40.0, 2.0
    mx, my = f * 0.1 / z + 16, f * -0.05 / z + 12
    J = torch.tensor([[f / z, 0, -f * 0.1 / z ** 2], [0, f / z, f * 0.05 / z ** 2]])
    cov = J @ torch.diag(scales[0] ** 2) @ J.T + EPS2D * torch.eye(2)
    inv = torch.linalg.inv(cov)
    ys, xs = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    d = torch.stack([xs - mx, ys - my], -1)
    alpha = 0.8 * torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", d, inv, d))
    alpha = torch.where(alpha >= 1 / 255, alpha.clamp(max=0.999), torch.zeros_like(alpha))
    expected = alpha[..., None] * torch.tensor([0.9, 0.3, 0.1]) + (1 - alpha[..., None]) * bg
    torch.testing.assert_close(out.rgb[0], expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.alpha[0, ..., 0], alpha, atol=2e-5, rtol=1e-4)
    covered = alpha > 0.05
    torch.testing.assert_close(out.depth[0, ..., 0][covered], torch.full_like(alpha[covered], 2.0))


def test_front_to_back_order():
    cam = single_camera()
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]])
    g = Gaussians.from_activated(means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.3),
                                 torch.tensor([0.99, 0.99]), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    centre = render(g, cam).rgb[0, 12, 16]
    assert centre[2] > 0.95 and centre[0] < 0.05  # the nearer blue one hides the red one


def dense_gsplat_reference(g: Gaussians, cam: Cameras, background):
    """Every Gaussian at every pixel, front to back, with gsplat's per-pixel rules written out:
    alpha = min(0.999, o * exp(-sigma)), skipped below 1/255, stop before T would fall to <= 1e-4."""
    viewmat, K = cam.viewmats[0], cam.Ks[0]
    p = project(g.means, covariances(g.quats, g.scales), viewmat, K, cam.width, cam.height)
    colors = g.colors_dc.clamp_min(0)  # SH degree 0: no view dependence
    ys, xs = torch.meshgrid(torch.arange(cam.height, dtype=g.means.dtype) + 0.5,
                            torch.arange(cam.width, dtype=g.means.dtype) + 0.5, indexing="ij")
    T = torch.ones_like(xs)
    done = torch.zeros_like(xs, dtype=torch.bool)
    rgb, depth = torch.zeros(*xs.shape, 3, dtype=xs.dtype), torch.zeros_like(xs)
    for i in torch.argsort(p.depths):
        if p.radii[i].min() <= 0:
            continue
        dx, dy = xs - p.means2d[i, 0], ys - p.means2d[i, 1]
        a, b, c = p.conics[i]
        alpha = (g.opacities[i] * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))).clamp(max=0.999)
        use = (alpha >= 1 / 255) & ~done
        next_T = T * (1 - alpha)
        stop = use & (next_T <= 1e-4)
        done, use = done | stop, use & ~stop
        w = torch.where(use, alpha * T, torch.zeros_like(alpha))
        rgb, depth = rgb + w[..., None] * colors[i], depth + w * p.depths[i]
        T = torch.where(use, next_T, T)
    alpha = 1 - T
    return rgb + T[..., None] * torch.as_tensor(background, dtype=xs.dtype), alpha, depth / alpha.clamp_min(1e-10)


@pytest.mark.parametrize("chunk,tile_batch", [(64, 256), (3, 2)])
def test_tiled_compositing_equals_dense_per_pixel_reference(monkeypatch, chunk, tile_batch):
    # Many overlapping, partly opaque Gaussians: exercises sorting, tile borders, several chunks per
    # tile, several tile batches and gsplat's per-pixel early stop.
    monkeypatch.setattr(torch_raster, "CHUNK", chunk)
    monkeypatch.setattr(torch_raster, "TILE_BATCH", tile_batch)
    torch.manual_seed(5)
    n = 80
    dt = torch.float64
    g = Gaussians.from_activated(
        torch.randn(n, 3, dtype=dt) * torch.tensor([0.5, 0.4, 0.3], dtype=dt) + torch.tensor([0, 0, 2.5], dtype=dt),
        torch.randn(n, 4, dtype=dt), torch.rand(n, 3, dtype=dt) * 0.15 + 0.02,
        torch.where(torch.rand(n, dtype=dt) < 0.5, 0.9995, 0.6).to(dt), torch.rand(n, 3, dtype=dt))
    cam = single_camera(40, 37, f=30.0, dtype=dt)
    out = render(g, cam, background=(0.1, 0.2, 0.3))
    rgb, alpha, depth = dense_gsplat_reference(g, cam, (0.1, 0.2, 0.3))
    assert (alpha > 1 - 2e-4).any(), "the scene should make some pixels stop early"
    torch.testing.assert_close(out.rgb[0], rgb, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.alpha[0, ..., 0], alpha, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.depth[0, ..., 0], depth, atol=1e-7, rtol=1e-7)


def test_custom_backward_equals_autograd_through_the_same_compositing(monkeypatch):
    from fuse4d.core.scene import sample_scene
    import fuse4d.core.render as render_module

    g = sample_scene()
    cams = orbit_cameras(1, 3.0, 30, width=48, height=40)
    weights = torch.rand(1, 40, 48, 3, generator=torch.Generator().manual_seed(0))
    grads = []
    for custom in (True, False):
        monkeypatch.setattr(render_module, "rasterize",
                            lambda *a, custom=custom: torch_raster.rasterize(*a, custom_backward=custom))
        leaves = [t.detach().clone().requires_grad_(True) for t in
                  (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh)]
        out = render(Gaussians(*leaves), cams, background=(0.3, 0.3, 0.3))
        ((out.rgb * weights).sum() + 0.3 * out.alpha.sum() + 0.1 * (out.depth * out.alpha).sum()).backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-3)


def test_batch_of_cameras_shapes_and_alpha_range():
    from fuse4d.core.scene import sample_scene

    cams = orbit_cameras(3, 4.0, 20, width=40, height=30)
    out = render(sample_scene(), cams)
    assert out.rgb.shape == (3, 30, 40, 3) and out.alpha.shape == (3, 30, 40, 1) and out.depth.shape == (3, 30, 40, 1)
    assert 0 <= float(out.alpha.min()) and float(out.alpha.max()) <= 1 - 1e-4 + 1e-6  # never fully opaque, as gsplat
    torch.testing.assert_close(render(sample_scene(), cams[1]).rgb[0], out.rgb[1])


def tiny_scene(dtype=torch.float64):
    torch.manual_seed(1)
    n = 3
    return Gaussians(
        means=(torch.randn(n, 3, dtype=dtype) * 0.15 + torch.tensor([0, 0, 2.0], dtype=dtype)),
        quats=torch.randn(n, 4, dtype=dtype), log_scales=torch.full((n, 3), -1.6, dtype=dtype) + 0.2 * torch.randn(n, 3, dtype=dtype),
        opacity_logits=torch.randn(n, dtype=dtype), sh=torch.randn(n, 4, 3, dtype=dtype) * 0.3)


def test_gradients_pass_finite_differences():
    g0 = tiny_scene()
    cam = single_camera(8, 8, f=10.0, dtype=torch.float64)

    def f(means, quats, log_scales, opacity_logits, sh):
        out = render(Gaussians(means, quats, log_scales, opacity_logits, sh), cam, background=(0.1, 0.2, 0.3))
        return out.rgb, out.alpha

    inputs = tuple(t.clone().requires_grad_(True) for t in (g0.means, g0.quats, g0.log_scales, g0.opacity_logits, g0.sh))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_projection_matches_gsplat_reference():
    from gsplat.cuda._torch_impl import _fully_fused_projection

    torch.manual_seed(0)
    n = 200
    means = torch.randn(n, 3) * 0.8
    quats, scales = torch.randn(n, 4), torch.rand(n, 3) * 0.1 + 0.01
    cams = orbit_cameras(3, 3.0, 25, width=64, height=48, fov_deg=60)
    covars = covariances(quats, scales)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, cams.viewmats, cams.Ks, 64, 48)
    for c in range(3):
        p = project(means, covars, cams.viewmats[c], cams.Ks[c], 64, 48)
        ok = radii[c].min(-1).values > 0
        assert ok.sum() > 50
        assert torch.equal(p.radii[ok].int(), radii[c][ok])
        torch.testing.assert_close(p.means2d[ok], means2d[c][ok], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(p.conics[ok], conics[c][ok], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(p.depths[ok], depths[c][ok])


def test_opacity_aware_radii_like_gsplat_cuda():
    torch.manual_seed(1)
    n = 50
    means = torch.randn(n, 3) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    covars = covariances(torch.randn(n, 4), torch.rand(n, 3) * 0.1 + 0.02)
    opac = torch.rand(n)
    opac[:5] = 0.002  # below 1/255: culled
    K = torch.tensor([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    plain = project(means, covars, torch.eye(4), K, 64, 48)
    aware = project(means, covars, torch.eye(4), K, 64, 48, opacities=opac)
    assert (aware.radii[:5] == 0).all()
    assert (aware.radii <= plain.radii).all()
    extend = torch.sqrt(2 * torch.log(opac[5:] * 255)).clamp(max=3.33)
    sigma_x = torch.sqrt(plain.conics[5:, 2] / (plain.conics[5:, 0] * plain.conics[5:, 2] - plain.conics[5:, 1] ** 2))
    inside = plain.radii[5:, 0] > 0
    torch.testing.assert_close(aware.radii[5:, 0][inside].float(), torch.ceil(extend * sigma_x)[inside], atol=1.0, rtol=0)


def test_sh_rotating_transform_renders_like_moving_the_camera():
    torch.manual_seed(3)
    n = 300
    g = Gaussians(torch.randn(n, 3) * 0.4, torch.randn(n, 4), torch.full((n, 3), -2.5), torch.randn(n) + 1,
                  torch.randn(n, 16, 3) * 0.4)
    cam = orbit_cameras(1, 3.0, 15, width=48, height=40, fov_deg=50)
    angle = 0.7
    R = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]])
    R = R @ torch.tensor([[1, 0, 0], [0, math.cos(0.3), -math.sin(0.3)], [0, math.sin(0.3), math.cos(0.3)]])
    t, s = torch.tensor([0.2, -0.1, 0.3]), 1.3
    moved = render(g.transform(R, t, s), cam).rgb
    # Same image: keep the scene, move the camera by the inverse similarity.
    M = torch.eye(4)
    M[:3, :3], M[:3, 3] = s * R, t
    view = cam.viewmats[0] @ M
    view[:3, :] = view[:3, :] / s  # remove the scale from the rotation part
    cam2 = Cameras(view[None], cam.Ks, cam.width, cam.height)
    unscaled = render(g, cam2).rgb
    assert moved.std() > 0.05
    torch.testing.assert_close(moved, unscaled, atol=2e-4, rtol=1e-3)


def test_orbit_cameras_look_at_the_target():
    target = torch.tensor([0.5, -0.2, 1.0])
    cams = orbit_cameras(5, 2.0, 30, arc_deg=360, target=target, width=40, height=30)
    centres = cams.centers
    torch.testing.assert_close((centres - target).norm(dim=1), torch.full((5,), 2.0), atol=1e-5, rtol=0)
    cam_space = torch.einsum("cij,j->ci", cams.viewmats[:, :3, :3], target) + cams.viewmats[:, :3, 3]
    torch.testing.assert_close(cam_space[:, :2], torch.zeros(5, 2), atol=1e-5, rtol=0)
    assert (cam_space[:, 2] > 0).all()
    assert (centres[:, 1] < target[1]).all()  # elevated: above the target (up is -y)
    assert len({tuple(c.round(decimals=3).tolist()) for c in centres}) == 5  # no duplicate end view


def test_empty_and_behind_camera_render_background():
    cam = single_camera()
    g = Gaussians.from_activated(torch.tensor([[0.0, 0, -2.0]]), torch.tensor([[1.0, 0, 0, 0]]),
                                 torch.full((1, 3), 0.3), torch.tensor([0.9]), torch.tensor([[1.0, 1, 1]]))
    out = render(g, cam, background=(0.3, 0.3, 0.3))
    torch.testing.assert_close(out.rgb, torch.full_like(out.rgb, 0.3))
    assert out.alpha.abs().max() == 0


def test_large_scene_is_finite_and_differentiable():
    from fuse4d.core.scene import sample_scene

    g = sample_scene()
    assert 15_000 <= len(g) <= 25_000
    g.means.requires_grad_(True)
    cams = orbit_cameras(1, 4.0, 20, width=64, height=48)
    out = render(g, cams)
    out.rgb.mean().backward()
    assert torch.isfinite(g.means.grad).all() and g.means.grad.abs().sum() > 0


def test_sample_scene_is_deterministic_upright_and_fills_orbit_views():
    from fuse4d.core.scene import GROUND_Y, sample_scene

    a, b = sample_scene(0), sample_scene(0)
    assert torch.equal(a.means, b.means) and torch.equal(a.sh, b.sh)
    assert not torch.equal(sample_scene(1).means, a.means)
    assert 15_000 <= len(a) <= 25_000 and a.sh_degree == 1
    assert torch.isfinite(a.means).all() and float(a.means[:, 1].max()) <= GROUND_Y + 1e-5  # nothing below the floor
    assert float(a.means[:, 1].min()) < GROUND_Y - 0.4  # objects stand up (up is -y)
    cams = orbit_cameras(4, 3.2, 30, width=64, height=48)
    out = render(a, cams, background=(0.0, 0.0, 1.0))
    # Upright cameras: the floor fills the bottom rows, the sky (background) the top rows.
    assert float(out.alpha[:, -8:].mean()) > 0.95 and float(out.alpha[:, :4].mean()) < 0.05
    assert float(out.rgb[:, 12:].std()) > 0.08  # textured, shaded content, not a flat colour


def test_gsplat_without_kernels_falls_back_with_one_notice(monkeypatch, caplog):
    """CUDA present but gsplat's extension missing (no prebuilt kernels, no nvcc): the check runs once,
    says so in one line, and "auto" renders with our rasterizer; asking for gsplat explains why not."""
    import sys
    import types

    from fuse4d.core.render import gsplat_backend, pick_backend

    backend_module = types.ModuleType("gsplat.cuda._backend")
    backend_module._C = None
    monkeypatch.setitem(sys.modules, "gsplat.cuda._backend", backend_module)
    monkeypatch.setattr(gsplat_backend, "_STATE", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with caplog.at_level("WARNING"):
        assert pick_backend("auto", torch.device("cuda")) == "torch"
        assert pick_backend("auto", torch.device("cuda")) == "torch"
    notices = [r for r in caplog.records if "kernels are unavailable" in r.getMessage()]
    assert len(notices) == 1 and "PyTorch rasterizer" in notices[0].getMessage()
    assert "\n" not in notices[0].getMessage()
    with pytest.raises(ValueError, match="CUDA extension is missing"):
        pick_backend("gsplat", torch.device("cuda"))


def test_gsplat_failing_mid_render_falls_back(monkeypatch, caplog):
    from fuse4d.core import render as render_module
    from fuse4d.core.render import gsplat_backend

    g, cam = tiny_scene(torch.float32), single_camera()
    want = render_module.render(g, cam, backend="torch")
    monkeypatch.setattr(render_module, "pick_backend", lambda backend, device: "gsplat")

    def broken(*args):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(render_module, "render_gsplat_safe", broken)
    monkeypatch.setattr(gsplat_backend, "_STATE", {"ok": True})
    with caplog.at_level("WARNING"):
        got = render_module.render(g, cam)
    assert torch.equal(got.rgb, want.rgb)
    assert gsplat_backend._STATE["ok"] is False and "no kernel image" in caplog.text
