# SPDX-License-Identifier: GPL-3.0-or-later
"""The one import scheme: CLI, console script, ComfyUI-style loading, light root import."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_root_package_does_not_import_torch():
    proc = run_py("import sys, fuse4d; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_format_module_is_numpy_only():
    proc = run_py("import sys, fuse4d.core.io, fuse4d.core.files; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_python_m_and_console_script_agree():
    by_module = subprocess.run([sys.executable, "-m", "fuse4d", "--help"], capture_output=True, text=True)
    script = Path(sys.executable).with_name("fuse4d")
    by_script = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert by_module.returncode == 0 and by_script.returncode == 0, by_module.stderr + by_script.stderr
    for command in ("info", "convert", "render", "demo"):
        assert command in by_module.stdout
    assert by_module.stdout.replace("__main__.py", "fuse4d") == by_script.stdout


def test_loads_like_a_comfyui_custom_node(tmp_path):
    # ComfyUI imports custom_nodes/<dir>/__init__.py under the folder's own name.
    link = tmp_path / "ComfyUI-Fuse4D"
    os.symlink(ROOT, link)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ComfyUI-Fuse4D', r'{link / '__init__.py'}')\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['ComfyUI-Fuse4D'] = m\n"
        "spec.loader.exec_module(m)\n"
        "import importlib; files = importlib.import_module('ComfyUI-Fuse4D.core.files')\n"
        "print(callable(m.comfy_entrypoint), m.WEB_DIRECTORY, files.__name__)\n"
    )
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "./web", "ComfyUI-Fuse4D.core.files"]


def test_bad_cli_input_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fuse4d", "render", "sample", "--cameras", "ring:3",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "orbit:N" in proc.stderr and "Traceback" not in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "fuse4d", "info", str(tmp_path / "nope.ply")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "nope.ply" in missing.stderr


def test_ui_workflows_ship_a_canvas_view():
    """ComfyUI 0.27 was reported to open a "getCanvas: canvas is null" dialog when a workflow without
    extra.ds is loaded right after the page opens (not reproduced on its frontend 1.45.20 here): every
    UI workflow carries a neutral one, as the frontend itself writes."""
    import json

    for path in sorted((ROOT / "example_workflows").glob("*.json")):
        ds = json.loads(path.read_text())["extra"]["ds"]
        assert ds == {"scale": 1, "offset": [0, 0]}, path.name


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists packages by hand (the root is the package): a new folder left off the list is
    missing from a non-editable install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("fuse4d",) + p.parent.relative_to(ROOT).parts)
             for p in ROOT.glob("**/__init__.py")
             if not any(part.startswith(".") or part in ("tests", "build")
                        for part in p.relative_to(ROOT).parts)}
    assert found == listed
