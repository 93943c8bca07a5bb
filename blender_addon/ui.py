# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators, menus, the sidebar panel and the add-on preferences."""
import json
import os
import shlex
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import importer, nodes
from .animate import AnimateJob
from .backends import ComfyBindings, ComfyUIBackend, Deadline, LocalCLIBackend, load_workflow_template
from .rig import create_rig, rig_cameras
from .splatio import SplatFormatError

ADDON_DIR = Path(__file__).parent
WORKFLOW_TEMPLATE = ADDON_DIR / "comfy_workflow.json"


def addon_prefs(context):
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


class Fuse4DPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    comfy_url: StringProperty(name="ComfyUI URL", default="http://127.0.0.1:8188")
    comfy_workflow: StringProperty(name="Workflow template", subtype="FILE_PATH", default="",
                                   description="API-format workflow + bindings JSON (empty: the shipped one)")
    comfy_bindings: StringProperty(name="Node bindings (JSON)", default="",
                                   description="Overrides the template's node ids, e.g. "
                                               '{"image_nodes": ["10"], "output_node": "30"}')
    cli_python: StringProperty(name="Fuse4D Python", subtype="FILE_PATH", default="",
                               description="The Python of the environment where fuse4d is installed")
    cli_command: StringProperty(name="Command", default="-m fuse4d animate-scene",
                                description="Arguments before --job/--out")
    # Deadlines (backends.Deadline): how long a back end may show no sign of life, and the whole job.
    cli_quiet_seconds: FloatProperty(name="CLI Quiet Limit (s)", default=600.0, min=1.0,
                                     description="Stop the local CLI when it prints nothing for this long "
                                                 "(model loading can be silent for minutes)")
    comfy_quiet_seconds: FloatProperty(name="ComfyUI Quiet Limit (s)", default=60.0, min=1.0,
                                       description="Fail when the ComfyUI server gives no usable answer for this long")
    max_seconds: FloatProperty(name="Job Limit (s)", default=0.0, min=0.0,
                               description="Fail a job that takes longer than this in all (0: no limit; real "
                                           "models can take hours)")

    def draw(self, context):
        col = self.layout.column()
        col.label(text="ComfyUI back end")
        col.prop(self, "comfy_url")
        col.prop(self, "comfy_workflow")
        col.prop(self, "comfy_bindings")
        col.label(text="Local Fuse4D CLI back end")
        col.prop(self, "cli_python")
        col.prop(self, "cli_command")
        col.label(text="Deadlines")
        col.prop(self, "cli_quiet_seconds")
        col.prop(self, "comfy_quiet_seconds")
        col.prop(self, "max_seconds")


def _display_options(op):
    return {"ellipsoids": op.display == "ELLIPSOIDS", "scale_multiplier": op.scale_multiplier,
            "viewport_subsample": op.viewport_subsample}


DISPLAY_ITEMS = [("ELLIPSOIDS", "Ellipsoids", "Oriented ellipsoids with Gaussian falloff"),
                 ("POINTS", "Points", "One sphere per Gaussian (fast)")]


def _scene_report(obj) -> str:
    """The import report's tail: scene settings changed, then the importer's note (Solid Colors off)."""
    changes, note = obj.get("fuse4d_scene_changes", ""), obj.get("fuse4d_import_note", "")
    return (f" (scene: {changes})" if changes else "") + (f"; {note}" if note else "")


IMPORT_ERRORS = (OSError, ValueError, RuntimeError)  # SplatFormatError is a ValueError


class SplatDisplayOptions:
    """How an import shows its splats and whether it may set the scene up: the properties both import
    operators offer (a mixin, as ImportHelper is)."""
    display: EnumProperty(name="Display", items=DISPLAY_ITEMS, default="ELLIPSOIDS")
    scale_multiplier: FloatProperty(name="Scale Multiplier", default=1.0, min=0.0)
    viewport_subsample: FloatProperty(name="Viewport Subsample", default=1.0, min=0.0, max=1.0)
    adjust_scene: BoolProperty(name="Set Render Settings", default=True,
                               description="Raise Cycles transparent bounces, use the Standard view "
                                           "transform where the scene's are short and show the splat "
                                           "colours in Solid view (off: leave the scene as is)")


