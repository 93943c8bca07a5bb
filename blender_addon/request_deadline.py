# SPDX-License-Identifier: GPL-3.0-or-later
"""A whole-request deadline for urllib (plain Python, no bpy).

urllib's `timeout` bounds each socket operation, not the request: a server that sends one byte
every few tenths of a second never trips it, and the request can last for ever. Here a watchdog
thread shuts the request's sockets down when its deadline passes, wherever the request is blocked
(connecting, TLS, headers, body). The deadline may grow with what was received (`credit`), so a
large download at an honest rate is not cut off, while a trickle is."""
from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.request


class RequestWatchdog:
    """`with RequestWatchdog(seconds) as w:` ... `w.fired` tells whether the deadline cut the request
    off (then whatever the request returned is incomplete and must be thrown away)."""

    def __init__(self, seconds: float):
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RequestWatchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    def limit(self) -> float:
        """The seconds this request was allowed (credits included)."""
        return self.deadline - self.started

    def credit(self, seconds: float) -> None:
        with self._lock:
            self.deadline += seconds

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shut(sock)
        return sock

    def _run(self) -> None:
        while not self._done.wait(max(self.deadline - time.monotonic(), 0.0)):
            with self._lock:
                if time.monotonic() < self.deadline:  # credited meanwhile
                    continue
                self.fired = True
                sockets = list(self._sockets)
            for sock in sockets:
                _shut(sock)
            return


def _shut(sock: socket.socket) -> None:
    """Wakes a thread blocked on the socket (its read ends at once); the owner still closes it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched(base: type, watchdog: RequestWatchdog) -> type:
    class Watched(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            create = getattr(self, "_create_connection", None)  # CPython: the raw socket, before TLS
            if create is not None:
                self._create_connection = lambda *a, **k: watchdog.watch(create(*a, **k))

        def connect(self):
            super().connect()
            watchdog.watch(self.sock)  # in case the hook above is gone in a later Python

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: RequestWatchdog):
        super().__init__()
        self.watchdog = watchdog

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.watchdog), req)


def opener(watchdog: RequestWatchdog) -> urllib.request.OpenerDirector:
    """urllib's usual opener (proxies, redirects, HTTPError) with every connection watched."""
    handlers = [_HTTPHandler(watchdog)]
    if hasattr(urllib.request, "HTTPSHandler") and hasattr(http.client, "HTTPSConnection"):
        class _HTTPSHandler(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(_watched(http.client.HTTPSConnection, watchdog), req, context=self._context)

        handlers.append(_HTTPSHandler())
    return urllib.request.build_opener(*handlers)
