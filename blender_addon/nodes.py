# SPDX-License-Identifier: GPL-3.0-or-later
"""Geometry Nodes and the material that make a point cloud look (and render) like Gaussians,
and the node group that shows one timestep of a 4D sequence. Everything is stored in the .blend
(no handlers, no Python at render time)."""
from __future__ import annotations

import bmesh
import bpy

from . import compat
from .convert import SIGMA_EXTENT
from .splatio import SH_C0

TIME_GROUP = "Fuse4D Time"
BLEND_GROUP = "Fuse4D Time Blend"
DISPLAY_GROUP = "Fuse4D Splats"
MATERIAL = "Fuse4D Splat"
CROP_GROUP = "Fuse4D Crop"
TIME_MODIFIER = "Fuse4D Time"
DISPLAY_MODIFIER = "Fuse4D Splats"
CROP_MODIFIER = "Fuse4D Crop"
CROP_SHAPES = ("BOX", "SPHERE")
ELLIPSOID = "Fuse4D Ellipsoid"  # the instanced shape: a mesh object outside every scene
SOLID_COLOR = "splat_solid_color"  # the realised viewport mesh's active colour attribute (Solid view)
VERSION = 3  # bump when a group's layout changes; older groups are rebuilt


class Builder:
    """Tiny helper: add nodes and links with less noise."""

    def __init__(self, tree):
        self.tree = tree
        self.x = 0

    def node(self, kind: str, **props):
        n = self.tree.nodes.new(kind)
        n.location = (self.x, 0)
        self.x += 180
        for key, value in props.items():
            setattr(n, key, value)
        return n

    def link(self, out, inp):
        self.tree.links.new(out, inp)

    def math(self, op: str, a, b=None, kind="ShaderNodeMath"):
        n = self.node(kind, operation=op)
        for i, v in enumerate((a, b)):
            if v is None:
                continue
            if isinstance(v, (int, float)):
                n.inputs[i].default_value = v
            else:
                self.link(v, n.inputs[i])
        return n.outputs[0]


def _socket(tree, name, in_out, kind, default=None, lo=None, hi=None):
    s = tree.interface.new_socket(name, in_out=in_out, socket_type=kind)
    if default is not None:
        s.default_value = default
    if lo is not None:
        s.min_value = lo
    if hi is not None:
        s.max_value = hi
    return s


def _fresh_group(name: str):
    tree = bpy.data.node_groups.get(name)
    if tree is not None and tree.get("fuse4d_version") == VERSION:
        return tree, False
    if tree is None:
        tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    else:
        tree.nodes.clear()
        tree.interface.clear()
    tree["fuse4d_version"] = VERSION
    return tree, True


def time_group():
    """Keep only the points whose `timestep` attribute equals the Frame Index input."""
    tree, build = _fresh_group(TIME_GROUP)
    if not build:
        return tree
    _socket(tree, "Geometry", "INPUT", "NodeSocketGeometry")
    _socket(tree, "Frame Index", "INPUT", "NodeSocketInt", 0)
    _socket(tree, "Geometry", "OUTPUT", "NodeSocketGeometry")
    b = Builder(tree)
    gin = b.node("NodeGroupInput")
    attr = b.node("GeometryNodeInputNamedAttribute", data_type="INT")
    attr.inputs["Name"].default_value = "timestep"
    # |timestep - index| > 0.5 with plain Math (the Compare node's sockets differ between versions).
    other = b.math("GREATER_THAN", b.math("ABSOLUTE", b.math("SUBTRACT", attr.outputs["Attribute"],
                                                           gin.outputs["Frame Index"])), 0.5)
    delete = b.node("GeometryNodeDeleteGeometry", domain="POINT")
    b.link(gin.outputs["Geometry"], delete.inputs["Geometry"])
    b.link(other, delete.inputs["Selection"])
    gout = b.node("NodeGroupOutput")
    b.link(delete.outputs[0], gout.inputs["Geometry"])
    return tree


