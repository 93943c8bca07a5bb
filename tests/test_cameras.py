# SPDX-License-Identifier: GPL-3.0-or-later
import math

import torch

from fuse4d.core.cameras import (Cameras, from_blender, from_vggt_pose_encoding, look_at, orbit_cameras,
                                 to_blender, to_vggt_pose_encoding)


def test_look_at_is_opencv():
    view = look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0))  # up is -y
    torch.testing.assert_close(view[:3, :3], torch.eye(3))
    torch.testing.assert_close(view[:3, 3], torch.tensor([0.0, 0.0, 3.0]))


def test_vggt_pose_encoding_round_trip():
    cams = orbit_cameras(4, 2.5, 10, arc_deg=90, width=518, height=350, fov_deg=55)
    enc = to_vggt_pose_encoding(cams)
    assert enc.shape == (4, 9)
    torch.testing.assert_close(enc[:, 7], torch.full((4,), math.radians(55)), atol=1e-5, rtol=0)
    back = from_vggt_pose_encoding(enc, 518, 350)
    torch.testing.assert_close(back.viewmats, cams.viewmats, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.Ks, cams.Ks, atol=1e-3, rtol=1e-5)
    # identity camera: zero translation, quaternion (0, 0, 0, 1) in x y z w order
    ident = Cameras(torch.eye(4)[None], cams.Ks[:1], 518, 350)
    torch.testing.assert_close(to_vggt_pose_encoding(ident)[0, :7], torch.tensor([0, 0, 0, 0, 0, 0, 1.0]))


def test_blender_round_trip_and_axes():
    cams = orbit_cameras(3, 2.0, 30, width=64, height=48, fov_deg=40)
    items = to_blender(cams)
    back = from_blender(items)
    torch.testing.assert_close(back.viewmats, cams.viewmats, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.Ks, cams.Ks, atol=1e-4, rtol=1e-5)
    # In Blender (z up) an elevated camera is above the target and looks down its local -Z.
    m = torch.tensor(items[0]["matrix_world"])
    assert m[2, 3] > 0
    forward = -m[:3, 2]
    torch.testing.assert_close(forward, torch.nn.functional.normalize(-m[:3, 3], dim=0), atol=1e-5, rtol=0)
