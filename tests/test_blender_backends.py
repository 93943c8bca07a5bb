# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's plain-Python parts (no bpy): the ComfyUI client against a fake server on loopback,
the job protocol, progress parsing and the camera/alignment maths."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from fuse4d.blender_addon import backends, convert
from fuse4d.core.io import Sequence4D, read_sequence, write_ply, write_sequence
from conftest import random_arrays


class FakeComfy(BaseHTTPRequestHandler):
    """Just enough of ComfyUI's HTTP API: /upload/image, /prompt, /history/<id>, /view, /queue, /interrupt."""
    state: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, kind="application/json", code=200):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        s = self.state
        if self.path == "/upload/image":
            name = body.split(b'filename="')[1].split(b'"')[0].decode()
            s["uploads"].append(name)
            self._send(json.dumps({"name": name, "subfolder": "", "type": "input"}).encode())
        elif self.path == "/prompt":
            s["prompt"] = json.loads(body)["prompt"]
            s["queued_at"] = time.monotonic()
            self._send(json.dumps({"prompt_id": "p1", "number": 0, "node_errors": {}}).encode())
        elif self.path in ("/queue", "/interrupt"):
            s["cancelled"] = True
            self._send(b"{}")
        else:
            self._send(b"{}", code=404)

    def do_GET(self):
        s, url = self.state, urlparse(self.path)
        if url.path == "/history/p1":
            done = time.monotonic() - s.get("queued_at", 1e18) > s["delay"]
            files = [{"filename": f, "subfolder": "fuse4d", "type": "output"} for f in s["files"]]
            body = {"p1": {"status": {"status_str": "success", "completed": True},
                           "outputs": {"18": {"splats": files}}}} if done else {}
            self._send(json.dumps(body).encode())
        elif url.path == "/object_info":
            self._send(json.dumps(s.get("object_info", {})).encode())
        elif url.path == "/view":
            name = parse_qs(url.query)["filename"][0]
            self._send((s["dir"] / name).read_bytes(), "application/octet-stream")
        else:
            self._send(b"{}", code=404)


@pytest.fixture
def comfy(tmp_path):
    out = tmp_path / "comfy_out"
    write_sequence(out, Sequence4D(frames=[random_arrays(30, 0, seed=t) for t in range(3)], fps=8.0))
    FakeComfy.state = {"uploads": [], "dir": out, "files": sorted(p.name for p in out.iterdir()), "delay": 0.3}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeComfy.state
    server.shutdown()


def make_job(folder: Path, views=2):
    (folder / "views").mkdir(parents=True)
    cams = []
    for i in range(views):
        (folder / "views" / f"view_{i:03d}.png").write_bytes(b"\x89PNG fake")
        cams.append({"viewmat": np.eye(4).tolist(), "K": np.eye(3).tolist(), "width": 8, "height": 8,
                     "image": f"views/view_{i:03d}.png"})
    write_ply(folder / "source.ply", random_arrays(20, 0))
    backends.write_job(folder, cams, frames=3, fps=8.0, prompt="waves")
    return folder


def template():
    path = Path(backends.__file__).with_name("comfy_workflow.json")
    return backends.load_workflow_template(path)


def test_comfy_backend_round_trip(comfy, tmp_path):
    url, state = comfy
    job = make_job(tmp_path / "job")
    workflow, bindings = template()
    backend = backends.ComfyUIBackend(url, workflow, bindings, poll_interval=0.05)
    backend.start(job)
    for _ in range(200):
        if backend.poll().state != "running":
            break
        time.sleep(0.05)
    assert backend.poll().state == "done", backend.status.message
    assert state["uploads"] == ["source.ply"]
    assert state["prompt"]["1"]["inputs"]["splat"] == "source.ply"  # bound per the template
    assert state["prompt"]["10"]["inputs"]["frames"] == 3
    assert state["prompt"]["7"]["inputs"]["text"] == "waves"
    assert len(read_sequence(job / backends.RESULT_DIR)) == 3