class FUSE4D_OT_import_ply(bpy.types.Operator, ImportHelper, SplatDisplayOptions):
    """Import a 3D Gaussian splat file (3DGS .ply, glTF KHR_gaussian_splatting, SPZ, .splat, OpenUSD) as a
    splat point cloud"""
    bl_idname = "fuse4d.import_ply"
    bl_label = "Import Fuse4D 3DGS"
    bl_options = {"REGISTER", "UNDO"}
    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply;*.glb;*.gltf;*.spz;*.splat;*.usd;*.usda;*.usdc", options={"HIDDEN"})

    def execute(self, context):
        try:
            obj = importer.import_ply(self.filepath, adjust_scene=self.adjust_scene, **_display_options(self))
        except IMPORT_ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{obj.name}: {len(obj.data.points)} Gaussians{_scene_report(obj)}")
        return {"FINISHED"}


class FUSE4D_OT_import_sequence(bpy.types.Operator, ImportHelper, SplatDisplayOptions):
    """Import a Fuse4D 4D splat sequence (its manifest.json, or any PLY of a folder of numbered PLYs)
    onto the timeline"""
    bl_idname = "fuse4d.import_sequence"
    bl_label = "Import Fuse4D 4D Sequence"
    bl_options = {"REGISTER", "UNDO"}
    filename_ext = ".json"
    filter_glob: StringProperty(default="manifest.json;*.json;*.ply;*.usd;*.usda;*.usdc", options={"HIDDEN"})
    frame_start: IntProperty(name="Start Frame", default=1, description="Frame showing timestep 0")
    mode: EnumProperty(name="Outside the Range", items=[("HOLD", "Hold", "Show the first/last timestep"),
                                                         ("LOOP", "Loop", "Repeat the sequence")])
    retime: BoolProperty(name="Retime to Scene FPS", default=True,
                         description="Key the timesteps at the scene's frame rate so the sequence plays in "
                                     "real time (off: one timestep per frame)")
    set_scene: BoolProperty(name="Set Scene FPS and Range", default=False,
                            description="Change the scene's frame rate and range to the sequence's instead")
    interpolate: BoolProperty(name="Interpolate", default=False,
                              description="Blend corresponding Gaussians between timesteps (sequences with "
                                          "corresponding: true): smooth slow motion and motion blur")
    fps: FloatProperty(name="FPS (no manifest)", default=8.0, min=0.01,
                       description="Frame rate of a folder of numbered PLYs without manifest.json")

    def execute(self, context):
        try:
            obj = importer.import_sequence(self.filepath, frame_start=self.frame_start, mode=self.mode,
                                           retime=self.retime, set_scene=self.set_scene, fps=self.fps,
                                           interpolate=self.interpolate,
                                           adjust_scene=self.adjust_scene, **_display_options(self))
        except IMPORT_ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{obj.name}: {obj['fuse4d_timesteps']} timesteps{_scene_report(obj)}")
        return {"FINISHED"}


def _is_active_splat(context) -> bool:
    return context.object is not None and "fuse4d_splat" in context.object


EXPORT_FORMATS = [(".ply", "3DGS PLY", ""), (".glb", "glTF (KHR_gaussian_splatting)", ""), (".spz", "SPZ", ""),
                  (".splat", "antimatter15 .splat", ""), (".usdc", "OpenUSD", "")]


def _with_format(path: str, suffix: str, known) -> str:
    """The chosen format's extension unless the typed name already ends in a known one."""
    return path if Path(path).suffix.lower() in known else path + suffix


