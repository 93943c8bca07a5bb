# SPDX-License-Identifier: GPL-3.0-or-later
"""The Blender add-on, headless with the PyPI `bpy`: the built zip is unpacked and registered
once (module scope), so these tests run the code exactly as users install it (bundled formats)."""
import importlib
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="Blender as a Python module (pip install bpy==4.5.*) is not installed")
from plyfile import PlyData, PlyElement  # noqa: E402

import debian_packages  # noqa: E402
from conftest import random_arrays  # noqa: E402
from fuse4d.blender_addon import build  # noqa: E402
from fuse4d.core.io import Sequence4D, read_glb, read_ply, write_ply, write_sequence  # noqa: E402
from conftest_comfy import comfy_server  # noqa: E402,F401 (fixture: the session's real ComfyUI server)

PKG = "fuse4d_blender_under_test"


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    root = tmp_path_factory.mktemp("addon")
    zip_path = build.build(root / "dist")
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        zf.extractall(root / "pkgs" / PKG)
    assert "blender_manifest.toml" in names and "_splatio/ply.py" in names
    sys.path.insert(0, str(root / "pkgs"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    module = importlib.import_module(PKG)
    module.register()
    splatio = importlib.import_module(f"{PKG}.splatio")
    assert splatio.read_ply.__module__ == f"{PKG}._splatio.ply"  # the bundled copy, not fuse4d.core.io
    yield module
    module.unregister()
    sys.path.remove(str(root / "pkgs"))


def sub(name):
    return importlib.import_module(f"{PKG}.{name}")


def inria_plyfile(path, a):
    """An INRIA-layout PLY written by plyfile (an independent writer)."""
    n = len(a)
    rest = a.sh[:, 1:].transpose(0, 2, 1).reshape(n, -1)
    cols = {"x": a.means[:, 0], "y": a.means[:, 1], "z": a.means[:, 2],
            "nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n)}
    cols.update({f"f_dc_{c}": a.sh[:, 0, c] for c in range(3)})
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])})
    cols["opacity"] = a.opacity_logits
    cols.update({f"scale_{i}": a.log_scales[:, i] for i in range(3)})
    cols.update({f"rot_{i}": a.quats[:, i] for i in range(4)})
    data = np.empty(n, [(name, "f4") for name in cols])
    for name, col in cols.items():
        data[name] = col
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    return cols


def attribute(pc, name, width=1):
    attr = pc.attributes[name]
    out = np.empty(len(pc.points) * width, np.float32 if attr.data_type != "INT" else np.int32)
    attr.data.foreach_get("vector" if attr.data_type == "FLOAT_VECTOR" else "value", out)
    return out.reshape(-1, width) if width > 1 else out


def evaluated_points(obj):
    """Positions after the Time modifier (the display modifier switched off to see points)."""
    disp = obj.modifiers["Fuse4D Splats"]
    disp.show_viewport = False
    try:
        dg = bpy.context.evaluated_depsgraph_get()
        pc = obj.evaluated_get(dg).data
        return attribute(pc, "position", 3) if len(pc.points) else np.zeros((0, 3), np.float32)
    finally:
        disp.show_viewport = True


def test_import_ply_equals_file(addon, tmp_path):
    a = random_arrays(500, degree=3, seed=1)
    cols = inria_plyfile(tmp_path / "capture.ply", a)
    assert bpy.ops.fuse4d.import_ply(filepath=str(tmp_path / "capture.ply")) == {"FINISHED"}
    obj = bpy.data.objects["capture"]
    pc = obj.data
    assert obj.type == "POINTCLOUD" and len(pc.points) == 500
    np.testing.assert_array_equal(attribute(pc, "position", 3), np.stack([cols["x"], cols["y"], cols["z"]], 1))
    np.testing.assert_array_equal(attribute(pc, "scale", 3), np.stack([cols[f"scale_{i}"] for i in range(3)], 1))
    np.testing.assert_array_equal(attribute(pc, "rot", 4), np.stack([cols[f"rot_{i}"] for i in range(4)], 1))
    np.testing.assert_array_equal(attribute(pc, "opacity"), cols["opacity"])
    np.testing.assert_array_equal(attribute(pc, "f_dc", 3), np.stack([cols[f"f_dc_{c}"] for c in range(3)], 1))
    for i in range(45):
        np.testing.assert_array_equal(attribute(pc, f"f_rest_{i}"), cols[f"f_rest_{i}"])
    # The OpenCV -> Blender axis change is the object's transform: OpenCV up (-y) is Blender up (+z).
    up = np.array(obj.matrix_world)[:3, :3] @ np.array([0.0, -1.0, 0.0])
    np.testing.assert_allclose(up, [0, 0, 1], atol=1e-6)
    # Displayed as one ellipsoid per Gaussian: realised into one mesh in the viewport (Solid Colors,
    # see test_solid_view_shows_the_splat_colours), instances without it (as renders are).
    assert len(solid_view_mesh(obj).vertices) == 500 * 42
    sub("nodes").set_input(obj.modifiers["Fuse4D Splats"], "Solid Colors", False)
    obj.update_tag()
    dg = bpy.context.evaluated_depsgraph_get()
    assert sum(1 for inst in dg.object_instances if inst.is_instance and inst.parent == obj.evaluated_get(dg)) == 500


def solid_view_mesh(obj):
    """The mesh the viewport draws for a splat object (its Geometry Nodes output, evaluated)."""
    dg = bpy.context.evaluated_depsgraph_get()
    meshes = [inst.object.data for inst in dg.object_instances
              if inst.object.type == "MESH" and inst.parent == obj.evaluated_get(dg)]
    assert len(meshes) == 1, f"{len(meshes)} meshes drawn for {obj.name}: not one realised mesh"
    return meshes[0]


def solid_view_colors(obj, count):
    """Per drawn splat, the colour Solid view's Attribute colour type shows: the evaluated mesh's
    active colour attribute (what the workbench reads), a colour type, one value per splat."""
    mesh = solid_view_mesh(obj)
    name = mesh.attributes.active_color_name
    assert name and name in mesh.color_attributes, f"no active colour attribute on {obj.name}'s drawn mesh"
    attr = mesh.color_attributes[name]
    assert attr.data_type in ("FLOAT_COLOR", "BYTE_COLOR") and attr.domain in ("POINT", "CORNER")
    size = len(mesh.vertices) if attr.domain == "POINT" else len(mesh.loops)
    values = np.empty(size * 4, np.float32)
    attr.data.foreach_get("color", values)
    per_splat = values.reshape(count, -1, 4)  # the realised ellipsoids, one block of elements each
    np.testing.assert_array_equal(per_splat, np.repeat(per_splat[:, :1], per_splat.shape[1], axis=1))
    return per_splat[:, 0, :3]