def blend_group():
    """Corresponding Gaussians between timesteps: at fractional Time, timestep floor(Time) mixed
    towards the next (mod Timesteps) by the fraction: positions, log scales, opacity logits and
    colours linearly, rotations by slerp. Gaussian i of timestep t is point t * Count + i."""
    tree, build = _fresh_group(BLEND_GROUP)
    if not build:
        return tree
    _socket(tree, "Geometry", "INPUT", "NodeSocketGeometry")
    _socket(tree, "Time", "INPUT", "NodeSocketFloat", 0.0)
    _socket(tree, "Count", "INPUT", "NodeSocketInt", 1, 1)
    _socket(tree, "Timesteps", "INPUT", "NodeSocketInt", 1, 1)
    _socket(tree, "Geometry", "OUTPUT", "NodeSocketGeometry")
    b = Builder(tree)
    gin = b.node("NodeGroupInput")
    t0 = b.math("FLOORED_MODULO", b.math("FLOOR", gin.outputs["Time"]), gin.outputs["Timesteps"])
    frac = b.math("FRACT", gin.outputs["Time"])
    t1 = b.math("FLOORED_MODULO", b.math("ADD", t0, 1.0), gin.outputs["Timesteps"])
    attr = b.node("GeometryNodeInputNamedAttribute", data_type="INT")
    attr.inputs["Name"].default_value = "timestep"
    other = b.math("GREATER_THAN", b.math("ABSOLUTE", b.math("SUBTRACT", attr.outputs["Attribute"], t0)), 0.5)
    delete = b.node("GeometryNodeDeleteGeometry", domain="POINT")
    b.link(gin.outputs["Geometry"], delete.inputs["Geometry"])
    b.link(other, delete.inputs["Selection"])
    geo = delete.outputs[0]
    index = b.node("GeometryNodeInputIndex")
    # The same Gaussian at the next timestep in the full (undeleted) geometry.
    partner = b.math("ADD", b.math("MULTIPLY", t1, gin.outputs["Count"]), index.outputs[0])

    def sampled(data_type, field_socket):
        node = b.node("GeometryNodeSampleIndex", data_type=data_type, domain="POINT")
        b.link(gin.outputs["Geometry"], node.inputs["Geometry"])
        b.link(field_socket, node.inputs["Value"])
        b.link(partner, node.inputs["Index"])
        return node.outputs[0]

    def mix(data_type, a, c):
        node = b.node("ShaderNodeMix", data_type=data_type)
        if data_type == "VECTOR":
            node.factor_mode = "UNIFORM"
        suffix = {"FLOAT": "Float", "VECTOR": "Vector", "ROTATION": "Rotation"}[data_type]
        b.link(frac, _by_id(node.inputs, "Factor_Float"))
        b.link(a, _by_id(node.inputs, f"A_{suffix}"))
        b.link(c, _by_id(node.inputs, f"B_{suffix}"))
        return _by_id(node.outputs, f"Result_{suffix}")

    pos = b.node("GeometryNodeInputPosition").outputs[0]
    set_pos = b.node("GeometryNodeSetPosition")
    b.link(geo, set_pos.inputs["Geometry"])
    b.link(mix("VECTOR", pos, sampled("FLOAT_VECTOR", pos)), set_pos.inputs["Position"])
    geo = set_pos.outputs[0]
    for name, kind, mix_kind in (("scale", "FLOAT_VECTOR", "VECTOR"), ("f_dc", "FLOAT_VECTOR", "VECTOR"),
                                 ("opacity", "FLOAT", "FLOAT"), ("rot", "QUATERNION", "ROTATION")):
        read = b.node("GeometryNodeInputNamedAttribute", data_type=kind)
        read.inputs["Name"].default_value = name
        value = read.outputs["Attribute"]
        store = b.node("GeometryNodeStoreNamedAttribute", data_type=kind, domain="POINT")
        store.inputs["Name"].default_value = name
        b.link(geo, store.inputs["Geometry"])
        b.link(mix(mix_kind, value, sampled(kind, value)), store.inputs["Value"])
        geo = store.outputs[0]
    gout = b.node("NodeGroupOutput")
    b.link(geo, gout.inputs["Geometry"])
    return tree


def _by_id(sockets, identifier: str):
    """A socket by identifier (the Mix node's A/B sockets share names across data types)."""
    return next(sock for sock in sockets if sock.identifier == identifier)