class FUSE4D_OT_export_ply(bpy.types.Operator, ExportHelper):
    """Export the active splat object (the current timestep of a sequence) to a splat file"""
    bl_idname = "fuse4d.export_ply"
    bl_label = "Export Fuse4D 3DGS"
    filename_ext = ".ply"
    check_extension = None
    filter_glob: StringProperty(default="*.ply;*.glb;*.spz;*.splat;*.usd;*.usda;*.usdc", options={"HIDDEN"})
    file_format: EnumProperty(name="Format", items=EXPORT_FORMATS, default=".ply")
    apply_modifiers: BoolProperty(name="Apply Modifiers", default=True,
                                  description="Write what the crop/filter (and other) modifiers leave")
    apply_transform: BoolProperty(name="Apply Transform", default=False,
                                  description="Move the Gaussians by the object's transform (beyond the "
                                              "import's axis change)")

    @classmethod
    def poll(cls, context):
        return _is_active_splat(context)

    def execute(self, context):
        obj = context.object
        try:
            path = _with_format(self.filepath, self.file_format, (".ply", ".glb", ".spz", ".splat", ".usd", ".usda", ".usdc"))
            importer.export_ply(obj, path, importer.current_timestep(obj), self.apply_modifiers, self.apply_transform)
        except IMPORT_ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class FUSE4D_OT_export_sequence(bpy.types.Operator, ExportHelper):
    """Export the active 4D splat object's whole sequence: a folder (manifest.json + one PLY per timestep)
    or one OpenUSD file with time samples"""
    bl_idname = "fuse4d.export_sequence"
    bl_label = "Export Fuse4D 4D Sequence"
    filename_ext = ""
    check_extension = None
    filter_glob: StringProperty(default="", options={"HIDDEN"})
    file_format: EnumProperty(name="Format", items=[("FOLDER", "Folder (manifest + PLYs)", ""),
                                                    (".usdc", "OpenUSD (time samples)", "")])
    apply_modifiers: BoolProperty(name="Apply Modifiers", default=True)
    apply_transform: BoolProperty(name="Apply Transform", default=False)

    @classmethod
    def poll(cls, context):
        return _is_active_splat(context)

    def execute(self, context):
        try:
            target = self.filepath.rstrip("/\\")
            if self.file_format != "FOLDER":
                target = _with_format(target, self.file_format, (".usd", ".usda", ".usdc"))
            folder = importer.export_sequence(context.object, target, self.apply_modifiers, self.apply_transform)
        except IMPORT_ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"wrote {folder}")
        return {"FINISHED"}


class FUSE4D_OT_add_crop(bpy.types.Operator):
    """Add a non-destructive crop (box or sphere) and opacity/size filter to the active splat object"""
    bl_idname = "fuse4d.add_crop"
    bl_label = "Add Crop / Filter"
    bl_options = {"REGISTER", "UNDO"}
    shape: EnumProperty(name="Shape", items=[("BOX", "Box", ""), ("SPHERE", "Sphere", "")])
    min_opacity: FloatProperty(name="Min Opacity", default=0.0, min=0.0, max=1.0)
    max_size: FloatProperty(name="Max Size", default=0.0, min=0.0, description="0: no limit")

    @classmethod
    def poll(cls, context):
        return _is_active_splat(context)

    def execute(self, context):
        from .rig import splat_bounds_local

        obj = context.object
        centre, half = splat_bounds_local(obj)
        nodes.add_crop(obj, self.shape == "SPHERE", centre, half if self.shape == "BOX" else (max(half),) * 3,
                       min_opacity=self.min_opacity, max_size=self.max_size)
        return {"FINISHED"}


class FUSE4D_OT_create_rig(bpy.types.Operator):
    """Place an editable arc of cameras around the chosen splat object"""
    bl_idname = "fuse4d.create_rig"
    bl_label = "Create Camera Rig"
    bl_options = {"REGISTER", "UNDO"}
    views: IntProperty(name="Views", default=4, min=1, max=64)
    arc: FloatProperty(name="Arc (degrees)", default=60.0, min=0.0, max=360.0)
    elevation: FloatProperty(name="Elevation (degrees)", default=15.0, min=-89.0, max=89.0)
    distance: FloatProperty(name="Distance (x radius)", default=2.5, min=0.1)

    def execute(self, context):
        obj = context.scene.fuse4d.source
        if not is_splat(obj):
            self.report({"ERROR"}, "pick a Fuse4D splat object first")
            return {"CANCELLED"}
        create_rig(obj, self.views, self.arc, self.elevation, self.distance)
        return {"FINISHED"}


def command_arguments(text: str) -> list[str] | None:
    """The *Command* preference as arguments, shell-style (quotes, paths with spaces); None = default."""
    try:
        return shlex.split(text, posix=os.name != "nt") or None
    except ValueError as exc:
        raise ValueError(f"the Command preference cannot be parsed ({exc})") from None


