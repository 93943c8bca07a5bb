# SPDX-License-Identifier: GPL-3.0-or-later
"""Headless Chromium driven over the DevTools protocol (aiohttp websocket; no browser driver needed),
and the ComfyUI frontend in it.

`python tests/comfy_browser.py` regenerates the UI-format example workflows
(`example_workflows/*.json`, what ComfyUI's Templates browser opens) from the API-format ones
(`example_workflows/api/*.json`, what POST /prompt takes) through the real frontend."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request

import numpy as np

import debian_packages
from comfy_runtime import free_port


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str:
    """The Chromium binary; on a fresh Debian machine (as root) install Debian's package at test time,
    as ComfyUI itself is installed at test time. Raises with what to do when it cannot."""
    path = chromium_binary()
    if path:
        return path
    if not debian_packages.can_install():
        raise RuntimeError("Chromium is missing and cannot be installed here (needs Debian's apt-get as root): "
                           "run `apt-get install chromium` (Debian package) and re-run the tests")
    proc = debian_packages.apt_install("chromium")
    path = chromium_binary()
    if proc.returncode != 0 or path is None:
        raise RuntimeError(f"apt-get install chromium failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    return path


class Browser:
    def __init__(self):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="fuse4d-chromium-")
        # The flags this machine needs (closed network: no background connections), a new empty
        # profile, and WebGL 2 through SwiftShader (software) since there is no GPU.
        args = [ensure_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={self.profile}", f"--remote-debugging-port={self.port}",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-dev-shm-usage",
                "--window-size=1280,900", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [p for p in json.loads(r.read()) if p["type"] == "page"]
                if pages:
                    self.ws_url = pages[0]["webSocketDebuggerUrl"]
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError("chromium did not open its DevTools port")
            time.sleep(0.2)
        self.loop = asyncio.new_event_loop()
        self._id = 0
        self.session = self.ws = None
        self.loop.run_until_complete(self._connect())

    async def _connect(self):
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.ws_url, max_msg_size=0)

    async def _send(self, method: str, params: dict | None = None, timeout: float = 120):
        self._id += 1
        my_id = self._id
        await self.ws.send_str(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout=max(0.1, deadline - time.monotonic()))
            data = json.loads(msg.data)
            if data.get("id") == my_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data["result"]

    def call(self, method: str, params: dict | None = None, timeout: float = 120):
        return self.loop.run_until_complete(self._send(method, params, timeout))

    def evaluate(self, expression: str, timeout: float = 120):
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {json.dumps(result['exceptionDetails'])[:2000]}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"Boolean({expression})"):
                return
            time.sleep(0.3)
        raise TimeoutError(f"page never satisfied: {expression}")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def data_url_image(self, expression: str) -> np.ndarray:
        from PIL import Image

        data = self.evaluate(expression)
        raw = base64.b64decode(data.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32)

    def screenshot(self, rect: dict | None = None) -> np.ndarray:
        """A real screenshot of the page (composited, as a user sees it), optionally of a CSS-pixel rect."""
        from PIL import Image

        params = {"format": "png"}
        if rect is not None:
            params["clip"] = {"x": rect["x"], "y": rect["y"], "width": rect["width"], "height": rect["height"],
                              "scale": 1}
        raw = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32)

    def click(self, x: float, y: float) -> None:
        """A real mouse click (press + release) at page coordinates."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "buttons": 1 if kind == "mousePressed" else 0,
                                                   "clickCount": 1})

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.loop.run_until_complete(self.ws.close())
            self.loop.run_until_complete(self.session.close())
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


# --- the ComfyUI frontend ------------------------------------------------------------------------
APP = "window.comfyAPI.app.app"


def open_comfy(browser: Browser, url: str, timeout: float = 150) -> None:
    """Load the ComfyUI page and wait until the app is up, our extension loaded, the node
    definitions registered and the page's own start-up workflow (the default one) loaded."""
    browser.navigate(url + "/")
    browser.wait_for(f"window.comfyAPI && window.comfyAPI.app && {APP}.graph && window.Fuse4DPlayer"
                     f" && {APP}.canvas && {APP}.canvas.canvas"  # a workflow loaded before the canvas fails
                     " && window.LiteGraph && LiteGraph.registered_node_types['Fuse4DSave4DSplats']"
                     # The frontend loads its default workflow after the canvas exists (frontend 1.45:
                     # ~1 s later); a workflow loaded before that is replaced by it. The workflow store
                     # has an active workflow once that load is done.
                     f" && {APP}.extensionManager && {APP}.extensionManager.workflow"
                     f" && {APP}.extensionManager.workflow.activeWorkflow",
                     timeout=timeout)


def api_to_ui(browser: Browser, api: dict, name: str = "workflow.json") -> dict:
    """An API-format workflow loaded into the frontend (its own loadApiJson) and saved as a graph."""
    return browser.evaluate(f"""(async () => {{
        await {APP}.loadApiJson({json.dumps(api)}, {json.dumps(name)});
        return {APP}.graph.serialize();
    }})()""", timeout=60)


def ui_to_prompt(browser: Browser, ui: dict, name: str = "workflow.json") -> dict:
    """A UI-format workflow opened as the Templates browser does (loadGraphData), then turned into
    the prompt the frontend would queue (graphToPrompt)."""
    return browser.evaluate(f"""(async () => {{
        await {APP}.loadGraphData({json.dumps(ui)}, true, true, {json.dumps(name)});
        return (await {APP}.graphToPrompt()).output;
    }})()""", timeout=60)


def export_ui_workflows() -> list:
    import tempfile as _tempfile
    from pathlib import Path

    from comfy_runtime import REPO, ComfyServer, ensure_comfyui, link_custom_node

    ensure_comfyui()
    base = Path(_tempfile.mkdtemp(prefix="fuse4d-export-"))
    link_custom_node(base, "fuse4d", REPO)
    server = ComfyServer(base, free_port()).start()
    browser = Browser()
    written = []
    try:
        open_comfy(browser, server.url)
        for api_path in sorted((REPO / "example_workflows" / "api").glob("*.json")):
            ui = api_to_ui(browser, json.loads(api_path.read_text()), api_path.name)
            ui["id"] = "00000000-0000-0000-0000-000000000000"  # stable across regenerations
            # A neutral canvas view instead of this session's: ComfyUI 0.27's frontend fails
            # ("getCanvas: canvas is null") on a workflow without extra.ds loaded right after page open.
            ui.setdefault("extra", {})["ds"] = {"scale": 1, "offset": [0, 0]}
            out = REPO / "example_workflows" / api_path.name
            out.write_text(json.dumps(ui, indent=1) + "\n")
            written.append(out)
    finally:
        browser.close()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return written


if __name__ == "__main__":
    for path in export_ui_workflows():
        print(path)
