# SPDX-License-Identifier: GPL-3.0-or-later
"""One policy for NaN/inf/huge values (docs/reliability.md): found, counted, located and refused
with a clear error at every boundary (readers, writers, the renderer), never rendered as garbage;
degenerate cameras are refused by name."""
import json

import numpy as np
import pytest
import torch
from fuzz_targets import camera, small_arrays

from fuse4d.core.cameras import Cameras, cameras_from_dicts, cameras_from_json_text, orbit_cameras
from fuse4d.core.gaussians import Gaussians
from fuse4d.core.io import Sequence4D, write_ply, write_sequence, write_splat, write_spz
from fuse4d.core.render import render


def poisoned():
    a = small_arrays(n=50)
    a.means[4, 0] = np.nan
    a.log_scales[9, 1] = np.inf
    a.sh[9, 0, 2] = -np.inf
    return a


def test_nonfinite_values_are_located_and_counted():
    assert small_arrays().nonfinite() is None
    assert poisoned().nonfinite() == ("2 of 50 Gaussians hold NaN or infinite values "
                                      "(means 1, log_scales 1, sh 1; first: 4, 9)")
    assert Gaussians.from_arrays(poisoned()).nonfinite() == poisoned().nonfinite()


@pytest.mark.parametrize("write", [write_ply, write_splat, write_spz])
def test_writers_refuse_nonfinite_gaussians_and_write_nothing(tmp_path, write):
    with pytest.raises(ValueError, match="2 of 50 Gaussians .*first: 4, 9"):
        write(tmp_path / "out.bin", poisoned())
    with pytest.raises(ValueError, match="Gaussians hold NaN"):
        write_sequence(tmp_path / "seq", Sequence4D(frames=[small_arrays(), poisoned()]))
    assert not list(tmp_path.iterdir())


def test_splat_refuses_scales_that_overflow_float32(tmp_path):
    a = small_arrays()
    a.log_scales[0, 0] = 100.0  # finite as a log, infinite as a linear .splat scale
    with pytest.raises(ValueError, match="overflow"):
        write_splat(tmp_path / "a.splat", a)


def test_the_renderer_refuses_nonfinite_gaussians_and_degenerate_cameras():
    cams = orbit_cameras(2, 3.0, width=16, height=16)
    good = Gaussians.from_arrays(small_arrays())
    assert torch.isfinite(render(good, cams).rgb).all()
    with pytest.raises(ValueError, match="cannot render: 2 of 50 Gaussians"):
        render(Gaussians.from_arrays(poisoned()), cams)
    nan_cam = Cameras(cams.viewmats.clone(), cams.Ks.clone(), 16, 16)
    nan_cam.viewmats[1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="1 of 2 cameras hold NaN.*first: 1"):
        render(good, nan_cam)
    flat = Cameras(cams.viewmats.clone(), cams.Ks.clone(), 16, 16)
    flat.Ks[0, 0, 0] = 0.0
    with pytest.raises(ValueError, match="degenerate"):
        render(good, flat)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["K"][0].__setitem__(0, 0), "focal lengths must be positive"),
    (lambda c: c["K"][1].__setitem__(1, -40), "focal lengths must be positive"),
    (lambda c: c.__setitem__("viewmat", [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]), "singular"),
    (lambda c: c["viewmat"][3].__setitem__(3, 0), "last row"),
    (lambda c: c["K"][2].__setitem__(2, 0), "pinhole"),
    (lambda c: c["viewmat"][0].__setitem__(3, float("nan")), "finite"),
    (lambda c: c["K"][0].__setitem__(2, 1e400), "finite"),
    (lambda c: c.__setitem__("width", 0), "positive integer"),
    (lambda c: c.__setitem__("height", True), "positive integer"),
    (lambda c: c.pop("K"), "'K' must be a 3x3"),
])
def test_degenerate_cameras_get_a_clear_error(change, message):
    cams = [camera(0), camera(1)]
    change(cams[1])
    with pytest.raises(ValueError, match=f"camera 1: .*{message}"):
        cameras_from_dicts(cams)
    with pytest.raises(ValueError, match=message):  # the ComfyUI cameras_json input, NaN literal included
        cameras_from_json_text(json.dumps(cams))
    assert len(cameras_from_dicts([camera(0), camera(1)])) == 2