def crop_group():
    """Delete the Gaussians outside a box (half extents Size) or sphere (radius Size.x) around
    Center, in the object's data space (Invert keeps the outside instead), and those fainter than
    Min Opacity or larger than Max Size (3 sigma of the largest axis; 0 = no limit)."""
    tree, build = _fresh_group(CROP_GROUP)
    if not build:
        return tree
    _socket(tree, "Geometry", "INPUT", "NodeSocketGeometry")
    _socket(tree, "Sphere", "INPUT", "NodeSocketBool", False)
    _socket(tree, "Center", "INPUT", "NodeSocketVector", (0.0, 0.0, 0.0))
    _socket(tree, "Size", "INPUT", "NodeSocketVector", (1e4, 1e4, 1e4))
    _socket(tree, "Invert", "INPUT", "NodeSocketBool", False)
    _socket(tree, "Min Opacity", "INPUT", "NodeSocketFloat", 0.0, 0.0, 1.0)
    _socket(tree, "Max Size", "INPUT", "NodeSocketFloat", 0.0, 0.0, 1e6)
    _socket(tree, "Geometry", "OUTPUT", "NodeSocketGeometry")
    b = Builder(tree)
    gin = b.node("NodeGroupInput")
    pos = b.node("GeometryNodeInputPosition")
    d = b.node("ShaderNodeVectorMath", operation="SUBTRACT")
    b.link(pos.outputs[0], d.inputs[0])
    b.link(gin.outputs["Center"], d.inputs[1])
    # Box: max_i(|d_i| - size_i) <= 0; sphere: |d| - size_x <= 0.
    absd = b.node("ShaderNodeVectorMath", operation="ABSOLUTE")
    b.link(d.outputs[0], absd.inputs[0])
    over = b.node("ShaderNodeVectorMath", operation="SUBTRACT")
    b.link(absd.outputs[0], over.inputs[0])
    b.link(gin.outputs["Size"], over.inputs[1])
    sep = b.node("ShaderNodeSeparateXYZ")
    b.link(over.outputs[0], sep.inputs[0])
    box = b.math("MAXIMUM", b.math("MAXIMUM", sep.outputs[0], sep.outputs[1]), sep.outputs[2])
    length = b.node("ShaderNodeVectorMath", operation="LENGTH")
    b.link(d.outputs[0], length.inputs[0])
    size = b.node("ShaderNodeSeparateXYZ")
    b.link(gin.outputs["Size"], size.inputs[0])
    sphere = b.math("SUBTRACT", length.outputs["Value"], size.outputs[0])
    dist = b.node("GeometryNodeSwitch", input_type="FLOAT")
    b.link(gin.outputs["Sphere"], dist.inputs["Switch"])
    b.link(box, dist.inputs["False"])
    b.link(sphere, dist.inputs["True"])
    outside = b.math("GREATER_THAN", dist.outputs[0], 0.0)
    # outside XOR invert = |outside - invert|
    drop = b.math("ABSOLUTE", b.math("SUBTRACT", outside, gin.outputs["Invert"]))
    op = b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT")
    op.inputs["Name"].default_value = "opacity"
    alpha = b.math("DIVIDE", 1.0, b.math("ADD", 1.0, b.math("EXPONENT", b.math("MULTIPLY", op.outputs["Attribute"], -1.0))))
    faint = b.math("LESS_THAN", alpha, gin.outputs["Min Opacity"])
    sc = b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR")
    sc.inputs["Name"].default_value = "scale"
    ssep = b.node("ShaderNodeSeparateXYZ")
    b.link(sc.outputs["Attribute"], ssep.inputs[0])
    biggest = b.math("MULTIPLY", b.math("EXPONENT", b.math("MAXIMUM", b.math("MAXIMUM", ssep.outputs[0], ssep.outputs[1]),
                                                            ssep.outputs[2])), SIGMA_EXTENT)
    limited = b.math("GREATER_THAN", gin.outputs["Max Size"], 0.0)
    large = b.math("MULTIPLY", b.math("GREATER_THAN", biggest, gin.outputs["Max Size"]), limited)
    any_drop = b.math("GREATER_THAN", b.math("ADD", b.math("ADD", drop, faint), large), 0.5)
    delete = b.node("GeometryNodeDeleteGeometry", domain="POINT")
    b.link(gin.outputs["Geometry"], delete.inputs["Geometry"])
    b.link(any_drop, delete.inputs["Selection"])
    gout = b.node("NodeGroupOutput")
    b.link(delete.outputs[0], gout.inputs["Geometry"])
    return tree


