# SPDX-License-Identifier: GPL-3.0-or-later
"""Generation back ends for "animate a captured scene", plain Python (no bpy): testable anywhere.

The job folder protocol (what the add-on writes, what every back end reads and answers) is
described and implemented in core/io/job.py, bundled into the add-on with the formats.
Local CLI: `PYTHON -m fuse4d animate-scene --job JOB --out JOB/result`; progress is read from
its output lines `progress <fraction 0..1> <message>` (tqdm-style `NN%|` lines work too);
exit code 0 means done.

When a back end dies or stalls mid-job, the job ends "failed" with one message (a BackendError's
text) within a bound set by its Deadline, and no result folder is left behind (see docs/blender.md)."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .request_deadline import RequestWatchdog
from .request_deadline import opener as request_opener
from .splatio import JOB_FILE, JOB_FORMAT, RESULT_DIR, read_job, write_job  # noqa: F401 (re-exported)

READ_CHUNK = 64 * 1024
# A whole request may take this many request timeouts: more than one, so that a server that sends
# nothing is reported by the socket timeout ("no answer within"), one that trickles by the deadline.
REQUEST_LIMIT = 2
# A request may last `timeout` plus 1 s per MIN_RATE bytes received: an honest download of a large
# sequence is never cut off (it earns its time), a trickle is.
MIN_RATE = 64 * 1024
# Answers read into memory (JSON: /history, /queue, /object_info) stop here: a ComfyUI with many node
# packs answers /object_info with a few MiB, so more than this is not ComfyUI (downloads stream to disk).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# After the prompt was accepted: this many polls in a row finding it neither queued, running nor
# in the history mean the server forgot it (it restarted).
FORGOTTEN_POLLS = 3

PROGRESS_LINE = re.compile(r"^progress\s+([0-9.]+)\s*(.*)$")
TQDM_PERCENT = re.compile(r"(\d{1,3})%\|")


@dataclass
class Status:
    state: str = "idle"  # idle | running | done | failed | cancelled
    progress: float = 0.0
    message: str = ""
    log: list[str] = field(default_factory=list)


class BackendError(RuntimeError):
    """A back end that died, stalled or answered nonsense; the text is the message for the user."""


@dataclass
class Deadline:
    """The one rule for how long a job may go on. `quiet_seconds`: fail when the back end shows no
    sign of life that long (the CLI prints no line; the ComfyUI server gives no usable answer).
    `max_seconds`: fail when the whole job takes longer (None: no limit; real models can take hours)."""

    quiet_seconds: float = 600.0
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        self.started = self.alive = time.monotonic()

    def restart(self) -> None:
        self.started = self.alive = time.monotonic()

    def sign_of_life(self) -> None:
        self.alive = time.monotonic()

    def over_time(self) -> bool:
        """The whole job took longer than `max_seconds`."""
        return self.max_seconds is not None and time.monotonic() - self.started > self.max_seconds

    def exceeded(self) -> str | None:
        """Why the job must stop now, or None."""
        if self.over_time():
            return f"took longer than the job limit of {self.max_seconds:g} s"
        if time.monotonic() - self.alive > self.quiet_seconds:
            return f"showed no sign of life for {self.quiet_seconds:g} s"
        return None


def exit_description(code: int) -> str:
    """'exit code 3' or 'killed by SIGKILL' (Popen gives -N for a process ended by signal N)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def parse_progress(line: str) -> tuple[float, str] | None:
    m = PROGRESS_LINE.match(line.strip())
    if m:
        try:
            return min(max(float(m.group(1)), 0.0), 1.0), m.group(2).strip()
        except ValueError:
            return None
    m = TQDM_PERCENT.search(line)
    if m:
        return min(int(m.group(1)), 100) / 100.0, line.strip()[:80]
    return None


