# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural animated test assets for `fuse4d render-dataset` (offline tests, smoke runs).

    python animated_assets.py OUT_DIR COUNT [SEED] [--bad]

Writes COUNT assets alternating two kinds: a keyframed textured primitive (moves, spins, squashes)
and a rigged bending tube (an armature of three bones with keyframed rotations, skinned by height),
in the formats the dataset builder reads, in turn: .glb (Blender's glTF exporter), .glb, .blend
(actions and packed texture inside) and .fbx (baked animation, embedded texture). `--bad` adds three assets the dataset builder must skip:
`static_box.blend` (no animation), `huge_box.glb` (absurd scale) and `untextured.gltf` (its external
texture is missing). Like dataset_worker.py it imports only bpy, numpy and the standard library;
not shipped in the add-on zip.
"""
from __future__ import annotations

import math
import os
import sys

import bpy
import numpy as np
from mathutils import Matrix

FRAMES = 24


def fresh_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, FRAMES
    scene.render.fps = 24
    return scene


def textured_material(name: str, rng: np.random.Generator, size: int = 32):
    """A material with a packed checker image of two random colours (exported inside the .glb)."""
    a, b = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    yy, xx = np.mgrid[0:size, 0:size]
    check = ((yy // 8 + xx // 8) % 2)[..., None]
    rgb = np.where(check, a, b)
    px = np.concatenate([rgb, np.ones((size, size, 1))], -1).astype(np.float32)
    img = bpy.data.images.new(f"{name}_tex", size, size)
    img.pixels.foreach_set(px.ravel())
    img.pack()
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = img
    mat.node_tree.links.new(tex.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return mat, img


def add_primitive(kind: str):
    ops = {"cube": lambda: bpy.ops.mesh.primitive_cube_add(size=1.0),
           "sphere": lambda: bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, segments=16, ring_count=8),
           "cylinder": lambda: bpy.ops.mesh.primitive_cylinder_add(radius=0.4, depth=1.0, vertices=16),
           "torus": lambda: bpy.ops.mesh.primitive_torus_add(major_radius=0.4, minor_radius=0.15,
                                                             major_segments=24, minor_segments=8),
           "cone": lambda: bpy.ops.mesh.primitive_cone_add(radius1=0.5, depth=1.0, vertices=16)}
    ops[kind]()
    return bpy.context.active_object


def keyframed_primitive(rng: np.random.Generator, name: str):
    kind = str(rng.choice(["cube", "sphere", "cylinder", "torus", "cone"]))
    ob = add_primitive(kind)
    ob.name = name
    mat, _ = textured_material(f"{name}_mat", rng)
    ob.data.materials.append(mat)
    travel = rng.uniform(-1.0, 1.0, 3) * np.array([1.0, 1.0, 0.4])
    spin = rng.uniform(0.5, 2.0) * math.pi * rng.choice([-1, 1])
    for frame in (1, FRAMES // 2, FRAMES):
        s = (frame - 1) / (FRAMES - 1)
        ob.location = (travel * s).tolist()
        ob.rotation_euler = (0.0, 0.3 * s, spin * s)
        squash = 1.0 + 0.3 * math.sin(math.pi * s)
        ob.scale = (squash, squash, 1.0 / squash)
        for path in ("location", "rotation_euler", "scale"):
            ob.keyframe_insert(path, frame=frame)
    return kind


def rigged_tube(rng: np.random.Generator, name: str):
    """A tube of three bones bending back and forth: the glTF gets a skin and joint animations."""
    bpy.ops.mesh.primitive_cylinder_add(radius=0.15, depth=1.5, vertices=12, location=(0, 0, 0.75))
    tube = bpy.context.active_object
    tube.name = name
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.subdivide(number_cuts=8)
    bpy.ops.object.mode_set(mode="OBJECT")
    bpy.ops.object.transform_apply(location=True)
    mat, _ = textured_material(f"{name}_mat", rng)
    tube.data.materials.append(mat)
    arm_data = bpy.data.armatures.new(f"{name}_rig")
    arm = bpy.data.objects.new(f"{name}_rig", arm_data)
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    parent = None
    for i in range(3):
        bone = arm_data.edit_bones.new(f"bone{i}")
        bone.head, bone.tail = (0, 0, 0.5 * i), (0, 0, 0.5 * (i + 1))
        if parent is not None:
            bone.parent, bone.use_connect = parent, True
        parent = bone
    bpy.ops.object.mode_set(mode="OBJECT")
    for i in range(3):  # skin by height, blending across the joints
        group = tube.vertex_groups.new(name=f"bone{i}")
        for vert in tube.data.vertices:
            w = max(0.0, 1.0 - abs(vert.co.z - (0.5 * i + 0.25)) / 0.5)
            if w > 0:
                group.add([vert.index], w, "REPLACE")
    tube.parent = arm
    mod = tube.modifiers.new("rig", "ARMATURE")
    mod.object = arm
    bend = rng.uniform(0.4, 0.9) * rng.choice([-1, 1])
    for frame in (1, FRAMES // 2, FRAMES):
        phase = math.sin(2 * math.pi * (frame - 1) / (FRAMES - 1))
        for i, pb in enumerate(arm.pose.bones):
            pb.rotation_mode = "XYZ"
            pb.rotation_euler = (bend * phase * (0.5 + 0.25 * i), 0.0, 0.0)
            pb.keyframe_insert("rotation_euler", frame=frame)
    arm.rotation_euler = (0, 0, float(rng.uniform(0, 2 * math.pi)))
    return "tube"


def export(path: str, fmt: str = "GLB") -> None:
    bpy.ops.export_scene.gltf(filepath=path, export_format=fmt, export_animations=True, export_apply=False, export_extras=True,
                              export_yup=True)


def make_assets(out: str, count: int, seed: int = 0, bad: bool = False) -> list[str]:
    os.makedirs(out, exist_ok=True)
    made = []
    for i in range(count):
        rng = np.random.default_rng(seed * 1000 + i)
        fresh_scene()
        name = f"asset{i:03d}"
        kind = keyframed_primitive(rng, name) if i % 2 == 0 else rigged_tube(rng, name)
        # a caption in the file's metadata (glTF scene extras), as asset libraries ship them
        bpy.context.scene["caption"] = (f"a textured {kind} moving, spinning and squashing" if kind != "tube"
                                        else "a textured tube bending back and forth")
        fmt = ("glb", "glb", "blend", "fbx")[i % 4]
        path = os.path.join(out, f"{kind}_{name}.{fmt}")
        if fmt == "glb":
            export(path)
        elif fmt == "blend":  # actions stored in the .blend, texture packed
            bpy.ops.wm.save_as_mainfile(filepath=path, check_existing=False)
        else:
            bpy.ops.export_scene.fbx(filepath=path, bake_anim=True, path_mode="COPY", embed_textures=True)
        made.append(path)
    if bad:
        rng = np.random.default_rng(seed * 1000 + 999)
        fresh_scene()
        add_primitive("cube").data.materials.append(textured_material("static", rng)[0])
        made.append(os.path.join(out, "static_box.blend"))
        bpy.ops.wm.save_as_mainfile(filepath=made[-1], check_existing=False)
        fresh_scene()
        keyframed_primitive(rng, "huge")
        bpy.context.active_object.data.transform(Matrix.Scale(1e7, 4))
        made.append(os.path.join(out, "huge_box.glb"))
        export(made[-1])
        fresh_scene()
        keyframed_primitive(rng, "untextured")
        made.append(os.path.join(out, "untextured.gltf"))
        export(made[-1], "GLTF_SEPARATE")
        for name in os.listdir(out):  # the texture the .gltf points to goes missing
            if name.endswith(".png"):
                os.remove(os.path.join(out, name))
    return made


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    bad = "--bad" in argv
    argv = [a for a in argv if a != "--bad"]
    if len(argv) not in (2, 3):
        print("usage: animated_assets.py OUT_DIR COUNT [SEED] [--bad]", file=sys.stderr)
        return 2
    for path in make_assets(argv[0], int(argv[1]), int(argv[2]) if len(argv) == 3 else 0, bad):
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