def ellipsoid_object():
    """The unit ico-sphere every Gaussian instances, in a mesh object linked to no scene. Its mesh
    names SOLID_COLOR as its active and default colour attribute: realising instances passes the
    first mesh's names on, and Geometry Nodes cannot set them otherwise, so this is what lets Solid
    view's Attribute colour find the splat colours on the realised mesh."""
    obj = bpy.data.objects.get(ELLIPSOID)
    if obj is not None and obj.type == "MESH" and obj.get("fuse4d_version") == VERSION:
        return obj
    mesh = bpy.data.meshes.new(ELLIPSOID)
    bm = bmesh.new()
    try:
        bmesh.ops.create_icosphere(bm, subdivisions=2, radius=1.0)  # what the Ico Sphere node makes
        for face in bm.faces:
            face.smooth = True
        bm.to_mesh(mesh)
    finally:
        bm.free()
    mesh.color_attributes.new(SOLID_COLOR, "FLOAT_COLOR", "POINT")
    mesh.attributes.active_color_name = mesh.attributes.default_color_name = SOLID_COLOR
    if obj is None:
        obj = bpy.data.objects.new(ELLIPSOID, mesh)
    else:
        old, obj.data = obj.data, mesh
        if old is not None and old.users == 0:
            bpy.data.meshes.remove(old)
    obj["fuse4d_version"] = VERSION
    return obj