class Backend:
    """check() before any work, start(job) once, then poll() until state is done/failed/cancelled;
    cancel() any time."""

    def check(self) -> None:
        """Raise ValueError (one line, for the user) if the back end cannot run a job at all."""

    def start(self, job: Path) -> None:
        raise NotImplementedError

    def poll(self) -> Status:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class LocalCLIBackend(Backend):
    """Runs the Fuse4D CLI in a subprocess (never in Blender's process); a reader thread collects
    its output so polling never blocks."""

    def __init__(self, python: str, command: list[str] | None = None, extra_args: list[str] | None = None,
                 env: dict | None = None, deadline: Deadline | None = None):
        self.python = python
        # Model loading on a CPU can print nothing for minutes: 10 quiet minutes before giving up.
        self.deadline = deadline or Deadline(quiet_seconds=600.0)
        self.command = list(command) if command is not None else ["-m", "fuse4d", "animate-scene"]
        self.extra_args = list(extra_args or [])
        self.env = env
        self.status = Status()
        self._proc: subprocess.Popen | None = None
        self._out: Path | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def check(self, timeout: float = 60.0) -> None:
        """The interpreter runs and finds the command's module (`-m NAME`) or script."""
        if not self.python or not Path(self.python).exists():
            raise ValueError(f"Fuse4D Python {self.python!r} not found (set it in the add-on preferences)")
        if len(self.command) >= 2 and self.command[0] == "-m":
            probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({self.command[1]!r}) is None)"
            try:
                code = subprocess.run([self.python, "-c", probe], stdin=subprocess.DEVNULL, capture_output=True,
                                      timeout=timeout).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ValueError(f"Fuse4D Python {self.python!r} does not run ({exc})") from None
            if code != 0:
                raise ValueError(f"{self.python} has no module {self.command[1]!r} (install fuse4d into that "
                                 "environment, or set Fuse4D Python to the one that has it)")
        elif self.command and not self.command[0].startswith("-") and not Path(self.command[0]).exists():
            raise ValueError(f"script {self.command[0]!r} of the back-end command not found")

    def argv(self, job: Path) -> list[str]:
        return [self.python, *self.command, "--job", str(job), "--out", str(job / RESULT_DIR), *self.extra_args]

    def start(self, job: Path) -> None:
        job = Path(job)
        if not self.python or not Path(self.python).exists():
            raise ValueError(f"Fuse4D Python {self.python!r} not found (set it in the add-on preferences)")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.status = Status("running", 0.0, "starting")
        self._out = job / RESULT_DIR
        self.deadline.restart()
        self._proc = subprocess.Popen(self.argv(job), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True, bufsize=1, env=env, cwd=str(job))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc and self._proc.stdout
        for raw in self._proc.stdout:
            # tqdm redraws with carriage returns; keep the last segment.
            line = raw.rstrip("\n").split("\r")[-1]
            with self._lock:
                self.deadline.sign_of_life()
                self.status.log.append(line)
                del self.status.log[:-200]
                parsed = parse_progress(line)
                if parsed:
                    self.status.progress, self.status.message = parsed

    def poll(self) -> Status:
        if self._proc is None:
            return self.status
        code = self._proc.poll()
        if code is None and self.status.state == "running":
            why = self.deadline.exceeded()
            if why:
                self._stop()
                self._fail(f"the Fuse4D CLI {why}; stopped it")
        elif code is not None and self.status.state == "running":
            if self._reader:  # bounded: a grandchild holding the pipe open must not hang us
                self._reader.join(timeout=2)
            if code == 0:
                with self._lock:
                    self.status.state, self.status.progress, self.status.message = "done", 1.0, "finished"
            else:
                self._fail(f"the Fuse4D CLI failed ({exit_description(code)})")
        return self.status

    def _fail(self, why: str) -> None:
        """Failed, with the last output lines; whatever it left in the result folder is half-written."""
        with self._lock:
            tail = "\n".join(line for line in self.status.log[-10:] if line.strip())
            self.status.state = "failed"
            self.status.message = f"{why}; its last output:\n{tail}" if tail else f"{why} (it printed nothing)"
        self._drop_result()

    def _drop_result(self) -> None:
        if self._out is not None:
            shutil.rmtree(self._out, ignore_errors=True)

    def _stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._stop()
            self._drop_result()
        self.status.state, self.status.message = "cancelled", "cancelled"


# --- ComfyUI ---------------------------------------------------------------------------------

