# SPDX-License-Identifier: GPL-3.0-or-later
"""The Blender side of `fuse4d render-dataset`: one animated asset in, its planned samples rendered.

Run by core/render_dataset/launch.py as its own process, with a Python that has `bpy` (the PyPI
bpy==4.5.*, Blender 4.2+) or Blender itself:
    python dataset_worker.py JOB.json
    blender -b --factory-startup --python dataset_worker.py -- JOB.json
It imports only bpy, numpy and the standard library (no fuse4d), so any Blender can run it. The job
(written by the core) holds the asset, the render settings and every sample's cameras (Blender
matrix_world + lens), time offset and lights; this script loads the asset, checks it (animation,
textures, scale), normalises it into the unit cube at the origin, renders each sample's views into
the folder the core gave it and writes RESULT.json. Per sample it prints `sample NAME` (progress).
Not shipped in the add-on zip (build.py).
"""
from __future__ import annotations

import json
import math
import os
import sys
import traceback

import bpy
import numpy as np
from mathutils import Matrix

MIN_SIZE, MAX_SIZE = 1e-4, 1e5   # the asset's largest side in scene units; outside: "absurd scale"


class AssetError(Exception):
    """A bad asset: its one-line reason goes into the shard report."""


# ---------------------------------------------------------------- loading and checks

def load_asset(path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".blend":
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=False)
        for ob in list(bpy.context.scene.objects):
            if ob.type in ("CAMERA", "LIGHT"):
                bpy.data.objects.remove(ob, do_unlink=True)
        return
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        if ext in (".glb", ".gltf"):
            bpy.ops.import_scene.gltf(filepath=path)
        elif ext == ".fbx":
            if not hasattr(bpy.ops.import_scene, "fbx"):
                bpy.ops.preferences.addon_enable(module="io_scene_fbx")
            bpy.ops.import_scene.fbx(filepath=path, use_anim=True)
        else:
            raise AssetError(f"unsupported asset type {ext}")
    except RuntimeError as exc:
        raise AssetError(f"could not import: {str(exc).strip().splitlines()[-1]}") from None
    for ob in list(bpy.context.scene.objects):
        if ob.type in ("CAMERA", "LIGHT"):
            bpy.data.objects.remove(ob, do_unlink=True)


def missing_textures() -> list[str]:
    out = []
    for img in bpy.data.images:
        if img.source not in ("FILE", "SEQUENCE", "TILED") or img.packed_file is not None:
            continue
        path = bpy.path.abspath(img.filepath, library=img.library)
        if img.filepath and not os.path.exists(path):
            out.append(os.path.basename(img.filepath))
    return sorted(set(out))


def _actions_of(idblock) -> list:
    ad = getattr(idblock, "animation_data", None)
    if ad is None:
        return []
    acts = [ad.action] if ad.action else []
    for track in ad.nla_tracks:
        if not track.mute:
            acts += [s.action for s in track.strips if s.action]
    return acts


def animation_of(scene) -> tuple[list, str]:
    """The actions that drive the scene's objects (object, armature, shape keys), and a name for it."""
    acts = []
    for ob in scene.objects:
        acts += _actions_of(ob)
        data = getattr(ob, "data", None)
        if data is not None:
            acts += _actions_of(data)
            keys = getattr(data, "shape_keys", None)
            if keys is not None:
                acts += _actions_of(keys)
    unique = list(dict.fromkeys(acts))
    name = unique[0].name if unique else ""
    return unique, name


def frame_range(actions) -> tuple[float, float]:
    lo = min(float(a.frame_range[0]) for a in actions)
    hi = max(float(a.frame_range[1]) for a in actions)
    return lo, hi


def renderable(scene) -> list:
    return [ob for ob in scene.objects if ob.type in ("MESH", "CURVE", "SURFACE", "META", "FONT")
            and not ob.hide_render]


def world_points(scene, frame: float) -> np.ndarray:
    """World-space vertex positions of every renderable object at `frame` (after modifiers/armatures)."""
    set_frame(scene, frame)
    dg = bpy.context.evaluated_depsgraph_get()
    parts = []
    for ob in renderable(scene):
        ev = ob.evaluated_get(dg)
        mesh = ev.to_mesh()
        try:
            co = np.empty(len(mesh.vertices) * 3, np.float64)
            mesh.vertices.foreach_get("co", co)
            co = co.reshape(-1, 3)
            mw = np.array(ev.matrix_world, np.float64)
            parts.append(co @ mw[:3, :3].T + mw[:3, 3])
        finally:
            ev.to_mesh_clear()
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def set_frame(scene, frame: float) -> None:
    whole = math.floor(frame)
    scene.frame_set(int(whole), subframe=float(frame - whole))