def test_comfy_backend_uploads_views_to_image_nodes_and_cancels(comfy, tmp_path):
    url, state = comfy
    state["delay"] = 60
    job = make_job(tmp_path / "job", views=2)
    wf = {"a": {"class_type": "LoadImage", "inputs": {}}, "b": {"class_type": "LoadImage", "inputs": {}}}
    bindings = backends.ComfyBindings.from_dict({"image_nodes": ["a", "b"], "output_node": "18"})
    backend = backends.ComfyUIBackend(url, wf, bindings, poll_interval=0.05)
    backend.start(job)
    for _ in range(100):
        if backend.prompt_id:
            break
        time.sleep(0.05)
    assert state["prompt"]["a"]["inputs"]["image"] == "view_000.png"
    assert state["prompt"]["b"]["inputs"]["image"] == "view_001.png"
    backend.cancel()
    assert backend.poll().state == "cancelled" and state.get("cancelled")
    assert not (job / backends.RESULT_DIR).exists()


def test_comfy_check_before_queueing(comfy):
    url, state = comfy
    wf = {"1": {"class_type": "Fuse4DLoadSplat", "inputs": {}},
          "2": {"class_type": "Fuse4DLoader", "inputs": {"model": "wan.safetensors", "text": "free text"}}}
    backend = backends.ComfyUIBackend(url, wf, backends.ComfyBindings.from_dict({"output_node": "1"}))
    state["object_info"] = {"Fuse4DLoadSplat": {"input": {}}}
    with pytest.raises(ValueError, match="lacks the nodes Fuse4DLoader"):
        backend.check()
    state["object_info"]["Fuse4DLoader"] = {"input": {"required": {"model": [["tiny.safetensors"]],
                                                                   "text": ["STRING", {}]}}}
    with pytest.raises(ValueError, match="model='wan.safetensors'"):
        backend.check()
    state["object_info"]["Fuse4DLoader"]["input"]["required"]["model"][0].append("wan.safetensors")
    backend.check()  # everything present
    with pytest.raises(ValueError, match="not reachable"):
        backends.ComfyUIBackend("http://127.0.0.1:9", wf, backend.bindings, timeout=2).check()


def test_bind_workflow_rejects_unknown_nodes_and_too_few_image_slots():
    spec = {"cameras": [{}] * 3, "frames": 2}
    with pytest.raises(ValueError, match="takes 2 images"):
        backends.bind_workflow({"a": {}, "b": {}}, backends.ComfyBindings(["a", "b"]), ["x", "y", "z"], spec)
    with pytest.raises(ValueError, match="no node 'q'"):
        backends.bind_workflow({}, backends.ComfyBindings(frames=("q", "frames")), [], spec)


def test_progress_lines():
    assert backends.parse_progress("progress 0.25 reconstructing") == (0.25, "reconstructing")
    assert backends.parse_progress("sampling:  40%|####      | 4/10")[0] == 0.4
    assert backends.parse_progress("hello") is None


def test_camera_conversion_matches_core(tmp_path):
    pytest.importorskip("torch")
    from fuse4d.core.cameras import orbit_cameras, to_blender

    cams = orbit_cameras(3, 4.0, 20.0, 90.0, target=(0.3, -0.2, 1.0), width=64, height=48)
    items = to_blender(cams)
    for viewmat, item in zip(cams.viewmats, items):
        # An object carrying only the base axis change: its data space is the OpenCV world.
        back = convert.camera_to_opencv(np.array(item["matrix_world"]), convert.OPENCV_TO_BLENDER)
        np.testing.assert_allclose(back, viewmat.numpy(), atol=1e-5)
        again = convert.opencv_to_camera(back, convert.OPENCV_TO_BLENDER)
        np.testing.assert_allclose(again, np.array(item["matrix_world"]), atol=1e-5)
    K = convert.intrinsics(item["lens"], item["sensor_width"], 64, 48)
    np.testing.assert_allclose(K, cams.Ks[0].numpy(), atol=1e-4)


def test_similarity_alignment_recovers_transform():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(6, 3))
    angle = 0.7
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = 2.5 * R, [1, 2, 3]
    np.testing.assert_allclose(convert.similarity(pts, pts @ M[:3, :3].T + M[:3, 3]), M, atol=1e-9)
