# SPDX-License-Identifier: GPL-3.0-or-later
"""Nothing untrusted runs code or escapes its folder: weights are safetensors only (pickles refused
with a way to convert them), the source has no unsafe deserialisation, and file names read from
manifests, job files, node inputs and server answers stay inside their folder."""
import ast
import json
import os
import pickle  # noqa: S403 (only to make the pickle files that must be refused)
import re
from pathlib import Path

import pytest
import torch

from fuse4d.core.io import SplatFormatError, read_job, read_sequence, write_job, write_sequence
from fuse4d.core.io.paths import member_problem
from fuse4d.core.weights_file import WeightsFileError

REPO = Path(__file__).resolve().parents[1]


# --- weights --------------------------------------------------------------------------------

@pytest.fixture
def pickles(tmp_path):
    state = {"w": torch.ones(3)}
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "renamed.safetensors").write_bytes((tmp_path / "model.pt").read_bytes())  # zip pickle
    (tmp_path / "plain.safetensors").write_bytes(pickle.dumps(state, protocol=4))         # bare pickle
    return tmp_path


def test_both_model_loaders_refuse_pickles_and_say_how_to_convert(pickles):
    from fuse4d.core.recon.weights import WeightsError, read_header
    from fuse4d.core.wan.keys import read_state_dict

    for name in ("renamed.safetensors", "plain.safetensors", "model.pt"):
        with pytest.raises(WeightsError, match="convert-weights"):
            read_header(pickles / name)
        with pytest.raises(WeightsFileError, match="convert-weights"):
            read_state_dict(str(pickles / name))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_convert_weights_command_makes_a_loadable_safetensors_file(pickles, capsys):
    from safetensors.torch import load_file

    from fuse4d.core.cli import main

    assert main(["convert-weights", str(pickles / "model.pt"), str(pickles / "model.safetensors")]) == 0
    assert torch.equal(load_file(str(pickles / "model.safetensors"))["w"], torch.ones(3))
    # a pickle holding code (not tensors only) is refused by weights_only=True, never executed
    (pickles / "evil.pt").write_bytes(pickle.dumps(Evil()))
    assert main(["convert-weights", str(pickles / "evil.pt"), str(pickles / "evil.safetensors")]) == 2
    assert "cannot be read as a tensors-only checkpoint" in capsys.readouterr().err
    assert not (pickles / "evil.safetensors").exists() and not (pickles / "pwned").exists()


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path.cwd() / 'pwned'}",))


UNSAFE = [
    (re.compile(r"^\s*(import pickle|from pickle|import dill|import cloudpickle|import marshal)"), "a pickle module"),
    (re.compile(r"\byaml\.load\((?![^)]*Loader=yaml\.SafeLoader)"), "yaml.load without SafeLoader"),
    (re.compile(r"\b(yaml\.unsafe_load|jsonpickle|shelve\.open|numpy\.load\([^)]*allow_pickle=True)"), "unsafe loader"),
]


def _python_files():
    skip = {".venv", ".cache", ".git", "node_modules"}
    for path in REPO.rglob("*.py"):
        if not skip & set(path.relative_to(REPO).parts) and path.name != "test_security.py":
            yield path


def test_the_code_has_no_unsafe_deserialisation():
    """A scan of every Python file: no pickle module, torch.load only with weights_only=True (and
    only in the one converter), no eval/exec, yaml only through a safe loader."""
    problems = []
    for path in _python_files():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO)
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, what in UNSAFE:
                if pattern.search(line):
                    problems.append(f"{rel}:{number}: {what}")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
                problems.append(f"{rel}:{node.lineno}: {name}()")
            if name == "torch.load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    problems.append(f"{rel}:{node.lineno}: torch.load without weights_only=True")
                elif rel.as_posix() != "core/weights_file.py":
                    problems.append(f"{rel}:{node.lineno}: torch.load outside core/weights_file.py")
            if name in ("numpy.load", "np.load") and not any(
                    k.arg == "allow_pickle" and getattr(k.value, "value", None) is False for k in node.keywords):
                problems.append(f"{rel}:{node.lineno}: {name} without allow_pickle=False")
    assert not problems, "\n".join(problems)


def test_the_scan_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The scan above can fail: planted examples of each problem are all reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport yaml, torch\nyaml.load(s)\ntorch.load(p)\neval(s)\n"
                   "torch.load(p, weights_only=True)\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    with pytest.raises(AssertionError) as info:
        test_the_code_has_no_unsafe_deserialisation()
    text = str(info.value)
    for expected in ("a pickle module", "yaml.load without SafeLoader", "torch.load without weights_only",
                     "eval()", "torch.load outside"):
        assert expected in text