def display_group():
    """Points -> oriented ellipsoids (ico-spheres scaled by SIGMA_EXTENT * exp(scale) * multiplier,
    rotated by the normalised `rot`), or plain points; colour and opacity stored for the material.
    In the viewport (Solid Colors on) the ellipsoids are realised into one mesh whose active colour
    attribute SOLID_COLOR holds each splat's colour: Solid view cannot show per-instance values."""
    tree, build = _fresh_group(DISPLAY_GROUP)
    shape = ellipsoid_object()
    if not build:
        info = next(n for n in tree.nodes if n.bl_idname == "GeometryNodeObjectInfo")
        if info.inputs["Object"].default_value != shape:  # the user removed the shape: a new one
            info.inputs["Object"].default_value = shape
        return tree
    _socket(tree, "Geometry", "INPUT", "NodeSocketGeometry")
    _socket(tree, "Ellipsoids", "INPUT", "NodeSocketBool", True)
    _socket(tree, "Scale Multiplier", "INPUT", "NodeSocketFloat", 1.0, 0.0, 100.0)
    _socket(tree, "Viewport Subsample", "INPUT", "NodeSocketFloat", 1.0, 0.0, 1.0)
    _socket(tree, "Render Subsample", "INPUT", "NodeSocketFloat", 1.0, 0.0, 1.0)
    _socket(tree, "Solid Colors", "INPUT", "NodeSocketBool", True)
    _socket(tree, "Material", "INPUT", "NodeSocketMaterial")
    _socket(tree, "Geometry", "OUTPUT", "NodeSocketGeometry")
    b = Builder(tree)
    gin = b.node("NodeGroupInput")

    # Subsample: keep a deterministic random fraction (different ratio in the viewport and renders).
    rand = b.node("FunctionNodeRandomValue", data_type="FLOAT")
    viewport = b.node("GeometryNodeIsViewport")
    ratio = b.node("GeometryNodeSwitch", input_type="FLOAT")
    b.link(viewport.outputs[0], ratio.inputs["Switch"])
    b.link(gin.outputs["Render Subsample"], ratio.inputs["False"])
    b.link(gin.outputs["Viewport Subsample"], ratio.inputs["True"])
    # Random Value has one output per type up to 5.2 and one typed output from 5.3: take the float one.
    value = next(o for o in rand.outputs if o.type == "VALUE")
    drop = b.math("GREATER_THAN", value, ratio.outputs[0], "ShaderNodeMath")
    delete = b.node("GeometryNodeDeleteGeometry", domain="POINT")
    b.link(gin.outputs["Geometry"], delete.inputs["Geometry"])
    b.link(drop, delete.inputs["Selection"])
    geo = delete.outputs[0]

    # Colour 0.5 + C0 * f_dc and opacity sigmoid(logit), for the material.
    dc = b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR")
    dc.inputs["Name"].default_value = "f_dc"
    color = b.node("ShaderNodeVectorMath", operation="MULTIPLY_ADD")
    b.link(dc.outputs["Attribute"], color.inputs[0])
    color.inputs[1].default_value = (SH_C0,) * 3
    color.inputs[2].default_value = (0.5,) * 3
    store_c = b.node("GeometryNodeStoreNamedAttribute", data_type="FLOAT_VECTOR", domain="POINT")
    store_c.inputs["Name"].default_value = "splat_color"
    b.link(geo, store_c.inputs["Geometry"])
    b.link(color.outputs[0], store_c.inputs["Value"])
    op = b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT")
    op.inputs["Name"].default_value = "opacity"
    alpha = b.math("DIVIDE", 1.0, b.math("ADD", 1.0, b.math("EXPONENT", b.math("MULTIPLY", op.outputs["Attribute"], -1.0))))
    store_a = b.node("GeometryNodeStoreNamedAttribute", data_type="FLOAT", domain="POINT")
    store_a.inputs["Name"].default_value = "splat_alpha"
    b.link(store_c.outputs[0], store_a.inputs["Geometry"])
    b.link(alpha, store_a.inputs["Value"])
    geo = store_a.outputs[0]

    # Size: SIGMA_EXTENT * exp(log scale) * multiplier, per axis.
    sc = b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR")
    sc.inputs["Name"].default_value = "scale"
    sep = b.node("ShaderNodeSeparateXYZ")
    b.link(sc.outputs["Attribute"], sep.inputs[0])
    comb = b.node("ShaderNodeCombineXYZ")
    mult = b.math("MULTIPLY", gin.outputs["Scale Multiplier"], SIGMA_EXTENT)
    for i in range(3):
        b.link(b.math("MULTIPLY", b.math("EXPONENT", sep.outputs[i]), mult), comb.inputs[i])

    # Rotation: the stored quaternion normalised (files often hold unnormalised ones).
    rot = b.node("GeometryNodeInputNamedAttribute", data_type="QUATERNION")
    rot.inputs["Name"].default_value = "rot"
    wxyz = b.node("FunctionNodeRotationToQuaternion")
    b.link(rot.outputs["Attribute"], wxyz.inputs[0])
    sq = [b.math("MULTIPLY", wxyz.outputs[i], wxyz.outputs[i]) for i in range(4)]
    norm = b.math("SQRT", b.math("ADD", b.math("ADD", sq[0], sq[1]), b.math("ADD", sq[2], sq[3])))
    norm = b.math("MAXIMUM", norm, 1e-12)
    quat = b.node("FunctionNodeQuaternionToRotation")
    for i in range(4):
        b.link(b.math("DIVIDE", wxyz.outputs[i], norm), quat.inputs[i])

    info = b.node("GeometryNodeObjectInfo")
    info.inputs["Object"].default_value = shape
    mat_ico = b.node("GeometryNodeSetMaterial")
    b.link(info.outputs["Geometry"], mat_ico.inputs["Geometry"])
    b.link(gin.outputs["Material"], mat_ico.inputs["Material"])
    inst = b.node("GeometryNodeInstanceOnPoints")
    b.link(geo, inst.inputs["Points"])
    b.link(mat_ico.outputs[0], inst.inputs["Instance"])
    b.link(quat.outputs[0], inst.inputs["Rotation"])
    b.link(comb.outputs[0], inst.inputs["Scale"])

    # Viewport, Solid Colors on: one realised mesh with the colour as its active colour attribute
    # (it keeps only what the viewport draws: position, splat_color, splat_alpha). Renders and the
    # Solid Colors off case keep the instances (the Switch evaluates only the branch it picks).
    realised = inst.outputs[0]
    for pattern in ("f_*", "scale", "rot", "opacity", "timestep"):
        remove = b.node("GeometryNodeRemoveAttribute")
        compat.set_wildcard_name(remove, pattern)
        b.link(realised, remove.inputs["Geometry"])
        realised = remove.outputs[0]
    realize = b.node("GeometryNodeRealizeInstances")
    b.link(realised, realize.inputs["Geometry"])
    rgb = b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR")
    rgb.inputs["Name"].default_value = "splat_color"
    store_rgb = b.node("GeometryNodeStoreNamedAttribute", data_type="FLOAT_COLOR", domain="POINT")
    store_rgb.inputs["Name"].default_value = SOLID_COLOR
    b.link(realize.outputs[0], store_rgb.inputs["Geometry"])
    b.link(rgb.outputs["Attribute"], store_rgb.inputs["Value"])
    solid = b.node("GeometryNodeSwitch", input_type="GEOMETRY")
    b.link(b.math("MULTIPLY", viewport.outputs[0], gin.outputs["Solid Colors"]), solid.inputs["Switch"])
    b.link(inst.outputs[0], solid.inputs["False"])
    b.link(store_rgb.outputs[0], solid.inputs["True"])

    # Points mode: spheres of the mean radius (fast viewport display).
    radius = b.math("DIVIDE", b.math("ADD", b.math("ADD", comb.inputs[0].links[0].from_socket,
                                                      comb.inputs[1].links[0].from_socket),
                                     comb.inputs[2].links[0].from_socket), 3.0)
    set_r = b.node("GeometryNodeSetPointRadius")
    b.link(geo, set_r.inputs["Points"])
    b.link(radius, set_r.inputs["Radius"])
    mat_pts = b.node("GeometryNodeSetMaterial")
    b.link(set_r.outputs[0], mat_pts.inputs["Geometry"])
    b.link(gin.outputs["Material"], mat_pts.inputs["Material"])

    switch = b.node("GeometryNodeSwitch", input_type="GEOMETRY")
    b.link(gin.outputs["Ellipsoids"], switch.inputs["Switch"])
    b.link(mat_pts.outputs[0], switch.inputs["False"])
    b.link(solid.outputs[0], switch.inputs["True"])
    gout = b.node("NodeGroupOutput")
    b.link(switch.outputs[0], gout.inputs["Geometry"])
    return tree


