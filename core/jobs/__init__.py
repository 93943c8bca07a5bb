# SPDX-License-Identifier: GPL-3.0-or-later
"""The jobs: whole runs built from the core's primitives, one module each, behind the CLI (and so
behind the Blender add-on's local back end, which runs `fuse4d animate-scene`).
  animate         frozen-time views (+ cameras) -> 4D grid -> 4D Gaussians (`fuse4d animate-scene`)
  demo            the main job on the embedded default (`fuse4d demo`)
  completion_demo the demo's 4D completion on the bundled dynamic scene
"""