def test_solid_view_shows_the_splat_colours(addon, tmp_path):
    """Issue 12: right after import, Solid view shows each splat's colour (0.5 + C0 f_dc), for a
    static PLY and a sequence: the 3D views' Solid colour is set to Attribute (reported), and the
    mesh drawn carries the colours as its active colour attribute."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    views = [space.shading for screen in bpy.data.screens for area in screen.areas for space in area.spaces
             if space.type == "VIEW_3D"]
    assert views and any(v.color_type == "MATERIAL" for v in views)  # Blender's default: one flat colour
    for v in views:
        v.color_type = "MATERIAL"
    a = random_arrays(120, degree=1, seed=21)
    inria_plyfile(tmp_path / "c.ply", a)
    assert bpy.ops.fuse4d.import_ply(filepath=str(tmp_path / "c.ply")) == {"FINISHED"}
    obj = bpy.data.objects["c"]
    assert all(v.color_type == "VERTEX" for v in views)  # 'VERTEX' is the UI's "Attribute"
    assert "Solid view colour Material -> Attribute" in obj["fuse4d_scene_changes"]
    assert sub("nodes").get_input(obj.modifiers["Fuse4D Splats"], "Solid Colors")  # static: on
    c0 = sub("splatio").SH_C0
    np.testing.assert_allclose(solid_view_colors(obj, 120), 0.5 + c0 * a.sh[:, 0], atol=1e-6)

    frames = make_sequence(tmp_path, counts=(30, 45), fps=24.0)
    seq = sub("importer").import_sequence(tmp_path / "seq", name="solid_seq", frame_start=1)
    assert seq["fuse4d_scene_changes"] == ""  # the views already show attributes
    # A small sequence (largest timestep <= SOLID_COLORS_MAX_SPLATS) keeps Solid Colors on, no note.
    assert sub("nodes").get_input(seq.modifiers["Fuse4D Splats"], "Solid Colors") and not seq["fuse4d_import_note"]
    for frame, f in ((1, frames[0]), (2, frames[1])):
        bpy.context.scene.frame_set(frame)
        np.testing.assert_allclose(solid_view_colors(seq, len(f)), 0.5 + c0 * f.sh[:, 0], atol=1e-6)
    # Points display: a point cloud, which Solid view draws in one colour (documented).
    sub("nodes").set_input(seq.modifiers["Fuse4D Splats"], "Ellipsoids", False)
    seq.update_tag()
    dg = bpy.context.evaluated_depsgraph_get()
    assert len(seq.evaluated_get(dg).data.points) == len(frames[1])
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_large_sequence_starts_with_solid_colors_off(addon, tmp_path, monkeypatch, capfd):
    """Issue 12: realising Solid Colors' viewport mesh costs time at every frame change, so a
    sequence whose largest timestep has more than SOLID_COLORS_MAX_SPLATS Gaussians imports with it
    off (instances drawn, as with the switch off) and the report line says so; the panel toggle turns
    it back on. A static PLY keeps it on whatever its size (the threshold is lowered to 40 here)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer, nodes = sub("importer"), sub("nodes")
    monkeypatch.setattr(importer, "SOLID_COLORS_MAX_SPLATS", 40)
    frames = make_sequence(tmp_path, counts=(30, 45), fps=24.0)
    capfd.readouterr()
    assert bpy.ops.fuse4d.import_sequence(filepath=str(tmp_path / "seq" / "manifest.json")) == {"FINISHED"}
    report = capfd.readouterr()
    obj = bpy.context.view_layer.objects.active
    mod = obj.modifiers["Fuse4D Splats"]
    assert nodes.get_input(mod, "Solid Colors") is False
    note = "Solid Colors off for playback speed (45 splats per timestep); turn on in the Fuse4D panel"
    assert obj["fuse4d_import_note"] == note
    assert f"{obj.name}: 2 timesteps" in report.out + report.err and note in report.out + report.err
    for frame, f in ((1, frames[0]), (2, frames[1])):  # instanced ellipsoids, nothing realised
        bpy.context.scene.frame_set(frame)
        dg = bpy.context.evaluated_depsgraph_get()
        drawn = [inst.is_instance for inst in dg.object_instances if inst.parent == obj.evaluated_get(dg)]
        assert len(drawn) == len(f) and all(drawn)
    nodes.set_input(mod, "Solid Colors", True)  # the panel's toggle
    obj.update_tag()
    c0 = sub("splatio").SH_C0
    np.testing.assert_allclose(solid_view_colors(obj, len(frames[1])), 0.5 + c0 * frames[1].sh[:, 0], atol=1e-6)

    inria_plyfile(tmp_path / "big.ply", random_arrays(60, degree=0, seed=3))  # static, above 40: still on
    assert bpy.ops.fuse4d.import_ply(filepath=str(tmp_path / "big.ply")) == {"FINISHED"}
    static = bpy.data.objects["big"]
    assert nodes.get_input(static.modifiers["Fuse4D Splats"], "Solid Colors") is True
    assert "Solid Colors off" not in capfd.readouterr().out
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_export_import_round_trip(addon, tmp_path):
    a = random_arrays(300, degree=1, seed=2)
    inria_plyfile(tmp_path / "src.ply", a)
    obj = sub("importer").import_ply(tmp_path / "src.ply", name="rt")
    with bpy.context.temp_override(object=obj, active_object=obj):
        assert bpy.ops.fuse4d.export_ply(filepath=str(tmp_path / "out.ply")) == {"FINISHED"}
    back = read_ply(tmp_path / "out.ply")
    for field in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(back, field), getattr(a, field))
    again = sub("importer").import_ply(tmp_path / "out.ply", name="rt2")
    np.testing.assert_array_equal(attribute(again.data, "rot", 4), a.quats)


def make_sequence(tmp_path, counts=(40, 55, 70, 85), fps=12.5):
    frames = [random_arrays(n, degree=0, seed=10 + t) for t, n in enumerate(counts)]
    write_sequence(tmp_path / "seq", Sequence4D(frames=frames, fps=fps, views=2))
    return frames