def splat_material():
    """Emission coloured 0.5 + C0*f_dc, alpha = sigmoid(opacity) * Gaussian falloff.
    The falloff uses the shell's facing ratio: on a unit sphere a ray hitting with normal N
    passes at projected distance r = sqrt(1 - (N.V)^2) from the centre, and the shell is
    SIGMA_EXTENT sigmas, so alpha = a * exp(-0.5 * (SIGMA_EXTENT r)^2). Back faces are
    transparent so each splat counts once (EEVEE and Cycles alike)."""
    mat = bpy.data.materials.get(MATERIAL)
    if mat is not None and mat.get("fuse4d_version") == VERSION:
        return mat
    mat = mat or bpy.data.materials.new(MATERIAL)
    mat["fuse4d_version"] = VERSION
    mat.use_nodes = True
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "DITHERED"
    mat.use_backface_culling = False
    tree = mat.node_tree
    tree.nodes.clear()
    b = Builder(tree)

    def attr(name):
        # Instanced ellipsoids see the value on the instancer; plain points on their geometry.
        a = b.node("ShaderNodeAttribute", attribute_type="INSTANCER", attribute_name=name)
        g = b.node("ShaderNodeAttribute", attribute_type="GEOMETRY", attribute_name=name)
        return a, g

    ci, cg = attr("splat_color")
    color = b.node("ShaderNodeVectorMath", operation="ADD")
    b.link(ci.outputs["Vector"], color.inputs[0])
    b.link(cg.outputs["Vector"], color.inputs[1])
    # Splat colours are display values; emission is scene-linear (sRGB decode, gamma 2.2 approx).
    gamma = b.node("ShaderNodeGamma")
    b.link(color.outputs[0], gamma.inputs["Color"])
    gamma.inputs["Gamma"].default_value = 2.2
    emit = b.node("ShaderNodeEmission")
    b.link(gamma.outputs[0], emit.inputs["Color"])
    emit.inputs["Strength"].default_value = 1.0

    ai, ag = attr("splat_alpha")
    alpha = b.math("ADD", ai.outputs["Fac"], ag.outputs["Fac"])
    geom = b.node("ShaderNodeNewGeometry")
    dot = b.node("ShaderNodeVectorMath", operation="DOT_PRODUCT")
    b.link(geom.outputs["Normal"], dot.inputs[0])
    b.link(geom.outputs["Incoming"], dot.inputs[1])
    r2 = b.math("SUBTRACT", 1.0, b.math("MULTIPLY", dot.outputs["Value"], dot.outputs["Value"]))
    falloff = b.math("EXPONENT", b.math("MULTIPLY", r2, -0.5 * SIGMA_EXTENT ** 2))
    front = b.math("SUBTRACT", 1.0, geom.outputs["Backfacing"])
    fac = b.math("MULTIPLY", b.math("MULTIPLY", alpha, falloff), front)
    transparent = b.node("ShaderNodeBsdfTransparent")
    mix = b.node("ShaderNodeMixShader")
    b.link(fac, mix.inputs["Fac"])
    b.link(transparent.outputs[0], mix.inputs[1])
    b.link(emit.outputs[0], mix.inputs[2])
    out = b.node("ShaderNodeOutputMaterial")
    b.link(mix.outputs[0], out.inputs["Surface"])
    return mat


