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


def test_blender_lens_and_sensor_to_intrinsics():
    from fuse4d.core.cameras import blender_lens_from_intrinsics, intrinsics_from_blender

    # Blender's default camera: 50 mm lens on a 36 mm sensor, horizontal FOV 2 atan(18/50) = 39.6 deg.
    K = intrinsics_from_blender(50.0, 1920, 1080)
    torch.testing.assert_close(K[0, 0], torch.tensor(50 / 36 * 1920))
    assert math.isclose(math.degrees(2 * math.atan(960 / float(K[0, 0]))), 39.5978, abs_tol=1e-3)
    torch.testing.assert_close(K[:2, 2], torch.tensor([960.0, 540.0]))
    # AUTO fit on a portrait image: the sensor width spans the (larger) height.
    Kp = intrinsics_from_blender(50.0, 1080, 1920)
    torch.testing.assert_close(Kp[1, 1], torch.tensor(50 / 36 * 1920))
    # VERTICAL fit uses the sensor height.
    Kv = intrinsics_from_blender(35.0, 640, 480, sensor_height=24.0, sensor_fit="VERTICAL")
    torch.testing.assert_close(Kv[1, 1], torch.tensor(35 / 24 * 480))
    # Off-centre principal point and non-square pixels survive a round trip.
    K2 = torch.tensor([[300.0, 0, 170.0], [0, 280.0, 110.0], [0, 0, 1]])
    settings = blender_lens_from_intrinsics(K2, 320, 240)
    back = intrinsics_from_blender(settings["lens"], 320, 240, settings["sensor_width"], 24.0,
                                   settings["sensor_fit"], settings["shift_x"], settings["shift_y"],
                                   settings["pixel_aspect_x"], settings["pixel_aspect_y"])
    torch.testing.assert_close(back, K2)
    try:
        intrinsics_from_blender(50.0, 10, 10, sensor_fit="DIAGONAL")
    except ValueError as e:
        assert "sensor_fit" in str(e)
    else:
        raise AssertionError("a bad sensor_fit must raise")


def test_blender_camera_with_defaults_left_out():
    # A camera as a Blender user sees it: at (0, -5, 0) in a z-up world, looking along +Y at the origin.
    m = [[1.0, 0, 0, 0], [0, 0, -1, -5.0], [0, 1, 0, 0], [0, 0, 0, 1]]  # rotation of 90 deg about X
    cams = from_blender([{"matrix_world": m, "lens": 50.0, "resolution": [64, 48]}])
    origin = torch.tensor([0.0, 0.0, 0.0, 1.0])
    p = cams.viewmats[0] @ origin
    torch.testing.assert_close(p[:3], torch.tensor([0.0, 0.0, 5.0]), atol=1e-5, rtol=0)  # in front, centred
    # Blender +Z (up) maps to image up: a point above the origin lands at a smaller pixel row.
    # With the default world mapping, Blender (x, y, z) is our (x, -z, y).
    above = cams.viewmats[0] @ torch.tensor([0.0, -1.0, 0.0, 1.0])
    assert above[1] < 0


def test_vggt_quaternion_order_and_batched_input():
    # A 90 degree rotation about z: quaternion (x, y, z, w) = (0, 0, sin 45, cos 45).
    view = torch.eye(4)
    view[:3, :3] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    cam = Cameras(view[None], torch.tensor([[[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]]), 64, 48)
    enc = to_vggt_pose_encoding(cam)
    s = math.sqrt(0.5)
    q = enc[0, 3:7] * torch.sign(enc[0, 6])
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, s, s]), atol=1e-6, rtol=0)
    # fov_h from fy and H, fov_w from fx and W.
    torch.testing.assert_close(enc[0, 7], torch.tensor(2 * math.atan(24 / 100)))
    torch.testing.assert_close(enc[0, 8], torch.tensor(2 * math.atan(32 / 100)))
    # VGGT hands out [batch, frames, 9].
    back = from_vggt_pose_encoding(enc[None].expand(2, 1, 9), 64, 48)
    assert len(back) == 2


def test_cameras_indexing_and_to():
    cams = orbit_cameras(4, 2.0, 10, width=32, height=24)
    assert len(cams[1]) == 1 and len(cams[-1]) == 1 and len(cams[1:3]) == 2
    torch.testing.assert_close(cams[-1].viewmats[0], cams.viewmats[3])
    torch.testing.assert_close(cams[torch.tensor([0, 2])].viewmats, cams.viewmats[[0, 2]])
    d = cams.to(torch.float64)
    assert d.viewmats.dtype == torch.float64 and d.width == 32 and d.height == 24


def test_orbit_arc_spacing_and_upright_images():
    cams = orbit_cameras(3, 2.0, 0, arc_deg=90, width=32, height=24)
    c = cams.centers
    cos = torch.nn.functional.cosine_similarity(c[0], c[2], dim=0)
    assert math.isclose(float(cos), math.cos(math.radians(90)), abs_tol=1e-5)  # ends span the arc
    single = orbit_cameras(1, 2.0, 30, arc_deg=90)
    assert len(single) == 1
    # Upright: the camera's "up" (-y in OpenCV camera space) points to world up (-y).
    for v in cams.viewmats:
        cam_up_in_world = -v[1, :3]
        assert float(cam_up_in_world @ torch.tensor([0.0, -1.0, 0.0])) > 0.9