def inspect(scene) -> dict:
    """Checks and the normalisation of the loaded asset; raises AssetError for a bad one."""
    missing = missing_textures()
    if missing:
        raise AssetError(f"missing textures: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    if not renderable(scene):
        raise AssetError("no mesh to render")
    actions, action_name = animation_of(scene)
    if not actions:
        raise AssetError("no animation (no action on any object, armature or shape key)")
    f0, f1 = frame_range(actions)
    if f1 <= f0:
        raise AssetError(f"animation of zero length (frames {f0:g}..{f1:g})")
    probes = np.linspace(f0, f1, 9)
    points = [world_points(scene, f) for f in probes]
    if not points[0].size:
        raise AssetError("no mesh to render (the meshes have no vertices)")
    every = np.concatenate(points)
    if not np.isfinite(every).all():
        raise AssetError("non-finite vertex positions")
    lo, hi = every.min(0), every.max(0)
    size = float((hi - lo).max())
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise AssetError(f"absurd scale: largest side {size:.3g} units (allowed {MIN_SIZE:g}..{MAX_SIZE:g})")
    motion = max(float(np.abs(p - points[0]).max()) if p.shape == points[0].shape else size for p in points)
    if motion < 1e-4 * size:
        raise AssetError("animation moves nothing (the same geometry at every frame)")
    caption = ""
    for holder in (scene, *scene.objects):
        for key in ("caption", "description", "title"):
            value = holder.get(key) if hasattr(holder, "get") else None
            if isinstance(value, str) and value.strip():
                caption = value.strip()
                break
        if caption:
            break
    fps = scene.render.fps / scene.render.fps_base
    return {"frame_range": [f0, f1], "fps": fps, "action": action_name, "caption": caption,
            "centre": ((lo + hi) / 2).tolist(), "size": size}


def normalise(scene, centre, size) -> None:
    """Parent the asset's root objects to an empty that maps it into the unit cube at the origin."""
    root = bpy.data.objects.new("fuse4d_normalise", None)
    scene.collection.objects.link(root)
    s = 1.0 / size
    root.matrix_world = Matrix.Scale(s, 4) @ Matrix.Translation([-c for c in centre])
    for ob in list(scene.objects):
        if ob.parent is None and ob is not root:
            ob.parent = root
            ob.matrix_parent_inverse = Matrix.Identity(4)


# ---------------------------------------------------------------- rendering

def setup_render(scene, settings: dict, depth: bool) -> None:
    r = scene.render
    if settings["engine"] == "cycles":
        r.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = int(settings["samples"])
        scene.cycles.use_denoising = False
        scene.cycles.use_adaptive_sampling = True
        scene.cycles.max_bounces = 4
        scene.cycles.transparent_max_bounces = 16
    else:
        engines = [e.identifier for e in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items]
        r.engine = "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in engines else "BLENDER_EEVEE"
        scene.eevee.taa_render_samples = int(settings["samples"])
    if int(settings.get("threads", 0)) > 0:
        r.threads_mode, r.threads = "FIXED", int(settings["threads"])
    r.resolution_x, r.resolution_y = int(settings["width"]), int(settings["height"])
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True  # the core puts the background colour under the alpha
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_layers[0].use_pass_z = depth
    if depth:  # the Z pass through a File Output node (the Viewer node is not filled in background mode)
        tree = compositor_tree(scene)
        tree.nodes.clear()
        layers = tree.nodes.new("CompositorNodeRLayers")
        composite = tree.nodes.new("CompositorNodeComposite")
        tree.links.new(layers.outputs["Image"], composite.inputs["Image"])
        out = tree.nodes.new("CompositorNodeOutputFile")
        out.name = "fuse4d_depth"
        out.format.file_format = "OPEN_EXR"
        out.format.color_depth = "32"
        tree.links.new(layers.outputs["Depth"], out.inputs[0])


def compositor_tree(scene):
    if hasattr(scene, "compositing_node_group"):  # Blender 5.x
        if scene.compositing_node_group is None:
            scene.compositing_node_group = bpy.data.node_groups.new("fuse4d", "CompositorNodeTree")
        return scene.compositing_node_group
    scene.use_nodes = True
    return scene.node_tree


def read_depth(folder: str) -> np.ndarray:
    """The one EXR the File Output node wrote into `folder` -> [H, W] camera z (0: nothing hit)."""
    names = [n for n in os.listdir(folder) if n.endswith(".exr")]
    if len(names) != 1:
        raise RuntimeError(f"expected one depth EXR in {folder}, found {names}")
    img = bpy.data.images.load(os.path.join(folder, names[0]))
    try:
        w, h = img.size
        px = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(img)
    os.remove(os.path.join(folder, names[0]))
    d = px.reshape(h, w, 4)[::-1, :, 0].copy()  # Blender images run bottom-up
    d[~np.isfinite(d) | (d > 1e6)] = 0.0
    return d


def set_world(scene, ambient: float) -> None:
    world = bpy.data.worlds.new("fuse4d_world")
    world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    bg.inputs["Strength"].default_value = float(ambient)
    scene.world = world


def set_lights(scene, lights: list[dict]) -> list:
    made = []
    for i, spec in enumerate(lights):
        data = bpy.data.lights.new(f"fuse4d_light_{i}", spec["type"])
        data.energy = float(spec["energy"])
        data.color = spec.get("color", (1.0, 1.0, 1.0))
        if spec["type"] == "AREA":
            data.size = float(spec.get("size", 1.0))
        ob = bpy.data.objects.new(data.name, data)
        scene.collection.objects.link(ob)
        if "location" in spec:
            ob.location = spec["location"]
            target = np.zeros(3)
            direction = target - np.asarray(spec["location"], float)
        else:
            ob.location = (np.asarray(spec["direction"], float) * 5.0).tolist()
            direction = -np.asarray(spec["direction"], float)
        from mathutils import Vector

        ob.rotation_euler = Vector(direction.tolist()).to_track_quat("-Z", "Y").to_euler()
        made.append(ob)
    return made


def set_camera(cam, spec: dict) -> None:
    cam.matrix_world = Matrix(spec["matrix_world"])
    d = cam.data
    d.lens = float(spec["lens"])
    d.sensor_width = float(spec["sensor_width"])
    d.sensor_fit = spec.get("sensor_fit", "HORIZONTAL")
    d.shift_x, d.shift_y = float(spec.get("shift_x", 0.0)), float(spec.get("shift_y", 0.0))
    d.clip_start, d.clip_end = 0.01, 100.0


def sample_frames(info: dict, kind: str, offset: float, count: int, step: float) -> list[float]:
    """The asset frames a sample shows: `count` frames `step` apart (closer for a short animation),
    starting at `offset` (0..1) of the room left; a frozen sample repeats one frame."""
    f0, f1 = info["frame_range"]
    span = f1 - f0
    if kind == "frozen" or count == 1:
        return [f0 + offset * span] * count
    step = min(step, span / (count - 1))
    clip = step * (count - 1)
    start = f0 + offset * (span - clip)
    return [start + step * t for t in range(count)]


def render_sample(scene, cam, sample: dict, settings: dict, info: dict) -> dict:
    out = sample["out"]
    os.makedirs(os.path.join(out, "heldout"), exist_ok=True)
    if settings["depth"]:
        os.makedirs(os.path.join(out, "depth"), exist_ok=True)
    lights = set_lights(scene, sample["lights"])
    set_world(scene, sample["ambient"])
    frames = sample_frames(info, sample["kind"], sample["time_offset"], int(settings["frames"]),
                           float(settings["frame_step"]))
    # a frozen sample renders its one frame; the core repeats it over time
    times = frames[:1] if sample["kind"] == "frozen" else frames
    depth_node = compositor_tree(scene).nodes.get("fuse4d_depth") if settings["depth"] else None
    scratch = os.path.join(out, "depth", "exr")
    try:
        for t, frame in enumerate(times):
            set_frame(scene, frame)
            for group, prefix, cams in (("", "v", sample["views"]), ("heldout", "h", sample["heldout"])):
                for v, spec in enumerate(cams):
                    set_camera(cam, spec)
                    name = f"{prefix}{v:02d}_t{t:03d}"
                    scene.render.filepath = os.path.join(out, group, name + ".png")
                    if depth_node is not None:
                        depth_node.base_path = scratch
                        depth_node.mute = prefix != "v"
                    bpy.ops.render.render(write_still=True)
                    if depth_node is not None and prefix == "v":
                        np.save(os.path.join(out, "depth", name + ".npy"), read_depth(scratch), allow_pickle=False)
    finally:
        for ob in lights:
            data = ob.data
            bpy.data.objects.remove(ob, do_unlink=True)
            bpy.data.lights.remove(data)
    return {"frames": frames, "fps": info["fps"] / max(frames[1] - frames[0], 1e-6) if len(set(frames)) > 1
            else info["fps"]}


def run(job: dict) -> dict:
    result: dict = {"ok": False, "reason": "", "info": {}, "samples": {}}
    try:
        load_asset(job["asset"])
        scene = bpy.context.scene
        info = inspect(scene)
        result["info"] = info
        normalise(scene, info["centre"], info["size"])
        setup_render(scene, job["settings"], bool(job["settings"]["depth"]))
        cam = bpy.data.objects.new("fuse4d_camera", bpy.data.cameras.new("fuse4d_camera"))
        scene.collection.objects.link(cam)
        scene.camera = cam
        for sample in job["samples"]:
            result["samples"][sample["name"]] = render_sample(scene, cam, sample, job["settings"], info)
            print(f"sample {sample['name']}", flush=True)
        result["ok"] = True
    except AssetError as exc:
        result["reason"] = str(exc)
    except Exception as exc:  # an asset that breaks Blender's importers must not stop the shard
        result["reason"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        result["traceback"] = traceback.format_exc()
    return result


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if len(argv) != 1:
        print("usage: dataset_worker.py JOB.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    result = run(job)
    tmp = job["result"] + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, job["result"])
    return 0


if __name__ == "__main__":
    # under `blender -b --python`, sys.argv holds Blender's own arguments before `--`
    sys.exit(main(sys.argv[1:]))
