# SPDX-License-Identifier: GPL-3.0-or-later
"""Headless Chromium driven over the DevTools protocol (aiohttp websocket; no browser driver needed)."""
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

from comfy_runtime import free_port


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="fuse4d-chromium-")
        args = [chromium_binary(), "--headless=new", f"--remote-debugging-port={self.port}", "--no-sandbox",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                "--disable-dev-shm-usage", f"--user-data-dir={self.profile}", "--window-size=1280,900",
                "about:blank"]
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
