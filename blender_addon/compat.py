# SPDX-License-Identifier: GPL-3.0-or-later
"""The Blender API differences between the versions the add-on supports (4.2 LTS .. 5.x), one
feature-detected function each (never a version number check), so the rest of the add-on has
one code path."""
from __future__ import annotations

import bpy


def fcurves(obj):
    """The F-curves animating `obj`: `Action.fcurves` up to 4.x, the channelbag of the object's
    action slot in 5.x's layered actions (where `Action.fcurves` no longer exists)."""
    anim = obj.animation_data
    action = anim.action if anim else None
    if action is None:
        return None
    if "fcurves" in action.bl_rna.properties:
        return action.fcurves
    from bpy_extras.anim_utils import action_get_channelbag_for_slot

    bag = action_get_channelbag_for_slot(action, anim.action_slot)
    return bag.fcurves if bag is not None else None


def find_fcurve(obj, data_path: str):
    curves = fcurves(obj)
    return curves.find(data_path) if curves is not None else None


def eevee_engine() -> str:
    """EEVEE's engine id: BLENDER_EEVEE_NEXT in 4.2-4.5, BLENDER_EEVEE again from 5.0."""
    items = {e.identifier for e in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in items else "BLENDER_EEVEE"


def engine_id(name: str) -> str:
    """'EEVEE' (or either EEVEE id) -> this version's id; other engines unchanged."""
    return eevee_engine() if name in ("EEVEE", "BLENDER_EEVEE", "BLENDER_EEVEE_NEXT") else name


def _typed_inputs(modifier):
    """5.3+: a Geometry Nodes modifier's inputs are RNA (`properties.inputs.<id>.value`), no longer
    ID properties on the modifier; None before that."""
    props = getattr(modifier, "properties", None)
    return getattr(props, "inputs", None) if props is not None else None


def set_modifier_input(modifier, identifier: str, value) -> None:
    inputs = _typed_inputs(modifier)
    if inputs is None:
        modifier[identifier] = value
    else:
        getattr(inputs, identifier).value = value


def get_modifier_input(modifier, identifier: str):
    inputs = _typed_inputs(modifier)
    return modifier[identifier] if inputs is None else getattr(inputs, identifier).value


def modifier_input_ui(modifier, identifier: str):
    """(owner, property) for layout.prop() of a modifier input."""
    inputs = _typed_inputs(modifier)
    return (modifier, f'["{identifier}"]') if inputs is None else (getattr(inputs, identifier), "value")


def modifier_input_path(modifier, identifier: str) -> str:
    """The data path of a modifier input from its object (for keyframes and F-curves)."""
    suffix = f'["{identifier}"]' if _typed_inputs(modifier) is None else f".properties.inputs.{identifier}.value"
    return f'modifiers["{modifier.name}"]{suffix}'


def set_wildcard_name(node, pattern: str) -> None:
    """A Remove Named Attribute node matching `pattern` ("f_*"): its `pattern_mode` property up to
    4.5, its *Pattern Mode* menu input from 5.0."""
    if hasattr(node, "pattern_mode"):
        node.pattern_mode = "WILDCARD"
    else:
        node.inputs["Pattern Mode"].default_value = "Wildcard"
    node.inputs["Name"].default_value = pattern
