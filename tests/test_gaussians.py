# SPDX-License-Identifier: GPL-3.0-or-later
import math

import numpy as np
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
