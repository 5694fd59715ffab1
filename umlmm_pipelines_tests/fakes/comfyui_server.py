"""A fake ComfyUI server on 127.0.0.1: /system_stats, /object_info, /models, /models/{folder} (also under /api).

Tests mutate :class:`ComfyUIState` between runs, queue error answers per path (429 or 503 with a
Retry-After header), and take the server down and up again on the same port.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text("utf-8"))


@dataclass
class ComfyUIState:
    """What the fake serves. ``failures[path]`` lists ``(status, retry_after)`` answers given before the real one."""

    object_info: dict[str, Any] = field(default_factory=lambda: load_fixture("object_info_excerpt.json"))
    models: dict[str, list[str]] = field(default_factory=lambda: load_fixture("models.json"))
    system_stats: dict[str, Any] = field(default_factory=lambda: load_fixture("system_stats.json"))
    failures: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    requests: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, path)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths_requested(self) -> list[str]:
        return [path for _, path in self.requests]

    def times_of(self, path: str) -> list[float]:
        return [at for at, requested in self.requests if requested == path]


class _Handler(BaseHTTPRequestHandler):
    state: ComfyUIState

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        path = path[len("/api"):] if path.startswith("/api/") else path
        with self.state.lock:
            self.state.requests.append((time.monotonic(), path))
            queued = self.state.failures.get(path)
            failure = queued.pop(0) if queued else None
            object_info = copy.deepcopy(self.state.object_info)
            models = copy.deepcopy(self.state.models)
            stats = copy.deepcopy(self.state.system_stats)
        if failure is not None:
            status, retry_after = failure
            return self._send(status, None, {"Retry-After": retry_after} if retry_after is not None else None)
        if path == "/system_stats":
            return self._send(200, stats)
        if path == "/object_info":
            return self._send(200, object_info)
        if path == "/models":
            return self._send(200, list(models))
        if path.startswith("/models/"):
            folder = unquote(path[len("/models/"):])
            if folder not in models:
                return self._send(404)  # what ComfyUI answers for an unknown folder: no body
            return self._send(200, sorted(models[folder]))
        return self._send(404)


class FakeComfyUI:
    def __init__(self, state: ComfyUIState | None = None) -> None:
        self.state = state or ComfyUIState()
        self._handler = type("Handler", (_Handler,), {"state": self.state})
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeComfyUI:
        """Listen (on the same port again after :meth:`go_down`)."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def go_down(self) -> None:
        """Stop listening: connections to :attr:`url` are refused until :meth:`start`."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    stop = go_down


@contextmanager
def running_fake_comfyui(state: ComfyUIState | None = None) -> Iterator[FakeComfyUI]:
    fake = FakeComfyUI(state).start()
    try:
        yield fake
    finally:
        fake.stop()