# --- paths ------------------------------------------------------------------------------------

ESCAPES = ["../x.ply", "a/../../x.ply", "/etc/passwd", "C:\\Windows\\x.ply", "C:x.ply", "\\\\server\\share\\x.ply",
           "..\\x.ply", "a\\..\\..\\x.ply", "", " ", "a\0.ply", None, 3, ["x.ply"]]


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_could_leave_the_folder_are_refused(tmp_path, name):
    assert member_problem(tmp_path, name)


def test_symlinks_leaving_the_folder_are_refused(tmp_path):
    inside = tmp_path / "seq"
    inside.mkdir()
    (tmp_path / "secret.ply").write_bytes(b"")
    (inside / "link.ply").symlink_to(tmp_path / "secret.ply")
    (inside / "sub").symlink_to(tmp_path)
    (inside / "ok.ply").write_bytes(b"")
    (inside / "alias.ply").symlink_to(inside / "ok.ply")
    assert member_problem(inside, "link.ply") and member_problem(inside, "sub/secret.ply")
    assert member_problem(inside, "ok.ply") is None and member_problem(inside, "alias.ply") is None
    assert member_problem(inside, "frames/frame_0000.ply") is None


def test_manifest_and_job_cannot_reach_outside_their_folder(tmp_path):
    from fuse4d.core.io import Sequence4D
    from fuzz_targets import camera, small_arrays

    write_sequence(tmp_path / "seq", Sequence4D(frames=[small_arrays()]))
    (tmp_path / "outside.ply").write_bytes((tmp_path / "seq" / "frame_0000.ply").read_bytes())
    (tmp_path / "seq" / "link.ply").symlink_to(tmp_path / "outside.ply")
    manifest = json.loads((tmp_path / "seq" / "manifest.json").read_text())
    for name in ("../outside.ply", str(tmp_path / "outside.ply"), "link.ply", "C:\\outside.ply"):
        manifest["frames"][0]["file"] = name
        (tmp_path / "seq" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(SplatFormatError, match="frame file"):
            read_sequence(tmp_path / "seq")
    cams = [dict(camera(0), image="views/view_000.png")]
    for field, value in (("image", "../outside.png"), ("image", "/etc/passwd"), ("source", "../outside.ply"),
                         ("source", "D:\\scene.ply")):
        job = write_job(tmp_path / "job", [dict(c, **({field: value} if field == "image" else {})) for c in cams],
                        frames=2, fps=8, source=value if field == "source" else "source.ply")
        with pytest.raises(ValueError, match=f"{field} .* (relative|climb)"):
            read_job(job.parent)


def test_blender_downloads_stay_in_the_job_result_folder(tmp_path):
    """Whatever names a ComfyUI server sends, the add-on writes only under JOB/result."""
    from fuse4d.blender_addon.backends import ComfyBindings, ComfyUIBackend, plain_file_name

    assert plain_file_name("sub/dir/frame_0000.ply") == "frame_0000.ply"
    assert plain_file_name("..\\..\\manifest.json") == "manifest.json"
    for name in ("..", ".", "", "a/..", "C:evil.ply", "x\0.ply", "dir/"):
        with pytest.raises(RuntimeError, match="unusable output file name"):
            plain_file_name(name)

    class Server(ComfyUIBackend):
        def _request(self, path, data=None, headers=None, sink=None):
            body = b"data:" + path.encode()
            if sink is None:
                return body
            sink.write(body)  # downloads are streamed to an open file
            return b""

    job = tmp_path / "job"
    job.mkdir()
    backend = Server("http://x", {}, ComfyBindings())
    outputs = {"9": {"splats": [{"subfolder": "../..", "manifest": "../../../manifest.json",
                                 "files": ["/etc/frame_0000.ply", "..\\frame_0001.ply"]}]}}
    backend._download(outputs, job / "result")
    assert sorted(p.name for p in (job / "result").iterdir()) == ["frame_0000.ply", "frame_0001.ply", "manifest.json"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == \
        ["frame_0000.ply", "frame_0001.ply", "manifest.json"]
    with pytest.raises(RuntimeError, match="unusable"):
        backend._download({"9": {"images": [{"filename": ".."}]}}, job / "result")
    with pytest.raises(RuntimeError, match="same name"):
        backend._download({"9": {"images": [{"filename": "a/x.ply"}, {"filename": "b/x.ply"}]}}, job / "result")
    assert len(list((job / "result").iterdir())) == 3  # the earlier result is untouched
