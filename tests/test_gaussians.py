# SPDX-License-Identifier: GPL-3.0-or-later
import math

import numpy as np
import pytest
import torch
from conftest import random_arrays

from fuse4d.core.gaussians import Gaussians, GaussianSequence, inverse_sigmoid, rgb_to_sh0, sh0_to_rgb
from fuse4d.core.sh import eval_sh, rotate_sh


def random_rotation(seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def test_rotate_sh_all_degrees():
    torch.manual_seed(0)
    for degree in range(4):
        sh = torch.randn(10, (degree + 1) ** 2, 3, dtype=torch.float64)
        R = random_rotation(degree)
        d = torch.nn.functional.normalize(torch.randn(10, 3, dtype=torch.float64), dim=-1)
        torch.testing.assert_close(eval_sh(rotate_sh(sh, R), d @ R.T), eval_sh(sh, d))


def test_activations_invert():
    x = torch.rand(100) * 0.98 + 0.01
    torch.testing.assert_close(torch.sigmoid(inverse_sigmoid(x)), x)
    torch.testing.assert_close(sh0_to_rgb(rgb_to_sh0(x)), x)


def test_arrays_round_trip_mask_and_cat():
    a = random_arrays(n=30, degree=2)
    g = Gaussians.from_arrays(a)
    back = g.to_arrays()
    np.testing.assert_array_equal(back.sh, a.sh)
    mask = g.opacities > 0.5
    sub = g[mask]
    assert len(sub) == int(mask.sum())
    low = Gaussians.from_arrays(random_arrays(n=5, degree=0))
    both = Gaussians.cat([sub, low])
    assert len(both) == len(sub) + 5 and both.sh.shape[1] == 9
    assert both.sh[len(sub):, 1:].abs().max() == 0


def test_transform_composes():
    g = Gaussians.from_arrays(random_arrays(n=20, degree=3)).to(torch.float64)
    R1, R2 = random_rotation(1), random_rotation(2)
    t1, t2 = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    two = g.transform(R1, t1, 2.0).transform(R2, t2, 0.5)
    one = g.transform(R2 @ R1, R2 @ t1 * 0.5 + t2, 1.0)
    torch.testing.assert_close(two.means, one.means)
    torch.testing.assert_close(two.sh, one.sh)
    q1, q2 = torch.nn.functional.normalize(two.quats, dim=-1), torch.nn.functional.normalize(one.quats, dim=-1)
    torch.testing.assert_close((q1 * q2).sum(-1).abs(), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(two.log_scales, g.log_scales)


def test_sequence_conversion(tmp_path):
    from fuse4d.core.cameras import orbit_cameras
    from fuse4d.core.io import read_sequence, write_sequence

    frames = [Gaussians.from_arrays(random_arrays(n=10, degree=0, seed=s)) for s in range(2)]
    seq = GaussianSequence(frames, fps=4.0, cameras=orbit_cameras(2, 2.0, width=32, height=32), corresponding=True)
    write_sequence(tmp_path / "s", seq.to_sequence4d())
    back = GaussianSequence.from_sequence4d(read_sequence(tmp_path / "s"))
    assert back.fps == 4.0 and len(back) == 2 and back.corresponding
    torch.testing.assert_close(back.cameras.viewmats, seq.cameras.viewmats)


def test_eval_sh_matches_gsplat_reference():
    """Same basis, order and signs as gsplat's pure-PyTorch spherical harmonics (runs on the CPU)."""
    from gsplat.cuda._torch_impl import _spherical_harmonics

    torch.manual_seed(1)
    for degree in range(4):
        sh = torch.randn(64, (degree + 1) ** 2, 3, dtype=torch.float64)
        d = torch.nn.functional.normalize(torch.randn(64, 3, dtype=torch.float64), dim=-1)
        torch.testing.assert_close(eval_sh(sh, d), _spherical_harmonics(degree, d, sh))


def test_rotate_sh_keeps_bands_and_identity():
    torch.manual_seed(2)
    sh = torch.randn(5, 16, 3, dtype=torch.float64)
    torch.testing.assert_close(rotate_sh(sh, torch.eye(3, dtype=torch.float64)), sh)
    rotated = rotate_sh(sh, random_rotation(3))
    torch.testing.assert_close(rotated[:, 0], sh[:, 0])  # DC is rotation invariant
    for l in range(4):  # each band keeps its energy (the band matrices are orthogonal)
        band = slice(l * l, (l + 1) ** 2)
        torch.testing.assert_close(rotated[:, band].square().sum(1), sh[:, band].square().sum(1))


def test_rotate_sh_is_differentiable_and_float32():
    sh = torch.randn(4, 9, 3, requires_grad=True)
    out = rotate_sh(sh, random_rotation(4).float())
    assert out.dtype == torch.float32
    out.square().sum().backward()
    assert sh.grad is not None and torch.isfinite(sh.grad).all()


def covariances(g):
    from fuse4d.core.gaussians import quat_to_matrix

    R = quat_to_matrix(g.quats)
    S = torch.diag_embed(g.scales)
    return R @ S @ S.transpose(1, 2) @ R.transpose(1, 2)


def test_transform_moves_covariances_and_view_dependent_colour():
    g = Gaussians.from_arrays(random_arrays(n=25, degree=3, seed=5)).to(torch.float64)
    R, t, s = random_rotation(6), torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), 1.7
    h = g.transform(R, t, s)
    torch.testing.assert_close(h.means, s * g.means @ R.T + t)
    torch.testing.assert_close(covariances(h), s * s * R @ covariances(g) @ R.T)
    torch.testing.assert_close(h.opacity_logits, g.opacity_logits)
    # A camera looking from direction d at the original sees what one looking from R d sees now.
    d = torch.nn.functional.normalize(torch.randn(25, 3, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(eval_sh(h.sh, d @ R.T), eval_sh(g.sh, d))


def test_transform_rejects_non_rotations():
    g = Gaussians.from_arrays(random_arrays(n=3, degree=0))
    with pytest.raises(ValueError, match="proper rotation"):
        g.transform(torch.diag(torch.tensor([1.0, 1.0, -1.0])), torch.zeros(3))
    with pytest.raises(ValueError, match="proper rotation"):
        g.transform(2 * torch.eye(3), torch.zeros(3))
    with pytest.raises(ValueError, match="positive"):
        g.transform(torch.eye(3), torch.zeros(3), 0.0)


def test_indexing_device_and_views_from_a_read_file(tmp_path):
    from fuse4d.core.io import read_ply, write_ply

    write_ply(tmp_path / "a.ply", random_arrays(n=40, degree=3, seed=7))
    g = Gaussians.from_arrays(read_ply(tmp_path / "a.ply"))
    assert all(getattr(g, name).is_contiguous() for name in ("means", "quats", "log_scales", "opacity_logits", "sh"))
    sub = g[torch.tensor([3, 1, 4])]
    torch.testing.assert_close(sub.means[1], g.means[1])
    assert len(g.to("cpu")) == 40 and g.to(torch.float64).means.dtype == torch.float64
    torch.testing.assert_close(g.colors_dc, 0.5 + 0.28209479177387814 * g.sh[:, 0])
    torch.testing.assert_close(g.rotations_normalized.norm(dim=-1), torch.ones(40))
    np.testing.assert_array_equal(g.to_arrays().sh, read_ply(tmp_path / "a.ply").sh)
