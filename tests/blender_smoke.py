# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke check of the built add-on on one Blender version, run by that version's `bpy` Python
(tests/test_blender_versions.py): import a PLY (its Solid view colours) and a 4D sequence, play it, render it in Cycles,
export a PLY and the whole sequence, and check that a failed import leaves nothing behind.

    PYTHON tests/blender_smoke.py ADDON_ZIP WORKDIR      # prints "SMOKE OK <version>" at the end

Only bpy and numpy are needed (the add-on's bundled format module writes the inputs)."""
import importlib
import json
import sys
import zipfile
from pathlib import Path

import bpy
import numpy as np

PKG = "fuse4d_smoke"


def random_arrays(splatio, n, seed, degree=0):
    rng = np.random.default_rng(seed)
    return splatio.SplatArrays(rng.normal(size=(n, 3)).astype(np.float32),
                               rng.normal(size=(n, 4)).astype(np.float32),
                               (rng.normal(size=(n, 3)) - 3).astype(np.float32),
                               rng.normal(size=n).astype(np.float32),
                               (rng.normal(size=(n, (degree + 1) ** 2, 3)) * 0.3).astype(np.float32))


def evaluated_count(obj):
    disp = obj.modifiers["Fuse4D Splats"]
    disp.show_viewport = False
    try:
        return len(obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data.points)
    finally:
        disp.show_viewport = True


def main(zip_path: Path, work: Path) -> None:
    print("BLENDER", bpy.app.version_string, flush=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(work / "pkgs" / PKG)
    sys.path.insert(0, str(work / "pkgs"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon = importlib.import_module(PKG)
    addon.register()
    splatio = importlib.import_module(f"{PKG}.splatio")
    importer = importlib.import_module(f"{PKG}.importer")
    compat = importlib.import_module(f"{PKG}.compat")
    scene = bpy.context.scene

    # A static PLY: bit-exact attributes, active and selected, scene prepared and reported.
    a = random_arrays(splatio, 300, 1, degree=1)
    splatio.write_ply(work / "a.ply", a)
    assert bpy.ops.fuse4d.import_ply(filepath=str(work / "a.ply")) == {"FINISHED"}
    obj = bpy.data.objects["a"]
    assert bpy.context.view_layer.objects.active == obj and obj.select_get()
    assert scene.cycles.transparent_max_bounces >= 256 and scene.view_settings.view_transform == "Standard"
    # Solid view shows the splat colours: 3D views on Attribute colour, and the drawn (realised) mesh's
    # active colour attribute holds 0.5 + C0 f_dc per splat.
    assert all(space.shading.color_type == "VERTEX" for screen in bpy.data.screens for area in screen.areas
               for space in area.spaces if space.type == "VIEW_3D")
    dg = bpy.context.evaluated_depsgraph_get()
    drawn = [i.object.data for i in dg.object_instances if i.object.type == "MESH" and i.parent == obj.evaluated_get(dg)]
    assert len(drawn) == 1 and drawn[0].attributes.active_color_name, drawn
    colors = np.empty(len(drawn[0].vertices) * 4, np.float32)
    drawn[0].color_attributes[drawn[0].attributes.active_color_name].data.foreach_get("color", colors)
    np.testing.assert_allclose(colors.reshape(300, -1, 4)[:, 0, :3], 0.5 + splatio.SH_C0 * a.sh[:, 0], atol=1e-6)
    with bpy.context.temp_override(object=obj, active_object=obj):
        assert bpy.ops.fuse4d.export_ply(filepath=str(work / "a_out.ply")) == {"FINISHED"}
    back = splatio.read_ply(work / "a_out.ply")
    for field in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(back, field), getattr(a, field))

    # A 4D sequence at 12 fps in a 24 fps scene: two frames per timestep (retimed), 5.x actions.
    counts = (20, 30, 40)
    splatio.write_sequence(work / "seq", splatio.Sequence4D(
        frames=[random_arrays(splatio, n, 10 + t) for t, n in enumerate(counts)], fps=12.0))
    scene.render.fps, scene.render.fps_base = 24, 1.0
    assert bpy.ops.fuse4d.import_sequence(filepath=str(work / "seq" / "manifest.json"), frame_start=1) == {"FINISHED"}
    seq = bpy.data.objects["seq"]
    assert scene.render.fps == 24
    for frame, t in {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2, 9: 2}.items():
        scene.frame_set(frame)
        assert evaluated_count(seq) == counts[t], (frame, evaluated_count(seq))
    # The whole sequence back out, and one timestep.
    importer.export_sequence(seq, work / "seq_out")
    manifest = json.loads((work / "seq_out" / "manifest.json").read_text())
    assert [f["count"] for f in manifest["frames"]] == list(counts) and manifest["fps"] == 12.0
    scene.frame_set(3)
    importer.export_ply(seq, work / "t1.ply")
    assert len(splatio.read_ply(work / "t1.ply")) == counts[1]

    # Interpolation between corresponding timesteps (sub-frame time).
    base = random_arrays(splatio, 25, 7)
    moved = base.subset(slice(None))
    moved.means = base.means + np.float32(1.0)
    splatio.write_sequence(work / "corr", splatio.Sequence4D(frames=[base, moved], fps=24.0, corresponding=True))
    blend = importer.import_sequence(work / "corr", interpolate=True)
    scene.frame_set(1, subframe=0.5)
    disp = blend.modifiers["Fuse4D Splats"]
    disp.show_viewport = False
    pc = blend.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    pos = np.empty(len(pc.points) * 3, np.float32)
    pc.attributes["position"].data.foreach_get("vector", pos)
    np.testing.assert_allclose(pos.reshape(-1, 3), base.means + 0.5, atol=1e-5)
    disp.show_viewport = True

    # glTF KHR_gaussian_splatting out and back in (numpy only: works in every Blender).
    importer.export_ply(obj, work / "a.glb")
    glb = importer.import_ply(work / "a.glb", name="a_glb")
    np.testing.assert_array_equal(importlib.import_module(f"{PKG}.pointcloud").splat_arrays(glb.data).means, a.means)

    # Cycles at the imported scene's settings, and this version's EEVEE id is accepted.
    data = bpy.data.cameras.new("cam")
    cam = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(cam)
    cam.location = (0, -8, 0)
    cam.rotation_euler = (1.5708, 0, 0)
    scene.camera = cam
    seq.hide_render = True
    r = scene.render
    r.engine, r.resolution_x, r.resolution_y, r.filepath = "CYCLES", 24, 24, str(work / "render.png")
    scene.cycles.samples = 2
    bpy.ops.render.render(write_still=True)
    assert (work / "render.png").stat().st_size > 0
    r.engine = compat.eevee_engine()
    assert r.engine == compat.eevee_engine()

    # A bad file: one clear error line (background Blender raises it as RuntimeError); and an import
    # failing half-way (a bad timeline mode, after the object was made) leaves nothing behind.
    (work / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nend_header\n")
    before = {k: len(getattr(bpy.data, k)) for k in ("objects", "pointclouds", "meshes", "node_groups", "actions")}
    try:
        bpy.ops.fuse4d.import_ply(filepath=str(work / "bad.ply"))
        raise AssertionError("a malformed PLY was imported")
    except RuntimeError as exc:
        assert "bad.ply" in str(exc) and "vertices" in str(exc), exc
    try:
        importer.sequence_object(splatio.read_sequence(work / "seq"), "half", mode="SIDEWAYS")
        raise AssertionError("a bad mode was accepted")
    except ValueError:
        pass
    assert {k: len(getattr(bpy.data, k)) for k in before} == before
    addon.unregister()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    print("SMOKE OK", bpy.app.version_string, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
