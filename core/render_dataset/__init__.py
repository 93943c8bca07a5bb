# SPDX-License-Identifier: GPL-3.0-or-later
"""`fuse4d render-dataset`: 4D training data from animated 3D assets, rendered by Blender in its own
process (blender_addon/dataset_worker.py); this package plans, shards, finishes and reports."""
from .launch import make_test_assets, run_worker
from .plan import RenderSettings, find_assets, plan_asset, shard_of
from .shard import run_shard

__all__ = ["RenderSettings", "find_assets", "make_test_assets", "plan_asset", "run_shard", "run_worker", "shard_of"]
