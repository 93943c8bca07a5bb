# SPDX-License-Identifier: GPL-3.0-or-later
"""The CPU rasterizer: analytic image, gradients, gsplat's projection, SH transform vs camera."""
import math

import pytest
import torch

from fuse4d.core.cameras import Cameras, intrinsics_from_fov, look_at, orbit_cameras
from fuse4d.core.gaussians import Gaussians, inverse_sigmoid, rgb_to_sh0
from fuse4d.core.render import render
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
    alpha = torch.where(alpha >= 1 / 255, alpha.clamp(max=0.99), torch.zeros_like(alpha))
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
