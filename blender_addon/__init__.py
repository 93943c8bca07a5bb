# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuse4D for Blender: import/export 3DGS splats and 4D splat sequences, and animate a captured
scene through a generation back end. Blender entry points are register()/unregister(); bpy is
imported only there, so the numpy-only modules (convert, backends) import anywhere."""


def register() -> None:
    from . import ui

    ui.register()


def unregister() -> None:
    from . import ui

    ui.unregister()