@dataclass
class ComfyBindings:
    """Where the job goes in the API-format workflow (node ids are configurable: they depend on
    the workflow shipped by the ComfyUI pack). `images`: one node id per view ("nodes") or one node
    taking newline-joined names; each entry is (node id, input name)."""

    image_nodes: list[str] = field(default_factory=list)
    image_input: str = "image"
    cameras: tuple[str, str] | None = None
    frames: tuple[str, str] | None = None
    prompt: tuple[str, str] | None = None
    output_node: str | None = None
    source: tuple[str, str] | None = None  # where the uploaded source.ply goes (e.g. a Load Splat node)
    views: list[tuple[str, str]] = field(default_factory=list)  # where the view count goes (every such node)

    @staticmethod
    def from_dict(d: dict) -> "ComfyBindings":
        pair = lambda v: (str(v["node"]), str(v["input"])) if v else None  # noqa: E731
        return ComfyBindings([str(n) for n in d.get("image_nodes", [])], d.get("image_input", "image"),
                             pair(d.get("cameras")), pair(d.get("frames")), pair(d.get("prompt")),
                             str(d["output_node"]) if d.get("output_node") is not None else None,
                             pair(d.get("source")), _pairs(d.get("views")))


def _pairs(value) -> list[tuple[str, str]]:
    """One {"node", "input"} binding or a list of them."""
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    return [(str(v["node"]), str(v["input"])) for v in items]


def load_workflow_template(path: str | os.PathLike) -> tuple[dict, ComfyBindings]:
    """A template file: {"workflow": <API-format prompt>, "bindings": {...}}."""
    data = json.loads(Path(path).read_text())
    if "workflow" not in data or "bindings" not in data:
        raise ValueError(f"{path}: a workflow template needs 'workflow' and 'bindings'")
    return data["workflow"], ComfyBindings.from_dict(data["bindings"])


def bind_workflow(workflow: dict, bindings: ComfyBindings, images: list[str], job: dict,
                  source: str | None = None) -> dict:
    """A copy of `workflow` with the uploaded image names, cameras, frame count and prompt set."""
    wf = json.loads(json.dumps(workflow))

    def put(node: str, name: str, value) -> None:
        if node not in wf:
            raise ValueError(f"workflow has no node {node!r} (check the node ids in the add-on preferences)")
        wf[node].setdefault("inputs", {})[name] = value

    if not bindings.image_nodes:
        pass  # the workflow renders its own views from the source splats
    elif len(bindings.image_nodes) == 1 and len(images) > 1:
        put(bindings.image_nodes[0], bindings.image_input, "\n".join(images))
    else:
        if len(bindings.image_nodes) < len(images):
            raise ValueError(f"the workflow takes {len(bindings.image_nodes)} images, the rig has {len(images)} views")
        for node, name in zip(bindings.image_nodes, images):
            put(node, bindings.image_input, name)
    if bindings.cameras:
        put(*bindings.cameras, json.dumps(job["cameras"]))
    if bindings.frames:
        put(*bindings.frames, int(job["frames"]))
    if bindings.prompt:
        put(*bindings.prompt, job.get("prompt", ""))
    for node, name in bindings.views:
        put(node, name, len(job["cameras"]))
    if bindings.source:
        if source is None:
            raise ValueError("the workflow wants the source splats but none were uploaded")
        put(*bindings.source, source)
    return wf


def output_files(outputs: dict, nodes: list[str]) -> list[tuple[str, str, str]]:
    """(filename, subfolder, type) of what the given nodes saved: image-style entries
    ({"filename", ...}) and Save 4D Splats' sequence entries ({"subfolder", "manifest", "files"})."""
    found = []
    for node in nodes:
        for value in outputs.get(node, {}).values():
            for item in value if isinstance(value, list) else []:
                if not isinstance(item, dict):
                    continue
                where = (str(item.get("subfolder", "")), str(item.get("type", "output")))
                if "filename" in item:
                    found.append((str(item["filename"]), *where))
                elif isinstance(item.get("files"), list):
                    names = ([item["manifest"]] if item.get("manifest") else []) + list(item["files"])
                    found += [(str(n), *where) for n in names]
    return found


def plain_file_name(name: str) -> str:
    """The last part of a file name a server sent (its folders dropped, / and \\ alike), refused
    when nothing plain is left: downloads land only inside the job's result folder."""
    base = re.split(r"[/\\]", name)[-1]
    if base in ("", ".", "..") or "\0" in base or ":" in base:
        raise RuntimeError(f"ComfyUI sent an unusable output file name {name!r}")
    return base


