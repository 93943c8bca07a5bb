# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's plain-Python parts (no bpy): the ComfyUI client against a fake server on loopback,
the job protocol, progress parsing and the camera/alignment maths."""
import json
import os
import signal
import sys
import textwrap
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
    """Just enough of ComfyUI's HTTP API: /upload/image, /prompt, /history/<id>, /view, /queue (GET:
    the running prompt; POST: delete), /interrupt. state["restarted"]: it forgot every prompt."""
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
            s.setdefault("posts", []).append((self.path, json.loads(body)))
            self._send(b"{}")
        else:
            self._send(b"{}", code=404)

    def fault(self) -> bool:
        """Misbehave as the test asked (state["fault"]); True when the answer is already given."""
        fault = self.state.get("fault")
        if self.state.get("fail_polls", 0) > 0:
            self.state["fail_polls"] -= 1
            fault = "http500"
        if fault == "hang":  # accepts and never answers (until the test ends)
            self.state["release"].wait(60)
            return True
        if fault == "trickle":  # a whole answer, status line included, one byte every 0.2 s
            self.trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            return True
        if fault == "huge_declared":  # headers announcing a terabyte, then nothing
            self.send_response(200)
            self.send_header("Content-Length", str(10 ** 12))
            self.end_headers()
            return True
        if fault == "huge_stream":  # no length: JSON-looking bytes until the client hangs up (64 MiB at most)
            self.send_response(200)
            self.end_headers()
            chunk = b"[" * 65536
            self.state["sent"] = 0
            try:
                for _ in range(1024):
                    self.wfile.write(chunk)
                    self.state["sent"] += len(chunk)
            except OSError:  # the client gave up
                pass
            self.state["stream_ended"] = True
            return True
        if fault == "garbage":
            self._send(b"<html>502 Bad Gateway</html>", "text/html")
        elif fault == "wrong_shape":
            self._send(json.dumps(["p1", {"status": "success"}]).encode())
        elif fault == "wrong_entry":
            self._send(json.dumps({"p1": "success"}).encode())
        elif fault == "http500":
            self._send(b"{}", code=500)
        return fault is not None

    def trickle(self, data: bytes, every: float = 0.2) -> None:
        """Each byte well inside the client's socket timeout: only a whole-request deadline ends it."""
        for i in range(len(data)):
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            if self.state["release"].wait(every):
                return

    def done(self) -> bool:
        return time.monotonic() - self.state.get("queued_at", 1e18) > self.state["delay"]

    def do_GET(self):
        s, url = self.state, urlparse(self.path)
        if url.path == "/queue":
            if s.get("no_queue"):  # a server without GET /queue
                return self._send(b"{}", code=404)
            running = [] if s.get("restarted") or "queued_at" not in s or self.done() else [[0, "p1", {}, {}, ["18"]]]
            return self._send(json.dumps({"queue_running": running, "queue_pending": []}).encode())
        if url.path == "/history/p1":
            s["history_polls"] = s.get("history_polls", 0) + 1
        if url.path == "/history/p1" and s.get("restarted"):
            return self._send(b"{}")
        if url.path == "/history/p1" and "queued_at" in s and self.fault():
            return
        if url.path == "/view" and s.get("fault_view") == "trickle":  # headers at once, then a trickle
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.trickle(b"ply\nformat binary_little_endian 1.0\n" * 100)
            return
        if url.path == "/view" and s.get("fault_view"):  # dies half-way through the file
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"ply\nformat")
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if url.path == "/history/p1":
            done = self.done()
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
    FakeComfy.state = {"uploads": [], "dir": out, "files": sorted(p.name for p in out.iterdir()), "delay": 0.3,
                       "release": threading.Event()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
    server.daemon_threads = True
    FakeComfy.state["server"] = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeComfy.state
    FakeComfy.state["release"].set()
    if not FakeComfy.state.get("stopped"):
        server.shutdown()
    server.server_close()


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
    assert backend.poll().state == "cancelled"
    for _ in range(100):  # the server is told in the background
        if state.get("cancelled"):
            break
        time.sleep(0.05)
    assert state.get("cancelled")
    assert not (job / backends.RESULT_DIR).exists()


def wait_finished(backend, limit=30.0) -> float:
    """Poll as the add-on does; the seconds it took the back end to leave "running"."""
    started = time.monotonic()
    while backend.poll().state == "running":
        assert time.monotonic() - started < limit, f"still running after {limit} s: {backend.status.message}"
        time.sleep(0.02)
    return time.monotonic() - started


def nothing_downloaded(job: Path) -> bool:
    return sorted(p.name for p in job.iterdir()) == ["cameras.json", "source.ply", "views"]


def comfy_backend(url, timeout=0.5, quiet=1.0):
    workflow, bindings = template()
    return backends.ComfyUIBackend(url, workflow, bindings, timeout=timeout, poll_interval=0.05,
                                   deadline=backends.Deadline(quiet_seconds=quiet))


def wait_queued(state, limit=10.0):
    started = time.monotonic()
    while "queued_at" not in state:
        assert time.monotonic() - started < limit
        time.sleep(0.02)


# Bounds: timeout 0.5 s, quiet 1 s, poll 0.05 s; 3 s of slack for a loaded 2-core machine.
QUIET_BOUND = 1.0 + 0.5 + 0.05 + 3.0
AT_ONCE_BOUND = 0.5 + 0.05 + 3.0
# A trickling server: each request is cut off at its whole-request limit (2 x timeout).
TRICKLE_BOUND = 1.0 + 2 * 0.5 + 0.05 + 3.0


def test_comfy_server_stopped_mid_job_fails_within_the_quiet_deadline(comfy, tmp_path):
    url, state = comfy
    state["delay"] = 60
    job = make_job(tmp_path / "job")
    backend = comfy_backend(url)
    backend.start(job)
    wait_queued(state)
    state["server"].shutdown()
    state["server"].server_close()
    state["stopped"] = True
    elapsed = wait_finished(backend)
    status = backend.poll()
    assert status.state == "failed"
    assert "no sign of life for 1 s" in status.message and "connection refused" in status.message, status.message
    assert 0.4 < elapsed < QUIET_BOUND  # retried, not failed at the first refusal (shutdown takes up to 0.5 s)
    assert nothing_downloaded(job)


def test_comfy_hanging_server_fails_within_timeout_plus_quiet_deadline(comfy, tmp_path):
    url, state = comfy
    job = make_job(tmp_path / "job")
    backend = comfy_backend(url)
    state["fault"] = "hang"
    backend.start(job)
    elapsed = wait_finished(backend)
    assert backend.poll().state == "failed"
    assert "no answer within 0.5 s" in backend.status.message and "no sign of life" in backend.status.message
    assert elapsed < QUIET_BOUND
    t0 = time.monotonic()
    backend.cancel()  # must not wait on the hanging server
    assert time.monotonic() - t0 < 0.2
    assert nothing_downloaded(job)


@pytest.mark.parametrize("fault, message", [("garbage", "not JSON: b'<html>502"),
                                            ("wrong_shape", "unexpected shape"),
                                            ("wrong_entry", "unexpected shape")])
def test_comfy_nonsense_answers_fail_at_once(comfy, tmp_path, fault, message):
    url, state = comfy
    job = make_job(tmp_path / "job")
    state["fault"] = fault
    backend = comfy_backend(url, quiet=30.0)  # nonsense is not retried: no waiting for the deadline
    backend.start(job)
    elapsed = wait_finished(backend)
    assert backend.poll().state == "failed" and message in backend.status.message, backend.status.message
    assert backend.status.message.startswith(f"ComfyUI at {url}")
    assert elapsed < AT_ONCE_BOUND
    assert nothing_downloaded(job)


@pytest.mark.parametrize("fault", ["huge_declared", "huge_stream"])
def test_comfy_oversized_answers_are_refused_before_they_fill_memory(comfy, tmp_path, fault):
    """A /history answer is read into memory, so it is bounded (max_answer_bytes; 1 MiB here, 64 MiB
    by default): a declared terabyte is refused before reading, an endless stream once past the bound."""
    url, state = comfy
    job = make_job(tmp_path / "job")
    state["fault"] = fault
    backend = comfy_backend(url, quiet=30.0)  # not retried: no waiting for the deadline
    backend.max_answer_bytes = 2 ** 20
    backend.start(job)
    elapsed = wait_finished(backend)
    message = backend.poll().message
    assert backend.status.state == "failed" and "(GET /history/p1): the answer is over 1 MiB" in message, message
    assert elapsed < AT_ONCE_BOUND
    if fault == "huge_stream":  # the client hung up: the server could not push its 64 MiB
        started = time.monotonic()
        while not state.get("stream_ended") and time.monotonic() - started < 10:
            time.sleep(0.02)
        assert state.get("stream_ended") and state["sent"] < 32 * 2 ** 20, state.get("sent")
    assert nothing_downloaded(job)


def test_comfy_http_500_is_retried_then_fails_at_the_deadline(comfy, tmp_path):
    url, state = comfy
    job = make_job(tmp_path / "job")
    state["fail_polls"] = 3  # a hiccup: the job still succeeds
    backend = comfy_backend(url, quiet=5.0)
    backend.start(job)
    wait_finished(backend)
    assert backend.poll().state == "done", backend.status.message
    assert len(read_sequence(job / backends.RESULT_DIR)) == 3
    job2 = make_job(tmp_path / "job2")
    state.pop("queued_at")
    state["fault"] = "http500"
    backend = comfy_backend(url)
    backend.start(job2)
    elapsed = wait_finished(backend)
    assert backend.poll().state == "failed" and "HTTP 500" in backend.status.message
    assert elapsed < QUIET_BOUND
    assert nothing_downloaded(job2)


def test_comfy_download_cut_off_leaves_no_files(comfy, tmp_path):
    url, state = comfy
    job = make_job(tmp_path / "job")
    state["fault_view"] = True
    backend = comfy_backend(url)
    backend.start(job)
    elapsed = wait_finished(backend)
    assert backend.poll().state == "failed" and "(GET /view)" in backend.status.message, backend.status.message
    assert elapsed < 0.3 + AT_ONCE_BOUND  # the fake finishes after 0.3 s
    assert nothing_downloaded(job)  # neither result/ nor result.partial/


def wait_polls(state, polls, limit=10.0):
    """Until the back end has polled /history this many more times."""
    started, first = time.monotonic(), state.get("history_polls", 0)
    while state.get("history_polls", 0) < first + polls:
        assert time.monotonic() - started < limit
        time.sleep(0.02)


# A restarted server is caught after FORGOTTEN_POLLS polls, each a poll interval and two requests
# (/history, then /queue); 3 s of slack as above.
FORGOTTEN_BOUND = backends.FORGOTTEN_POLLS * (0.05 + 2 * 0.5) + 3.0


def test_comfy_server_that_restarted_and_forgot_the_prompt_fails_within_a_few_polls(comfy, tmp_path):
    url, state = comfy
    state["delay"] = 60
    job = make_job(tmp_path / "job")
    backend = comfy_backend(url, quiet=30.0)  # neither the quiet deadline nor max_seconds can end it
    backend.start(job)
    wait_queued(state)
    wait_polls(state, 2 * backends.FORGOTTEN_POLLS)  # a prompt running on the server is not "forgotten"
    assert backend.poll().state == "running", backend.status.message
    state["restarted"] = True  # it answers, with an empty queue and an empty history
    elapsed = wait_finished(backend)
    message = backend.poll().message
    assert backend.status.state == "failed"
    assert f"ComfyUI at {url} no longer knows prompt p1" in message and "restarted" in message, message
    assert elapsed < FORGOTTEN_BOUND
    assert nothing_downloaded(job)


def test_comfy_server_without_a_queue_endpoint_still_completes(comfy, tmp_path):
    url, state = comfy
    state["no_queue"] = True  # GET /queue answers 404: the history alone decides
    job = make_job(tmp_path / "job")
    backend = comfy_backend(url, quiet=5.0)
    backend.start(job)
    wait_finished(backend)
    assert backend.poll().state == "done", backend.status.message
    assert len(read_sequence(job / backends.RESULT_DIR)) == 3


def test_comfy_trickling_answers_are_cut_off_at_the_request_deadline(comfy, tmp_path):
    """One byte every 0.2 s against a 0.5 s socket timeout: no single read times out, so only the
    whole-request deadline (2 x 0.5 s here) ends each poll; the job fails at the quiet deadline."""
    url, state = comfy
    job = make_job(tmp_path / "job")
    state["fault"] = "trickle"
    backend = comfy_backend(url)
    backend.start(job)
    elapsed = wait_finished(backend)
    message = backend.poll().message
    assert backend.status.state == "failed"
    assert "(GET /history/p1)" in message and "no complete answer within 1 s" in message, message
    assert "no sign of life for 1 s" in message
    assert elapsed < TRICKLE_BOUND
    assert nothing_downloaded(job)


def test_comfy_trickling_download_is_cut_off_and_leaves_no_files(comfy, tmp_path):
    url, state = comfy
    job = make_job(tmp_path / "job")
    state["fault_view"] = "trickle"
    backend = comfy_backend(url)
    backend.start(job)
    elapsed = wait_finished(backend)
    message = backend.poll().message
    assert backend.status.state == "failed"
    assert "(GET /view)" in message and "no complete answer within 1 s" in message, message
    assert elapsed < 0.3 + 2 * 0.5 + 0.05 + 3.0  # the fake finishes after 0.3 s; one whole-request limit
    assert nothing_downloaded(job)


def test_comfy_job_over_max_seconds_drops_the_prompt_and_fails(comfy, tmp_path):
    url, state = comfy
    state["delay"] = 60
    job = make_job(tmp_path / "job")
    workflow, bindings = template()
    backend = backends.ComfyUIBackend(url, workflow, bindings, timeout=0.5, poll_interval=0.05,
                                      deadline=backends.Deadline(quiet_seconds=30.0, max_seconds=1.0))
    backend.start(job)
    elapsed = wait_finished(backend)
    message = backend.poll().message
    assert backend.status.state == "failed"
    assert message.startswith(f"ComfyUI at {url} took longer than the job limit of 1 s"), message
    assert 1.0 <= elapsed < 1.0 + 0.05 + 3 * 0.5 + 3.0  # limit + poll + a poll and the two drop requests
    assert state["posts"] == [("/queue", {"delete": ["p1"]}), ("/interrupt", {})]  # dropped before failing
    assert nothing_downloaded(job)


DYING_CLI = textwrap.dedent('''
    """Prints progress, starts writing its result, complains on stderr, then dies as asked."""
    import argparse, os, signal, sys, time
    from pathlib import Path
    p = argparse.ArgumentParser()
    p.add_argument("--job"); p.add_argument("--out"); p.add_argument("--mode")
    a = p.parse_args()
    if a.mode == "silent":
        time.sleep(60)
    print("progress 0.30 timestep 1", flush=True)
    out = Path(a.out); out.mkdir()
    (out / "manifest.json").write_text('{"format": "fuse4d-4d", "frames": ["frame_0000.ply", "frame_0001.ply"]}')
    (out / "frame_0000.ply").write_bytes(b"ply\\nformat binary_little_endian 1.0\\n")
    print("CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
    if a.mode == "self":
        os.kill(os.getpid(), signal.SIGKILL)
    print("waiting", flush=True)
    time.sleep(60)
''')


def cli_backend(tmp_path, mode, quiet=600.0):
    script = tmp_path / "dying_cli.py"
    script.write_text(DYING_CLI)
    job = make_job(tmp_path / "job")
    backend = backends.LocalCLIBackend(sys.executable, [str(script)], extra_args=["--mode", mode],
                                       deadline=backends.Deadline(quiet_seconds=quiet))
    backend.started_at = time.monotonic()
    backend.start(job)
    return backend, job


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_killing_itself_reports_the_signal_and_its_last_lines(tmp_path):
    backend, job = cli_backend(tmp_path, "self")
    elapsed = wait_finished(backend)
    status = backend.poll()
    assert status.state == "failed"
    assert "killed by SIGKILL" in status.message and "illegal memory access" in status.message, status.message
    assert elapsed < 15.0  # interpreter start on a loaded machine; the death itself is seen in one poll
    assert not (job / backends.RESULT_DIR).exists()  # the half-written result is not left to be read


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_killed_from_outside_is_reported_at_the_next_poll(tmp_path):
    backend, job = cli_backend(tmp_path, "outside")
    started = time.monotonic()
    while "waiting" not in backend.status.log:
        assert time.monotonic() - started < 15 and backend.poll().state == "running", backend.status.message
        time.sleep(0.02)
    os.kill(backend._proc.pid, signal.SIGKILL)
    elapsed = wait_finished(backend)
    assert backend.poll().state == "failed" and "killed by SIGKILL" in backend.status.message
    assert "illegal memory access" in backend.status.message  # stderr is in the tail
    assert elapsed < 2.5  # process exit seen at once; the output reader is joined for at most 2 s
    assert not (job / backends.RESULT_DIR).exists()


def test_silent_cli_is_stopped_at_the_quiet_deadline(tmp_path):
    backend, job = cli_backend(tmp_path, "silent", quiet=1.0)
    wait_finished(backend)
    elapsed = time.monotonic() - backend.started_at
    assert backend.poll().state == "failed"
    assert "no sign of life for 1 s; stopped it" in backend.status.message, backend.status.message
    assert 1.0 <= elapsed < 1.0 + 5.0 + 2.0  # quiet + SIGTERM grace + slack
    assert backend._proc.poll() is not None


def test_cli_over_max_seconds_is_stopped(tmp_path):
    script = tmp_path / "dying_cli.py"
    script.write_text(DYING_CLI)
    job = make_job(tmp_path / "job")
    backend = backends.LocalCLIBackend(sys.executable, [str(script)], extra_args=["--mode", "silent"],
                                       deadline=backends.Deadline(quiet_seconds=600.0, max_seconds=1.0))
    started = time.monotonic()
    backend.start(job)
    wait_finished(backend)
    elapsed = time.monotonic() - started
    assert backend.poll().state == "failed"
    assert "took longer than the job limit of 1 s; stopped it" in backend.status.message, backend.status.message
    assert 1.0 <= elapsed < 1.0 + 5.0 + 2.0  # limit + SIGTERM grace + slack
    assert backend._proc.poll() is not None


def test_exit_descriptions():
    assert backends.exit_description(3) == "exit code 3"
    assert backends.exit_description(-9) == "killed by SIGKILL"
    assert backends.exit_description(-15) == "killed by SIGTERM"


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