def deadline_from(prefs, kind: str) -> Deadline:
    """The back end's Deadline from the preferences (none: the defaults, 600 s CLI / 60 s ComfyUI)."""
    if prefs is None:
        return Deadline(quiet_seconds=600.0 if kind == "CLI" else 60.0)
    quiet = prefs.cli_quiet_seconds if kind == "CLI" else prefs.comfy_quiet_seconds
    return Deadline(quiet_seconds=quiet, max_seconds=prefs.max_seconds or None)


def make_backend(context, kind: str):
    prefs = addon_prefs(context)
    deadline = deadline_from(prefs, kind)
    if kind == "CLI":
        python = prefs.cli_python if prefs else ""
        return LocalCLIBackend(bpy.path.abspath(python), command_arguments(prefs.cli_command if prefs else ""),
                               deadline=deadline)
    template = bpy.path.abspath(prefs.comfy_workflow) if prefs and prefs.comfy_workflow else WORKFLOW_TEMPLATE
    workflow, bindings = load_workflow_template(template)
    if prefs and prefs.comfy_bindings.strip():  # preference overrides, key by key
        raw = json.loads(Path(template).read_text())["bindings"]
        bindings = ComfyBindings.from_dict({**raw, **json.loads(prefs.comfy_bindings)})
    return ComfyUIBackend(prefs.comfy_url if prefs else "http://127.0.0.1:8188", workflow, bindings,
                          deadline=deadline)


class FUSE4D_OT_animate(bpy.types.Operator):
    """Render the rig's views, send them to the back end and import the animated result (Esc cancels)"""
    bl_idname = "fuse4d.animate"
    bl_label = "Animate Scene"
    bl_options = {"REGISTER", "UNDO"}  # one undo step for the whole run, pushed when it finishes
    _timer = None
    _job = None  # AnimateJob (no annotation: Blender reads class annotations as properties)

    def invoke(self, context, event):
        s = context.scene.fuse4d
        if not is_splat(s.source):
            self.report({"ERROR"}, "pick a Fuse4D splat object first")
            return {"CANCELLED"}
        try:
            self._job = AnimateJob(s.source, make_backend(context, s.backend), frames=s.frames, fps=s.fps,
                                   prompt=s.prompt, width=s.resolution, height=s.resolution,
                                   engine=s.engine, samples=s.samples, hide_source=s.hide_source)
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        s.running = True
        _show_progress(context, self._job)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job, s = self._job, context.scene.fuse4d
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}  # the UI stays usable while the job runs
        else:
            job.step()
        _show_progress(context, job)
        if not job.finished:
            return {"RUNNING_MODAL"}
        _end_run(context, self._timer)
        if job.state == "DONE":
            self.report({"INFO"}, job.message)
            return {"FINISHED"}
        self.report({"WARNING"} if job.state == "CANCELLED" else {"ERROR"}, job.message)
        return {"CANCELLED"}

    def cancel(self, context):
        """Blender ends the run (a file is loaded, the window closes): stop the back end, clean up."""
        self._job.cancel()
        _show_progress(context, self._job)
        _end_run(context, self._timer)


def _show_progress(context, job) -> None:
    """The job's progress in the panel, the status bar (text) and the window's progress cursor."""
    s = context.scene.fuse4d
    s.progress, s.status = job.progress, job.message
    context.window_manager.progress_update(int(100 * job.progress))
    if context.workspace is not None and not job.finished:
        context.workspace.status_text_set(f"Fuse4D Animate Scene: {100 * job.progress:.0f}% {job.message} "
                                          "(Esc cancels)")
    for area in context.screen.areas if context.screen else []:
        if area.type == "VIEW_3D":
            area.tag_redraw()


def _end_run(context, timer) -> None:
    context.window_manager.event_timer_remove(timer)
    context.window_manager.progress_end()
    if context.workspace is not None:
        context.workspace.status_text_set(None)  # the status bar's own text again
    context.scene.fuse4d.running = False


def is_splat(obj) -> bool:
    return obj is not None and obj.type == "POINTCLOUD" and "fuse4d_splat" in obj