def test_sequence_shows_one_timestep_per_frame(addon, tmp_path):
    frames = make_sequence(tmp_path)
    scene = bpy.context.scene
    assert bpy.ops.fuse4d.import_sequence(filepath=str(tmp_path / "seq" / "manifest.json"), frame_start=5,
                                          set_scene=True) == {"FINISHED"}
    obj = bpy.data.objects["seq"]
    assert scene.frame_start == 5 and scene.frame_end == 8
    assert scene.render.fps / scene.render.fps_base == pytest.approx(12.5)
    expected = {3: 0, 4: 0, 5: 0, 6: 1, 7: 2, 8: 3, 9: 3, 20: 3}  # HOLD before and after
    for frame, t in expected.items():
        scene.frame_set(frame)
        np.testing.assert_array_equal(evaluated_points(obj), frames[t].means, err_msg=f"frame {frame}")
    bpy.data.objects.remove(obj)


def test_sequence_loop(addon, tmp_path):
    frames = make_sequence(tmp_path, counts=(10, 20, 30))
    obj = sub("importer").import_sequence(tmp_path / "seq", name="loop", frame_start=1, mode="LOOP")
    for frame, t in {1: 0, 3: 2, 4: 0, 5: 1, 9: 2}.items():
        bpy.context.scene.frame_set(frame)
        assert len(evaluated_points(obj)) == len(frames[t]), f"frame {frame}"
    bpy.data.objects.remove(obj)


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def render_sample_at_default_settings(tmp_path, engine, set_samples, size=64):
    """The sample scene imported with the default options into a factory scene and rendered as the
    scene is (only camera, resolution and samples set here), with the core rasterizer's image of
    the same camera: (render, reference), both (size, size, 3) in [0, 1]."""
    torch = pytest.importorskip("torch")
    from fuse4d.core.cameras import orbit_cameras, to_blender
    from fuse4d.core.gaussians import Gaussians
    from fuse4d.core.render import render
    from fuse4d.core.scene import sample_scene

    arrays = sample_scene(0).to_arrays()
    arrays.sh[:, 1:] = 0  # the material shows the view-independent colour
    write_ply(tmp_path / "scene.ply", arrays)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    assert scene.cycles.transparent_max_bounces < 256  # the factory default that renders splats black
    assert bpy.ops.fuse4d.import_ply(filepath=str(tmp_path / "scene.ply")) == {"FINISHED"}
    assert scene.cycles.transparent_max_bounces == 256 and scene.view_settings.view_transform == "Standard"
    cams = orbit_cameras(1, radius=6.0, elevation_deg=25, width=size, height=size)
    with torch.no_grad():
        ref = render(Gaussians.from_arrays(arrays), cams).rgb[0].clamp(0, 1).numpy()
    item = to_blender(cams)[0]
    data = bpy.data.cameras.new("ref")
    data.lens, data.sensor_width, data.sensor_fit = item["lens"], item["sensor_width"], "HORIZONTAL"
    cam = bpy.data.objects.new("ref", data)
    scene.collection.objects.link(cam)
    from mathutils import Matrix
    cam.matrix_world = Matrix(item["matrix_world"])
    scene.camera = cam
    r = scene.render
    r.engine, r.resolution_x, r.resolution_y, r.resolution_percentage = engine, size, size, 100
    r.filepath, r.image_settings.file_format = str(tmp_path / "render.png"), "PNG"
    set_samples(scene)
    try:
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(str(tmp_path / "render.png"))
        return np.array(img.pixels[:], np.float32).reshape(size, size, 4)[::-1, :, :3], ref
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)


def test_cycles_render_at_default_settings_resembles_core_renderer(addon, tmp_path):
    """The importer must have set what splats need: Cycles at the scene's defaults."""
    px, ref = render_sample_at_default_settings(tmp_path, "CYCLES",
                                                lambda scene: setattr(scene.cycles, "samples", 8))
    assert px.std() > 0.05  # not blank
    # Measured ~24.5 dB (gamma-2.2 decode vs exact sRGB and the facing-ratio falloff explain the gap).
    assert psnr(px, ref) > 18.0
    assert psnr(px, np.zeros_like(ref)) < psnr(px, ref)


# EEVEE needs an OpenGL 4.3 context; headless (no display, no GPU) Blender gets one through EGL from
# Mesa: libglvnd's libEGL, Mesa's EGL vendor (pulls libgbm1) and llvmpipe (software, GL 4.5).
EEVEE_PACKAGES = ("libegl1", "libegl-mesa0", "libgl1-mesa-dri")
EEVEE_PROBE = textwrap.dedent("""
    import bpy, gpu
    bpy.ops.wm.read_factory_settings(use_empty=False)  # the default cube, light and camera
    r = bpy.context.scene.render
    ids = {e.identifier for e in r.bl_rna.properties["engine"].enum_items}
    r.engine = "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in ids else "BLENDER_EEVEE"
    r.resolution_x = r.resolution_y = 8
    bpy.context.scene.eevee.taa_render_samples = 1
    bpy.ops.render.render()
    print("OpenGL:", gpu.platform.renderer_get(), gpu.platform.version_get())
""")