class ComfyUIError(BackendError):
    """`transient`: the server may still come back (refused, reset, timed out, HTTP 5xx), so while
    polling it is retried within the deadline; anything else (nonsense, HTTP 4xx) fails at once."""

    def __init__(self, message: str, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient, self.status = transient, status  # status: the HTTP status code, if any


class ComfyUIBackend(Backend):
    """Upload views, queue the bound workflow, poll /history (and /queue while it is not there),
    download the output node's files into JOB/result. All HTTP happens in background threads; poll()
    and cancel() only touch shared state. Bounds: every request `timeout` (whole request, see
    _request); while polling, a server that gives no usable answer for `deadline.quiet_seconds`
    (stopped, hanging, trickling, HTTP 5xx) fails the job; one that forgot the prompt fails it after
    FORGOTTEN_POLLS polls; nonsense fails it at once."""

    def __init__(self, url: str, workflow: dict, bindings: ComfyBindings, timeout: float = 30.0,
                 poll_interval: float = 0.5, deadline: Deadline | None = None):
        self.url = url.rstrip("/")
        self.workflow, self.bindings = workflow, bindings
        self.timeout, self.poll_interval = timeout, poll_interval
        # A short outage is given a minute; a stopped server is reported within it.
        self.deadline = deadline or Deadline(quiet_seconds=60.0)
        self.client_id = uuid.uuid4().hex
        self.status = Status()
        self.prompt_id: str | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._no_queue = False  # the server answered GET /queue with 404
        self.max_answer_bytes = MAX_ANSWER_BYTES

    # HTTP helpers
    def _request(self, path: str, data: bytes | None = None, headers: dict | None = None, sink=None) -> bytes:
        """The whole answer (or, with `sink`, written to that file). Every socket operation waits at
        most `timeout` (a hanging server: "no answer within"), the whole request at most
        REQUEST_LIMIT x `timeout` plus 1 s per MIN_RATE bytes received (a trickling server: "no
        complete answer within")."""
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        what = f"ComfyUI at {self.url} ({'POST' if data is not None else 'GET'} {path.split('?')[0]})"
        with RequestWatchdog(REQUEST_LIMIT * self.timeout) as watchdog:
            try:
                with request_opener(watchdog).open(req, timeout=self.timeout) as resp:
                    body = self._read_body(resp, watchdog, sink, what, None if sink else self.max_answer_bytes)
            except urllib.error.HTTPError as exc:
                if watchdog.fired:
                    raise self._too_slow(what, watchdog) from None
                raise ComfyUIError(f"{what} answered HTTP {exc.code} {exc.reason}", transient=exc.code >= 500,
                                   status=exc.code) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if watchdog.fired:
                    raise self._too_slow(what, watchdog) from None
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, (TimeoutError, OSError)) and "timed out" in str(reason):
                    reason = f"no answer within {self.timeout:g} s"
                elif isinstance(reason, ConnectionRefusedError):
                    reason = "connection refused: is the server running?"
                raise ComfyUIError(f"{what}: {reason or type(exc).__name__}", transient=True) from None
        if watchdog.fired:  # cut off at the deadline: what arrived is not the whole answer
            raise self._too_slow(what, watchdog)
        return body

    @staticmethod
    def _read_body(resp, watchdog: RequestWatchdog, sink, what: str, limit: int | None) -> bytes:
        """The body (or, with `sink`, written there); one held in memory is refused past `limit` bytes,
        declared or received, before more of it is read."""
        header = resp.headers.get("Content-Length", "")
        expected = int(header) if header.isdigit() else None
        chunks, received = [], 0
        while True:
            size = max(received, expected or 0)
            if limit is not None and size > limit:
                raise ComfyUIError(f"{what}: the answer is over {limit / 2 ** 20:g} MiB ({size} bytes), more than "
                                   "a ComfyUI server sends (is that a ComfyUI server?)")
            chunk = resp.read(READ_CHUNK)
            if not chunk:
                break
            received += len(chunk)
            watchdog.credit(len(chunk) / MIN_RATE)
            if sink is None:
                chunks.append(chunk)
            else:
                sink.write(chunk)
        # read(n) returns a short body quietly when the connection ends early: check its length.
        if expected is not None and expected != received and not watchdog.fired:
            raise ComfyUIError(f"{what}: the answer was cut off after {received} of {expected} bytes", transient=True)
        return b"".join(chunks)

    def _too_slow(self, what: str, watchdog: RequestWatchdog) -> "ComfyUIError":
        return ComfyUIError(f"{what}: no complete answer within {watchdog.limit():.3g} s (the server sends too "
                            f"slowly; a request may take {REQUEST_LIMIT * self.timeout:g} s plus 1 s per "
                            f"{MIN_RATE // 1024} KiB received)", transient=True)

    def _json(self, path: str, payload: dict | None = None, shape: type = dict):
        """The answer as JSON of the given top-level type, or a ComfyUIError saying what came instead."""
        data = None if payload is None else json.dumps(payload).encode()
        raw = self._request(path, data, {"Content-Type": "application/json"} if data else None)
        try:
            value = json.loads(raw or b"null")
        except (ValueError, RecursionError):
            raise ComfyUIError(f"ComfyUI at {self.url} answered {path.split('?')[0]} with something that is not "
                               f"JSON: {raw[:60]!r}") from None
        if shape is not None and not isinstance(value, shape):
            raise self._shape_error(path)
        return value

    def _shape_error(self, path: str) -> ComfyUIError:
        return ComfyUIError(f"ComfyUI at {self.url} answered {path.split('?')[0]} with JSON of an unexpected "
                            "shape (is that a ComfyUI server?)")
    def check(self) -> None:
        """The server answers, knows every node class of the workflow, and offers every file name the
        workflow picks from a list (model files), as ComfyUI would validate them on queueing."""
        try:
            info = self._json("/object_info")
        except ComfyUIError as exc:
            raise ValueError(f"ComfyUI at {self.url} is not reachable ({exc})") from None
        if not all(isinstance(v, dict) for v in info.values()):
            raise ValueError(str(self._shape_error("/object_info")))
        missing = sorted({n.get("class_type") for n in self.workflow.values() if n.get("class_type") not in info})
        if missing:
            raise ValueError(f"ComfyUI at {self.url} lacks the nodes {', '.join(missing)} (install the Fuse4D node pack)")
        for node_id, node in self.workflow.items():
            spec = info[node["class_type"]].get("input", {})
            choices_of = {**spec.get("required", {}), **spec.get("optional", {})}
            for name, value in node.get("inputs", {}).items():
                choices = (choices_of.get(name) or [None])[0]
                if isinstance(value, str) and isinstance(choices, list) and choices and value not in choices:
                    raise ValueError(f"ComfyUI at {self.url}: node {node_id} ({node['class_type']}) needs "
                                     f"{name}={value!r}, which the server does not have")

    def upload_image(self, path: Path, content_type: str = "image/png") -> str:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
                f"Content-Type: {content_type}\r\n\r\n").encode() + path.read_bytes() + \
            (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue"
             f"\r\n--{boundary}--\r\n").encode()
        raw = self._request("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise self._shape_error("/upload/image")
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def start(self, job: Path) -> None:
        self.status = Status("running", 0.0, "uploading views")
        self.deadline.restart()
        self._thread = threading.Thread(target=self._run, args=(Path(job),), daemon=True)
        self._thread.start()

    def _run(self, job: Path) -> None:
        try:
            spec = read_job(job)
            names, source = [], None
            if self.bindings.source and spec.get("source"):
                source = self.upload_image(job / spec["source"], "application/octet-stream")
            for i, cam in enumerate(spec["cameras"] if self.bindings.image_nodes else []):
                if self._cancel.is_set():
                    return
                names.append(self.upload_image(job / cam["image"]))
                self.status.progress = 0.1 * (i + 1) / len(spec["cameras"])
            wf = bind_workflow(self.workflow, self.bindings, names, spec, source)
            answer = self._json("/prompt", {"prompt": wf, "client_id": self.client_id})
            if answer.get("node_errors"):
                raise ValueError(f"ComfyUI rejected the workflow: {answer['node_errors']}")
            if not isinstance(answer.get("prompt_id"), str):
                raise self._shape_error("/prompt")
            self.prompt_id = answer["prompt_id"]
            self.status.message = "queued"
            self.deadline.sign_of_life()
            outputs = self._wait_for_outputs()
            if outputs is not None:
                self._download(outputs, job / RESULT_DIR)
                self.status.state, self.status.progress, self.status.message = "done", 1.0, "finished"
        except Exception as exc:  # reported through poll(), never raised in Blender's thread
            if not self._cancel.is_set():
                text = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
                self.status.state, self.status.message = "failed", text

    def _wait_for_outputs(self) -> dict | None:
        """Poll /history until our prompt is done: its outputs, or None when cancelled. Transient
        errors are retried until the deadline; the last one is named in the failure. A prompt the
        server no longer knows (in neither /history nor /queue for FORGOTTEN_POLLS polls in a row:
        it restarted) fails the job then, rather than at `max_seconds`."""
        path, started, last_error, forgotten = f"/history/{self.prompt_id}", time.monotonic(), None, 0
        while not self._cancel.is_set():
            why = self.deadline.exceeded()
            if why:
                if self.deadline.over_time():  # the server is alive but too slow: stop our prompt there
                    self._drop_prompt()
                raise BackendError(f"ComfyUI at {self.url} {why}" + (f" (last: {last_error})" if last_error else ""))
            try:
                entry = self._json(path).get(self.prompt_id)
                queued = self._queued() if entry is None else True
            except ComfyUIError as exc:
                if not exc.transient:
                    raise
                last_error = exc
            else:
                self.deadline.sign_of_life()
                last_error = None
                if entry is not None:
                    if not isinstance(entry, dict) or not isinstance(entry.get("status", {}), dict) or \
                            not isinstance(entry.get("outputs", {}), dict):
                        raise self._shape_error(path)
                    state = entry.get("status", {})
                    if state.get("status_str") == "error":
                        raise BackendError(f"ComfyUI failed: {state.get('messages', '')}"[:500])
                    if state.get("completed", True):
                        return entry.get("outputs", {})
                forgotten = forgotten + 1 if queued is False else 0
                if forgotten >= FORGOTTEN_POLLS:
                    raise BackendError(f"ComfyUI at {self.url} no longer knows prompt {self.prompt_id}: it was "
                                       f"neither queued, running nor in the history for {forgotten} polls in a row "
                                       "(the server restarted?); nothing was imported, run the job again")
            # No fine-grained progress without the websocket: creep towards 0.9 while waiting.
            waited = time.monotonic() - started
            self.status.progress = 0.1 + 0.8 * waited / (waited + 30.0)
            self.status.message = f"running on ComfyUI ({waited:.0f} s)" + (" - server not answering"
                                                                             if last_error else "")
            self._cancel.wait(self.poll_interval)
        return None

    def _queued(self) -> bool | None:
        """Whether our prompt is running or pending on the server (GET /queue); None when the server
        has no /queue (then a forgotten prompt is only caught by the deadline)."""
        if self._no_queue:
            return None
        try:
            queue = self._json("/queue")
        except ComfyUIError as exc:
            if exc.status != 404:
                raise
            self._no_queue = True
            return None
        lists = [queue.get("queue_running"), queue.get("queue_pending")]
        if not all(isinstance(items, list) for items in lists):
            raise self._shape_error("/queue")
        # Each item is [number, prompt_id, prompt, extra_data, outputs_to_execute].
        return any(isinstance(item, list) and len(item) > 1 and item[1] == self.prompt_id
                   for items in lists for item in items)

    def _download(self, outputs: dict, folder: Path) -> None:
        """Into a temporary folder beside the result, renamed into place once every file is whole;
        on any failure (or a cancel) the temporary folder is removed."""
        files = output_files(outputs, [self.bindings.output_node] if self.bindings.output_node else list(outputs))
        if not files:
            raise BackendError("ComfyUI finished but the output node produced no files")
        names = [plain_file_name(name) for name, _, _ in files]  # before anything is written
        if len(set(names)) != len(names):
            raise BackendError(f"ComfyUI sent two output files of the same name: {sorted(names)}")
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for local, (name, subfolder, kind) in zip(names, files):
                if self._cancel.is_set():
                    raise BackendError("cancelled")
                query = urllib.parse.urlencode({"filename": name, "subfolder": subfolder, "type": kind})
                with open(tmp / local, "wb") as sink:  # streamed: an output may be larger than memory allows
                    self._request(f"/view?{query}", sink=sink)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def poll(self) -> Status:
        return self.status

    def cancel(self) -> None:
        """Returns at once: telling the server happens in a background thread, since a hanging
        server would otherwise freeze Blender for two request timeouts."""
        self._cancel.set()
        if self.prompt_id:
            threading.Thread(target=self._drop_prompt, daemon=True).start()
        self.status.state, self.status.message = "cancelled", "cancelled"

    def _drop_prompt(self) -> None:
        """Best effort: drop our prompt from the queue, stop it if it is running."""
        try:
            self._json("/queue", {"delete": [self.prompt_id]}, shape=None)
            self._json("/interrupt", {}, shape=None)
        except ComfyUIError:
            pass