def _input_id(group, name: str) -> str:
    return next(s.identifier for s in group.interface.items_tree
                if getattr(s, "in_out", None) == "INPUT" and s.name == name)


def set_input(modifier, name: str, value) -> None:
    compat.set_modifier_input(modifier, _input_id(modifier.node_group, name), value)


def get_input(modifier, name: str):
    return compat.get_modifier_input(modifier, _input_id(modifier.node_group, name))


def input_ui(modifier, name: str):
    """(owner, property) to draw a modifier input with layout.prop()."""
    return compat.modifier_input_ui(modifier, _input_id(modifier.node_group, name))


def input_path(modifier, name: str) -> str:
    """Data path (from the object) of a modifier input, for keyframes."""
    return compat.modifier_input_path(modifier, _input_id(modifier.node_group, name))


def add_display(obj, ellipsoids: bool = True, scale_multiplier: float = 1.0,
                viewport_subsample: float = 1.0, solid_colors: bool = True):
    mod = obj.modifiers.get(DISPLAY_MODIFIER) or obj.modifiers.new(DISPLAY_MODIFIER, "NODES")
    mod.node_group = display_group()
    set_input(mod, "Ellipsoids", bool(ellipsoids))
    set_input(mod, "Scale Multiplier", float(scale_multiplier))
    set_input(mod, "Viewport Subsample", float(viewport_subsample))
    set_input(mod, "Solid Colors", bool(solid_colors))
    set_input(mod, "Material", splat_material())
    if splat_material().name not in obj.data.materials:
        obj.data.materials.append(splat_material())
    return mod


def add_crop(obj, sphere: bool = False, center=(0.0, 0.0, 0.0), size=(1e4, 1e4, 1e4), invert: bool = False,
             min_opacity: float = 0.0, max_size: float = 0.0):
    """The crop/filter modifier, placed just before the display (after Time): non-destructive,
    and what export writes (export evaluates every modifier but the display)."""
    mod = obj.modifiers.get(CROP_MODIFIER) or obj.modifiers.new(CROP_MODIFIER, "NODES")
    mod.node_group = crop_group()
    for name, value in (("Sphere", bool(sphere)), ("Center", tuple(map(float, center))),
                        ("Size", tuple(map(float, size))), ("Invert", bool(invert)),
                        ("Min Opacity", float(min_opacity)), ("Max Size", float(max_size))):
        set_input(mod, name, value)
    display = list(obj.modifiers).index(obj.modifiers[DISPLAY_MODIFIER]) if DISPLAY_MODIFIER in obj.modifiers else None
    index = list(obj.modifiers).index(mod)
    if display is not None and index > display:
        with bpy.context.temp_override(object=obj):
            bpy.ops.object.modifier_move_to_index(modifier=mod.name, index=display)
    return mod


def add_time(obj, interpolate: bool = False):
    """The timestep filter (or blend, for corresponding sequences) goes first so the display only
    ever sees one timestep."""
    mod = obj.modifiers.get(TIME_MODIFIER) or obj.modifiers.new(TIME_MODIFIER, "NODES")
    mod.node_group = blend_group() if interpolate else time_group()
    index = list(obj.modifiers).index(mod)
    if index != 0:
        with bpy.context.temp_override(object=obj):
            bpy.ops.object.modifier_move_to_index(modifier=mod.name, index=0)
    return mod