def eevee_context_or_skip():
    """Installs Mesa's EGL and software OpenGL when missing (Debian, as root), then renders a tiny
    EEVEE frame in a child process, since without an EGL vendor Blender aborts the whole process
    (epoxy's "Couldn't find current GLX or EGL context"). Skips (with why) only when the packages
    are missing and cannot be installed; with them installed a failing probe fails the test."""
    debian = debian_packages.is_debian()
    why = debian_packages.ensure(*EEVEE_PACKAGES) if debian else None
    if why is not None:
        pytest.skip(f"EEVEE needs an OpenGL context: {why}")
    proc = subprocess.run([sys.executable, "-c", EEVEE_PROBE], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "OpenGL:" not in proc.stdout:
        if not debian:  # no package names to give: say what is wanted
            pytest.skip(f"EEVEE gets no OpenGL context here (wants Mesa's EGL and llvmpipe):\n{out[-1500:]}")
        pytest.fail(f"EEVEE gets no OpenGL context with {' '.join(EEVEE_PACKAGES)} installed:\n{out[-3000:]}")
    print(next(line for line in proc.stdout.splitlines() if line.startswith("OpenGL:")))


def test_eevee_render_at_default_settings_resembles_core_renderer(addon, tmp_path):
    """As the Cycles test, with EEVEE (software OpenGL where there is no GPU): the importer must have
    set what splats need in EEVEE too (the material's dithered transparency)."""
    eevee_context_or_skip()
    compat = sub("compat")
    px, ref = render_sample_at_default_settings(tmp_path, compat.eevee_engine(),
                                                lambda scene: setattr(scene.eevee, "taa_render_samples", 8))
    print(f"EEVEE PSNR {psnr(px, ref):.2f} dB")
    assert px.std() > 0.05  # not blank
    # Measured 22.8 dB at 8 samples (22.9 at 16) on Mesa's llvmpipe; the Cycles gaps plus dithering noise.
    assert psnr(px, ref) > 18.0
    assert psnr(px, np.zeros_like(ref)) < psnr(px, ref)


def test_import_can_leave_the_scene_untouched(addon, tmp_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    solid = [space.shading for screen in bpy.data.screens for area in screen.areas for space in area.spaces
             if space.type == "VIEW_3D"]
    before = (scene.cycles.transparent_max_bounces, scene.view_settings.view_transform,
              [v.color_type for v in solid])
    inria_plyfile(tmp_path / "a.ply", random_arrays(20, degree=0))
    assert bpy.ops.fuse4d.import_ply(filepath=str(tmp_path / "a.ply"), adjust_scene=False) == {"FINISHED"}
    assert (scene.cycles.transparent_max_bounces, scene.view_settings.view_transform,
            [v.color_type for v in solid]) == before
    obj = bpy.data.objects["a"]
    assert bpy.context.view_layer.objects.active == obj and obj.select_get()  # ready for Export


def test_sequence_retimed_to_the_scene_fps(addon, tmp_path):
    frames = make_sequence(tmp_path, counts=(10, 20, 30), fps=8.0)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base, scene.frame_end = 24, 1.0, 250
    obj = sub("importer").import_sequence(tmp_path / "seq", name="retimed", frame_start=1)
    assert (scene.render.fps, scene.render.fps_base, scene.frame_end) == (24, 1.0, 250)  # scene untouched
    for frame, t in {1: 0, 3: 0, 4: 1, 6: 1, 7: 2, 9: 2, 40: 2}.items():  # 3 scene frames per timestep
        scene.frame_set(frame)
        assert len(evaluated_points(obj)) == len(frames[t]), f"frame {frame}"
    bpy.data.objects.remove(obj)
    unretimed = sub("importer").import_sequence(tmp_path / "seq", name="per_frame", retime=False)
    scene.frame_set(3)
    assert len(evaluated_points(unretimed)) == len(frames[2])
    bpy.data.objects.remove(unretimed)


def test_interpolation_between_corresponding_timesteps(addon, tmp_path):
    base = random_arrays(40, degree=0, seed=3)
    frames = []
    for t in range(3):
        f = base.subset(slice(None))
        f.means = base.means + np.float32(t)
        f.log_scales = base.log_scales + np.float32(0.5 * t)
        f.quats = base.quats if t != 1 else -base.quats * 2  # same rotation, other sign and norm
        frames.append(f)
    write_sequence(tmp_path / "corr", Sequence4D(frames=frames, fps=24.0, corresponding=True))
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    obj = sub("importer").import_sequence(tmp_path / "corr", name="blend", frame_start=1, interpolate=True)
    for frame, t in ((1, 0.0), (2, 1.0), (1.5, 0.5), (2.25, 1.25), (3, 2.0), (7, 2.0)):
        scene.frame_set(int(frame), subframe=frame - int(frame))
        np.testing.assert_allclose(evaluated_points(obj), base.means + np.float32(t), atol=1e-5, err_msg=f"frame {frame}")
    disp = obj.modifiers["Fuse4D Splats"]
    disp.show_viewport = False
    scene.frame_set(1, subframe=0.5)
    pc = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    np.testing.assert_allclose(attribute(pc, "scale", 3), base.log_scales + 0.25, atol=1e-5)
    rot = attribute(pc, "rot", 4)
    unit = base.quats / np.linalg.norm(base.quats, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(np.sum(rot / np.linalg.norm(rot, axis=1, keepdims=True) * unit, 1)), 1, atol=1e-4)
    disp.show_viewport = True
    bpy.data.objects.remove(obj)
    make_sequence(tmp_path, counts=(5, 6))
    with pytest.raises(ValueError, match="corresponding"):
        sub("importer").import_sequence(tmp_path / "seq", interpolate=True)


def test_folder_of_numbered_plys_without_manifest(addon, tmp_path):
    frames = [random_arrays(n, degree=0, seed=n) for n in (11, 12, 13)]
    for t, f in enumerate(frames):
        write_ply(tmp_path / "plys" / f"capture_{t + 1}.ply", f)
    assert bpy.ops.fuse4d.import_sequence(filepath=str(tmp_path / "plys" / "capture_2.ply"), fps=6.0,
                                          set_scene=True) == {"FINISHED"}
    obj = bpy.data.objects["plys"]
    assert obj["fuse4d_timesteps"] == 3 and obj["fuse4d_fps"] == 6.0
    scene = bpy.context.scene
    scene.frame_set(2)
    np.testing.assert_array_equal(evaluated_points(obj), frames[1].means)
    bpy.data.objects.remove(obj)


def test_failed_import_leaves_nothing_behind(addon, tmp_path):
    make_sequence(tmp_path, counts=(5, 6))
    kinds = ("objects", "pointclouds", "meshes", "node_groups", "actions")
    before = {k: len(getattr(bpy.data, k)) for k in kinds}
    seq = sub("splatio").read_sequence(tmp_path / "seq")
    with pytest.raises(ValueError, match="mode"):  # fails after the object and its keys were made
        sub("importer").sequence_object(seq, "half", mode="SIDEWAYS")
    assert {k: len(getattr(bpy.data, k)) for k in kinds} == before
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\nend_header\n")
    with pytest.raises(RuntimeError, match="bad.ply"):  # the operator's one-line ERROR report
        bpy.ops.fuse4d.import_ply(filepath=str(tmp_path / "bad.ply"))
    assert {k: len(getattr(bpy.data, k)) for k in kinds} == before


def test_crop_filter_and_export_with_modifiers_and_transform(addon, tmp_path):
    a = random_arrays(2000, degree=1, seed=8)
    a.means[:] = np.random.default_rng(0).uniform(-1, 1, (2000, 3))
    inria_plyfile(tmp_path / "crop.ply", a)
    obj = sub("importer").import_ply(tmp_path / "crop.ply", name="crop")
    nodes = sub("nodes")
    nodes.add_crop(obj, sphere=False, center=(0, 0, 0), size=(0.5, 1.0, 1.0), min_opacity=0.3)
    keep = (np.abs(a.means[:, 0]) <= 0.5) & (1 / (1 + np.exp(-a.opacity_logits)) >= 0.3)
    assert 0 < keep.sum() < 2000
    assert [m.name for m in obj.modifiers] == ["Fuse4D Crop", "Fuse4D Splats"]
    with bpy.context.temp_override(object=obj, active_object=obj):
        assert bpy.ops.fuse4d.export_ply(filepath=str(tmp_path / "cropped.ply")) == {"FINISHED"}
    back = read_ply(tmp_path / "cropped.ply")
    order = np.lexsort(back.means.T)
    want = a.subset(keep)
    np.testing.assert_array_equal(back.means[order], want.means[np.lexsort(want.means.T)])
    # Sphere, inverted: the outside of a radius-0.6 ball.
    nodes.add_crop(obj, sphere=True, size=(0.6, 0, 0), invert=True)
    assert len(sub("importer").evaluated_splats(obj)) == int((np.linalg.norm(a.means, axis=1) > 0.6).sum())
    # Apply Transform: the object moved by the user (on top of the import's axis change).
    obj.modifiers.remove(obj.modifiers["Fuse4D Crop"])
    obj.location = (1.0, 2.0, 3.0)
    obj.rotation_euler[2] += 0.5
    obj.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    sub("importer").export_ply(obj, tmp_path / "moved.ply", apply_transform=True)
    moved = read_ply(tmp_path / "moved.ply")
    convert = sub("convert")
    world = convert.OPENCV_TO_BLENDER @ np.c_[moved.means, np.ones(len(moved))].T  # back into Blender's world
    np.testing.assert_allclose(world[:3].T, (np.array(obj.matrix_world) @ np.c_[a.means, np.ones(2000)].T)[:3].T,
                               atol=1e-4)
    np.testing.assert_allclose(moved.log_scales, a.log_scales + np.log(2.0), atol=1e-5)
    obj.scale = (1.0, 2.0, 1.0)
    bpy.context.view_layer.update()
    with pytest.raises(ValueError, match="not uniform"):
        sub("importer").export_ply(obj, tmp_path / "skew.ply", apply_transform=True)
    assert not (tmp_path / "skew.ply").exists()
    bpy.data.objects.remove(obj)


def test_usd_and_gltf_export_and_import(addon, tmp_path):
    pytest.importorskip("pxr", reason="usd-core is not installed")
    from pxr import Usd

    frames = make_sequence(tmp_path, counts=(15, 25), fps=10.0)
    obj = sub("importer").import_sequence(tmp_path / "seq", name="anim")
    with bpy.context.temp_override(object=obj, active_object=obj):
        assert bpy.ops.fuse4d.export_sequence(filepath=str(tmp_path / "anim"), file_format=".usdc") == {"FINISHED"}
    stage = Usd.Stage.Open(str(tmp_path / "anim.usdc"))  # read back with OpenUSD itself
    attr = stage.GetDefaultPrim().GetAttribute("positions") or stage.GetDefaultPrim().GetAttribute("points")
    assert attr.GetTimeSamples() == [0.0, 1.0] and stage.GetTimeCodesPerSecond() == 10.0
    assert bpy.ops.fuse4d.import_sequence(filepath=str(tmp_path / "anim.usdc"), set_scene=True) == {"FINISHED"}
    back = bpy.data.objects["anim.001"] if "anim.001" in bpy.data.objects else bpy.context.view_layer.objects.active
    assert back["fuse4d_timesteps"] == 2 and back["fuse4d_fps"] == 10.0
    bpy.context.scene.frame_set(bpy.context.scene.frame_start + 1)
    np.testing.assert_array_equal(evaluated_points(back), frames[1].means)
    with bpy.context.temp_override(object=back, active_object=back):
        assert bpy.ops.fuse4d.export_ply(filepath=str(tmp_path / "t1"), file_format=".glb") == {"FINISHED"}
    np.testing.assert_array_equal(read_glb(tmp_path / "t1.glb").means, frames[1].means)
    for o in (obj, back):
        bpy.data.objects.remove(o)


def test_whole_sequence_export(addon, tmp_path):
    frames = make_sequence(tmp_path, counts=(30, 40, 50), fps=12.5)
    obj = sub("importer").import_sequence(tmp_path / "seq", name="whole")
    sub("nodes").add_crop(obj, size=(0.8, 1e4, 1e4))
    with bpy.context.temp_override(object=obj, active_object=obj):
        assert bpy.ops.fuse4d.export_sequence(filepath=str(tmp_path / "out")) == {"FINISHED"}
    back = sub("splatio").read_sequence(tmp_path / "out")
    assert back.fps == 12.5 and len(back) == 3
    for got, want in zip(back.frames, frames):
        assert len(got) == int((np.abs(want.means[:, 0]) <= 0.8).sum())
    bpy.data.objects.remove(obj)


FAKE_BACKEND = textwrap.dedent('''
    """A tiny stand-in for `python -m fuse4d animate-scene`: reads the job, answers with T timesteps of
    the source Gaussians drifting along +x, expressed in a DIFFERENT world (scaled 2x and shifted),
    with the cameras in that world too, so the add-on has to align the result."""
    import argparse, json, sys, time
    from pathlib import Path
    import numpy as np
    from fuse4d.core.io import Sequence4D, read_ply, write_sequence
    p = argparse.ArgumentParser()
    p.add_argument("--job"); p.add_argument("--out"); p.add_argument("--sleep", type=float, default=0)
    a = p.parse_args()
    job = json.loads((Path(a.job) / "cameras.json").read_text())
    assert len(list((Path(a.job) / "views").glob("*.png"))) == job["views"]
    src = read_ply(Path(a.job) / job["source"])
    S = np.diag([2.0, 2.0, 2.0, 1.0]); S[:3, 3] = [1.0, -3.0, 0.5]   # job world -> back-end world
    frames = []
    for t in range(job["frames"]):
        print(f"progress {t / job['frames']:.2f} timestep {t}", flush=True)
        time.sleep(a.sleep)
        f = src.subset(slice(None))
        f.means = ((src.means + [0.1 * t, 0, 0]) * 2.0 + S[:3, 3]).astype(np.float32)
        f.log_scales = (src.log_scales + np.log(2.0)).astype(np.float32)
        frames.append(f)
    cams = [dict(c, viewmat=(np.array(c["viewmat"]) @ np.linalg.inv(S)).tolist()) for c in job["cameras"]]
    for c in cams:   # a world-to-camera with scale: renormalise the rotation rows, keep the centre
        m = np.array(c["viewmat"]); r = m[:3, :3] * 2.0; centre = -np.linalg.inv(m[:3, :3]) @ m[:3, 3]
        m[:3, :3] = r; m[:3, 3] = -r @ centre; c["viewmat"] = m.tolist()
    write_sequence(a.out, Sequence4D(frames=frames, fps=job["fps"], views=job["views"], cameras=cams))
''')


@pytest.fixture
def captured(addon, tmp_path):
    """A small source splat object, moved/rotated/scaled by the user, with a 3-camera rig."""
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    a = random_arrays(200, degree=0, seed=5)
    a.log_scales[:] = -3.0
    inria_plyfile(tmp_path / "room.ply", a)
    obj = sub("importer").import_ply(tmp_path / "room.ply", name="room")
    obj.location = (1.0, 2.0, 0.5)
    obj.rotation_euler[2] = 0.3
    obj.scale = (1.5, 1.5, 1.5)
    bpy.context.view_layer.update()
    bpy.context.scene.fuse4d.source = obj
    assert bpy.ops.fuse4d.create_rig(views=3, arc=90.0) == {"FINISHED"}
    assert len(sub("rig").rig_cameras(obj)) == 3
    script = tmp_path / "fake_backend.py"
    script.write_text(FAKE_BACKEND)
    return obj, a, script


def run_job(job, limit=600):
    for _ in range(limit):
        if job.step() in ("DONE", "CANCELLED", "FAILED"):
            return job.state
        time.sleep(0.05)
    raise AssertionError(f"job stuck in {job.state}: {job.message}")


def test_animate_with_local_cli_backend(captured, tmp_path):
    obj, a, script = captured
    backends, animate = sub("backends"), sub("animate")
    backend = backends.LocalCLIBackend(sys.executable, [str(script)])
    job = animate.AnimateJob(obj, backend, tmp_path / "job", frames=3, fps=6.0, width=32, height=32, samples=2)
    assert run_job(job) == "DONE", job.message
    spec = backends.read_job(tmp_path / "job")
    assert spec["views"] == 3 and all((tmp_path / "job" / c["image"]).exists() for c in spec["cameras"])
    result = job.result
    assert result.name == "room animated" and result["fuse4d_timesteps"] == 3
    # Timestep t in Blender's world = source transform applied to (source means + 0.1 t x).
    world = np.array(result.matrix_world)
    src_world = np.array(obj.matrix_world)
    start = bpy.context.scene.frame_current
    for t in range(3):
        bpy.context.scene.frame_set(start + t)
        pts = evaluated_points(result)
        got = pts @ world[:3, :3].T + world[:3, 3]
        want = (a.means + [0.1 * t, 0, 0]) @ src_world[:3, :3].T + src_world[:3, 3]
        np.testing.assert_allclose(got, want, atol=1e-4)


def scene_snapshot():
    scene = bpy.context.scene
    r = scene.render
    blocks = {kind: sorted(b.name for b in getattr(bpy.data, kind)) for kind in (
        "objects", "pointclouds", "meshes", "collections", "materials", "node_groups", "images", "cameras")}
    return (blocks, scene.camera, scene.frame_start, scene.frame_end, scene.frame_current, r.filepath,
            r.resolution_x, r.resolution_y, r.engine, scene.view_settings.view_transform,
            sorted(o.name for o in scene.objects if o.hide_render))


def test_cancelled_run_leaves_scene_unchanged(captured, tmp_path):
    obj, a, script = captured
    backends, animate = sub("backends"), sub("animate")
    before = scene_snapshot()
    backend = backends.LocalCLIBackend(sys.executable, [str(script)], extra_args=["--sleep", "30"])
    job = animate.AnimateJob(obj, backend, tmp_path / "job", frames=4, width=32, height=32, samples=2)
    for _ in range(200):
        job.step()
        if job.state == "WAIT" and backend.status.log:
            break
        time.sleep(0.05)
    assert job.state == "WAIT"
    job.cancel()
    assert job.state == "CANCELLED" and backend._proc.poll() is not None  # the subprocess is gone
    assert job.step() == "CANCELLED"
    assert scene_snapshot() == before
    assert not (tmp_path / "job" / "result").exists()


def test_failing_backend_reports_and_changes_nothing(captured, tmp_path):
    obj, a, _ = captured
    bad = tmp_path / "bad.py"
    bad.write_text("import sys; print('no model weights'); sys.exit(3)")
    before = scene_snapshot()
    job = sub("animate").AnimateJob(obj, sub("backends").LocalCLIBackend(sys.executable, [str(bad)]),
                                    tmp_path / "job", width=16, height=16, samples=1)
    assert run_job(job) == "FAILED" and "no model weights" in job.message
    assert scene_snapshot() == before


DYING_CLI = textwrap.dedent('''
    """Answers like the fake back end would, then is killed half-way through writing its result."""
    import argparse, os, signal
    from pathlib import Path
    p = argparse.ArgumentParser(); p.add_argument("--job"); p.add_argument("--out")
    out = Path(p.parse_args().out); out.mkdir()
    print("progress 0.50 timestep 2", flush=True)
    (out / "frame_0000.ply").write_bytes(b"ply\\n")  # half a result: must never be imported
    os.kill(os.getpid(), signal.SIGKILL)
''')


def test_backend_dying_mid_job_changes_nothing(captured, tmp_path):
    """The CLI killed mid-job, then a ComfyUI server answering garbage while the job runs: both end
    FAILED with the back end's message, the scene (data-blocks, frame range, settings) as it was."""
    from test_blender_backends import FakeComfy  # the loopback fake ComfyUI
    import threading
    from http.server import ThreadingHTTPServer

    obj, a, _ = captured
    backends, animate = sub("backends"), sub("animate")
    dying = tmp_path / "dying.py"
    dying.write_text(DYING_CLI)
    before = scene_snapshot()
    job = animate.AnimateJob(obj, backends.LocalCLIBackend(sys.executable, [str(dying)]), tmp_path / "job",
                             width=16, height=16, samples=1)
    assert run_job(job) == "FAILED" and "killed by SIGKILL" in job.message, job.message
    assert job.result is None and not (tmp_path / "job" / "result").exists()
    assert scene_snapshot() == before

    workflow, bindings = backends.load_workflow_template(Path(backends.__file__).with_name("comfy_workflow.json"))
    FakeComfy.state = {"uploads": [], "object_info": {n["class_type"]: {"input": {}} for n in workflow.values()},
                       "fault": "garbage", "delay": 0}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        comfy = backends.ComfyUIBackend(f"http://127.0.0.1:{server.server_address[1]}", workflow, bindings,
                                        timeout=2, poll_interval=0.05)
        job = animate.AnimateJob(obj, comfy, tmp_path / "job2", width=16, height=16, samples=1)
        assert run_job(job) == "FAILED" and "not JSON" in job.message, job.message
    finally:
        server.shutdown()
        server.server_close()
    assert FakeComfy.state["uploads"] == ["source.ply"]  # it got as far as running the job
    assert not (tmp_path / "job2" / "result").exists() and scene_snapshot() == before


def test_backend_checked_before_any_view_is_rendered(captured, tmp_path):
    obj, a, script = captured
    before = scene_snapshot()
    missing = sub("backends").LocalCLIBackend(str(tmp_path / "no" / "python"))
    job = sub("animate").AnimateJob(obj, missing, tmp_path / "job", width=16, height=16, samples=1)
    assert job.step() == "FAILED" and "not found" in job.message
    assert not (tmp_path / "job" / "views").exists() and scene_snapshot() == before
    no_module = sub("backends").LocalCLIBackend(sys.executable, ["-m", "fuse4d_no_such_module"])
    job = sub("animate").AnimateJob(obj, no_module, tmp_path / "job2", width=16, height=16, samples=1)
    assert job.step() == "FAILED" and "no module 'fuse4d_no_such_module'" in job.message
    unreachable = sub("backends").ComfyUIBackend("http://127.0.0.1:9", {}, sub("backends").ComfyBindings.from_dict(
        {"output_node": "1"}), timeout=2)
    job = sub("animate").AnimateJob(obj, unreachable, tmp_path / "job3", width=16, height=16, samples=1)
    assert job.step() == "FAILED" and "not reachable" in job.message
    assert scene_snapshot() == before


def test_animate_hides_the_source_under_the_result(captured, tmp_path):
    obj, a, script = captured
    backend = sub("backends").LocalCLIBackend(sys.executable, [str(script)])
    job = sub("animate").AnimateJob(obj, backend, tmp_path / "job", frames=2, width=16, height=16, samples=1,
                                    hide_source=True)
    assert run_job(job) == "DONE", job.message
    assert obj.hide_get() and obj.hide_render and not job.result.hide_get()


class _StubJob:
    """Stands in for AnimateJob in the modal test: four steps to DONE, cancel() ends it at once."""

    def __init__(self):
        self.progress, self.message, self.state, self.steps = 0.0, "checking the back end", "CHECK", 0

    @property
    def finished(self):
        return self.state in ("DONE", "CANCELLED", "FAILED")

    def step(self):
        self.steps += 1
        self.progress, self.message = self.steps / 4, f"rendered view {self.steps}/4"
        self.state = "DONE" if self.steps == 4 else "RENDER"
        return self.state

    def cancel(self):
        if not self.finished:
            self.state, self.message = "CANCELLED", "cancelled"


def _modal_harness():
    """The Animate Scene operator's modal() driven headless: fake self, window manager, workspace
    (status bar) and events around the real scene settings."""
    from types import SimpleNamespace

    calls, reports = [], []
    wm = SimpleNamespace(progress_update=lambda v: calls.append(("progress", v)),
                         event_timer_remove=lambda t: calls.append(("timer_remove", t)),
                         progress_end=lambda: calls.append(("progress_end",)))
    workspace = SimpleNamespace(status_text_set=lambda text: calls.append(("status", text)))
    context = SimpleNamespace(scene=bpy.context.scene, window_manager=wm, workspace=workspace, screen=None)
    op = SimpleNamespace(_job=_StubJob(), _timer="TIMER-1", report=lambda kind, text: reports.append((kind, text)))
    context.scene.fuse4d.running = True
    return op, context, calls, reports


def event(kind, value="NOTHING"):
    from types import SimpleNamespace
    return SimpleNamespace(type=kind, value=value)


def test_animate_modal_shows_progress_in_the_status_bar_and_esc_cancels(addon):
    ui = sub("ui")
    modal = ui.FUSE4D_OT_animate.modal
    op, context, calls, reports = _modal_harness()
    s = context.scene.fuse4d
    assert modal(op, context, event("TIMER")) == {"RUNNING_MODAL"}
    assert ("progress", 25) in calls and s.progress == pytest.approx(0.25) and s.status == "rendered view 1/4"
    status = [c[1] for c in calls if c[0] == "status"]
    assert status and "25%" in status[-1] and "rendered view 1/4" in status[-1] and "Esc" in status[-1]
    assert modal(op, context, event("MOUSEMOVE")) == {"PASS_THROUGH"} and op._job.steps == 1  # UI stays usable
    assert modal(op, context, event("ESC", "RELEASE")) == {"PASS_THROUGH"}  # a key release cancels nothing
    assert modal(op, context, event("ESC", "PRESS")) == {"CANCELLED"}
    assert op._job.state == "CANCELLED" and reports == [({"WARNING"}, "cancelled")]
    assert ("timer_remove", "TIMER-1") in calls and ("progress_end",) in calls
    assert calls[-1] == ("status", None) and not s.running  # the status bar's own text back, panel idle

    op, context, calls, reports = _modal_harness()  # a run to the end
    results = [modal(op, context, event("TIMER")) for _ in range(4)]
    assert results == [{"RUNNING_MODAL"}] * 3 + [{"FINISHED"}] and reports == [({"INFO"}, "rendered view 4/4")]
    assert [c for c in calls if c[0] == "progress"] == [("progress", p) for p in (25, 50, 75, 100)]
    assert calls[-1] == ("status", None) and not context.scene.fuse4d.running

    op, context, calls, reports = _modal_harness()  # Blender ends the operator (file load, window closed)
    ui.FUSE4D_OT_animate.cancel(op, context)
    assert op._job.state == "CANCELLED" and ("timer_remove", "TIMER-1") in calls and calls[-1] == ("status", None)
    context.scene.fuse4d.status = ""


def test_command_preference_is_shell_parsed(addon):
    ui = sub("ui")
    assert ui.command_arguments('-m fuse4d animate-scene --recon "/models/my recon.safetensors"') == [
        "-m", "fuse4d", "animate-scene", "--recon", "/models/my recon.safetensors"]
    assert ui.command_arguments("  ") is None
    with pytest.raises(ValueError, match="Command preference"):
        ui.command_arguments('-m fuse4d "unclosed')


def test_backends_from_preferences(addon):
    ui, backends = sub("ui"), sub("backends")
    cli = ui.make_backend(bpy.context, "CLI")
    assert isinstance(cli, backends.LocalCLIBackend) and cli.command == ["-m", "fuse4d", "animate-scene"]
    comfy = ui.make_backend(bpy.context, "COMFYUI")
    assert isinstance(comfy, backends.ComfyUIBackend) and comfy.bindings.output_node == "18"
    assert comfy.bindings.source == ("1", "splat")
    with pytest.raises(ValueError, match="not found"):
        cli.start(__import__("pathlib").Path("."))
    assert (cli.deadline.quiet_seconds, cli.deadline.max_seconds) == (600.0, None)  # no preferences: defaults
    assert (comfy.deadline.quiet_seconds, comfy.deadline.max_seconds) == (60.0, None)


def test_deadline_preferences_reach_the_back_ends(addon):
    """The add-on's preferences (a real AddonPreferences of the registered class) set each back end's
    Deadline as Animate Scene builds it; max_seconds 0 means no limit."""
    ui = sub("ui")
    entry = bpy.context.preferences.addons.new()
    entry.module = PKG
    try:
        prefs = ui.addon_prefs(bpy.context)
        assert prefs is not None and prefs.bl_rna.identifier == ui.Fuse4DPreferences.bl_rna.identifier
        assert (prefs.cli_quiet_seconds, prefs.comfy_quiet_seconds, prefs.max_seconds) == (600.0, 60.0, 0.0)
        assert ui.make_backend(bpy.context, "CLI").deadline.max_seconds is None
        prefs.cli_quiet_seconds, prefs.comfy_quiet_seconds, prefs.max_seconds = 120.0, 15.0, 3600.0
        cli, comfy = ui.make_backend(bpy.context, "CLI"), ui.make_backend(bpy.context, "COMFYUI")
        assert (cli.deadline.quiet_seconds, cli.deadline.max_seconds) == (120.0, 3600.0)
        assert (comfy.deadline.quiet_seconds, comfy.deadline.max_seconds) == (15.0, 3600.0)
    finally:
        bpy.context.preferences.addons.remove(entry)


def test_zip_installs_as_a_blender_extension(tmp_path):
    """The real install path (Preferences > Install from Disk) in a fresh Blender process with a
    temporary user folder: the extension enables, its operator imports a PLY."""
    import subprocess

    zip_path = build.build(tmp_path / "dist")
    inria_plyfile(tmp_path / "a.ply", random_arrays(50, degree=0))
    script = textwrap.dedent(f'''
        import bpy
        r = bpy.ops.extensions.package_install_files(repo="user_default", filepath={str(zip_path)!r},
                                                     enable_on_install=True)
        assert r == {{"FINISHED"}}, r
        assert "bl_ext.user_default.fuse4d" in bpy.context.preferences.addons
        assert bpy.ops.fuse4d.import_ply(filepath={str(tmp_path / "a.ply")!r}) == {{"FINISHED"}}
        print("POINTS", len(bpy.data.objects["a"].data.points))
    ''')
    env = dict(__import__("os").environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "POINTS 50" in out.stdout


# --- the real back ends: `fuse4d animate-scene` with the shipped models, and a real ComfyUI -------

def sample_capture(tmp_path):
    """The bundled captured scene as a splat object (thinned: Blender renders its views on the CPU)."""
    from fuse4d.core.scene import sample_scene

    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    write_ply(tmp_path / "capture.ply", sample_scene(0)[::4].to_arrays())
    obj = sub("importer").import_ply(tmp_path / "capture.ply", name="capture")
    obj.location = (0.5, -1.0, 0.2)
    obj.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    bpy.context.scene.fuse4d.source = obj
    assert bpy.ops.fuse4d.create_rig(views=3, arc=60.0) == {"FINISHED"}
    return obj


def assert_result_in_source_world(result, source, timesteps):
    assert result["fuse4d_timesteps"] == timesteps
    # The back end answered in the job's world (the source's data space): no extra alignment needed.
    np.testing.assert_allclose(np.array(result.matrix_world), np.array(source.matrix_world), atol=1e-4)
    start = bpy.context.scene.frame_current
    sizes = []
    for t in range(timesteps):
        bpy.context.scene.frame_set(start + t)
        sizes.append(len(evaluated_points(result)))
    assert min(sizes) > 0 and len(set(sizes)) == 1


def test_animate_with_the_real_cli_and_the_shipped_models(addon, tmp_path):
    source = sample_capture(tmp_path)
    before = {o.name for o in bpy.data.objects}
    backend = sub("backends").LocalCLIBackend(sys.executable, extra_args=["--steps", "2"])
    job = sub("animate").AnimateJob(source, backend, tmp_path / "job", frames=4, fps=6.0, width=48, height=48,
                                    samples=2)
    assert run_job(job, limit=6000) == "DONE", job.message + "\n" + "\n".join(backend.status.log[-20:])
    assert any(line.startswith("progress ") for line in backend.status.log)
    assert {o.name for o in bpy.data.objects} - before == {job.result.name}
    assert_result_in_source_world(job.result, source, 4)


def comfy_template(server, steps=2):
    from conftest_comfy import swap_tiny

    backends = sub("backends")
    workflow, bindings = backends.load_workflow_template(Path(backends.__file__).with_name("comfy_workflow.json"))
    return swap_tiny(workflow, server, steps=steps), bindings


def test_animate_through_a_real_comfyui_server(comfy_server, addon, tmp_path):
    source = sample_capture(tmp_path)
    workflow, bindings = comfy_template(comfy_server)
    backend = sub("backends").ComfyUIBackend(comfy_server.url, workflow, bindings, poll_interval=0.2)
    job = sub("animate").AnimateJob(source, backend, tmp_path / "job", frames=5, width=48, height=48, samples=2)
    assert run_job(job, limit=6000) == "DONE", job.message + "\n" + comfy_server.log_tail()
    assert_result_in_source_world(job.result, source, 5)


def test_cancelling_a_real_comfyui_run_leaves_the_scene_unchanged(comfy_server, addon, tmp_path):
    source = sample_capture(tmp_path)
    workflow, bindings = comfy_template(comfy_server, steps=400)  # long enough to be cancelled mid-run
    backend = sub("backends").ComfyUIBackend(comfy_server.url, workflow, bindings, poll_interval=0.2)
    before = scene_snapshot()
    job = sub("animate").AnimateJob(source, backend, tmp_path / "job", frames=5, width=48, height=48, samples=2)
    for _ in range(6000):
        job.step()
        if job.state == "WAIT" and backend.prompt_id and comfy_server.is_running(backend.prompt_id):
            break
        time.sleep(0.05)
    assert job.state == "WAIT"
    job.cancel()
    assert job.state == "CANCELLED" and scene_snapshot() == before
    comfy_server.wait(backend.prompt_id, allow_error=True)  # interrupted, not finished
    assert not (tmp_path / "job" / "result").exists()
    # The server is free again and serves the next job.
    workflow, bindings = comfy_template(comfy_server)
    again = sub("animate").AnimateJob(source, sub("backends").ComfyUIBackend(comfy_server.url, workflow, bindings,
                                                                             poll_interval=0.2),
                                      tmp_path / "job2", frames=5, width=48, height=48, samples=2)
    assert run_job(again, limit=6000) == "DONE", again.message