class Fuse4DSceneSettings(bpy.types.PropertyGroup):
    # No poll= here: with one, the bpy 4.2 module crashes at exit; the operators check the object instead.
    source: PointerProperty(name="Splat Object", type=bpy.types.Object)
    backend: EnumProperty(name="Back End", items=[("CLI", "Local Fuse4D", "Run the local Fuse4D CLI"),
                                                   ("COMFYUI", "ComfyUI", "Queue the workflow on a ComfyUI server")])
    frames: IntProperty(name="Frames", default=8, min=1)
    fps: FloatProperty(name="FPS", default=8.0, min=0.1)
    prompt: StringProperty(name="Prompt", default="")
    resolution: IntProperty(name="View Size", default=256, min=16, max=4096)
    engine: EnumProperty(name="Renderer", items=[("CYCLES", "Cycles", ""), ("EEVEE", "EEVEE", "")])
    samples: IntProperty(name="Samples", default=16, min=1)
    hide_source: BoolProperty(name="Hide Source", default=True,
                              description="Hide the captured object under the animated result")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(name="Status", default="")
    running: BoolProperty(default=False)


class FUSE4D_PT_panel(bpy.types.Panel):
    bl_label = "Fuse4D"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Fuse4D"

    def draw(self, context):
        s = context.scene.fuse4d
        col = self.layout.column()
        col.prop(s, "source")
        obj = context.object
        if obj is not None and nodes.DISPLAY_MODIFIER in obj.modifiers:
            mod = obj.modifiers[nodes.DISPLAY_MODIFIER]
            box = col.box()
            box.label(text="Display")
            for name in ("Ellipsoids", "Scale Multiplier", "Viewport Subsample", "Render Subsample", "Solid Colors"):
                box.prop(*nodes.input_ui(mod, name), text=name)
            if nodes.CROP_MODIFIER in obj.modifiers:
                crop = obj.modifiers[nodes.CROP_MODIFIER]
                box = col.box()
                box.label(text="Crop / Filter (exported as shown)")
                for name in ("Sphere", "Center", "Size", "Invert", "Min Opacity", "Max Size"):
                    box.prop(*nodes.input_ui(crop, name), text=name)
            else:
                col.operator(FUSE4D_OT_add_crop.bl_idname)
        col.operator(FUSE4D_OT_create_rig.bl_idname)
        if s.source is not None:
            col.label(text=f"Rig: {len(rig_cameras(s.source))} cameras")
        for prop in ("backend", "frames", "fps", "prompt", "resolution", "engine", "samples", "hide_source"):
            col.prop(s, prop)
        if s.running:
            if hasattr(col, "progress"):
                col.progress(factor=s.progress, text=s.status or "working (Esc cancels)")
            else:
                col.label(text=f"{100 * s.progress:.0f}% {s.status}")
        else:
            col.operator(FUSE4D_OT_animate.bl_idname)
            if s.status:
                col.label(text=s.status)


def menu_import(self, context):
    self.layout.operator(FUSE4D_OT_import_ply.bl_idname, text="Fuse4D 3DGS (.ply/.glb/.spz/.usd)")
    self.layout.operator(FUSE4D_OT_import_sequence.bl_idname, text="Fuse4D 4D Sequence (folder/.usd)")


def menu_export(self, context):
    self.layout.operator(FUSE4D_OT_export_ply.bl_idname, text="Fuse4D 3DGS (.ply/.glb/.spz/.usd)")
    self.layout.operator(FUSE4D_OT_export_sequence.bl_idname, text="Fuse4D 4D Sequence (folder/.usd)")


CLASSES = (Fuse4DPreferences, Fuse4DSceneSettings, FUSE4D_OT_import_ply, FUSE4D_OT_import_sequence,
           FUSE4D_OT_export_ply, FUSE4D_OT_export_sequence, FUSE4D_OT_add_crop, FUSE4D_OT_create_rig, FUSE4D_OT_animate, FUSE4D_PT_panel)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.fuse4d = PointerProperty(type=Fuse4DSceneSettings)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)
    bpy.types.TOPBAR_MT_file_export.append(menu_export)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    bpy.types.TOPBAR_MT_file_export.remove(menu_export)
    del bpy.types.Scene.fuse4d
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
