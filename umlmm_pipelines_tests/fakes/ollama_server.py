"""A fake Ollama server on 127.0.0.1 that serves recorded payloads and can misbehave on demand."""

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

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ollama"


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text("utf-8"))


@dataclass
class OllamaState:
    """What the fake serves. Tests mutate it between runs."""

    models: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(load_fixture("api_tags.json")["models"]))
    shows: dict[str, dict[str, Any]] = field(default_factory=dict)
    show_delay_s: float = 0.0
    tags_failures: list[int] = field(default_factory=list)  # statuses to answer before succeeding
    show_status: dict[str, int] = field(default_factory=dict)  # model name -> forced status
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    new_digest_each_listing: bool = False  # every /api/tags looks like a re-pull of every model
    listings_served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def show_for(self, name: str) -> dict[str, Any]:
        if name in self.shows:
            return self.shows[name]
        show = copy.deepcopy(load_fixture("api_show.json"))
        entry = next((m for m in self.models if m["name"] == name), None)
        if entry is not None:
            show["details"] = copy.deepcopy(entry["details"])
            show["modified_at"] = entry["modified_at"]
            if "capabilities" in entry:
                show["capabilities"] = entry["capabilities"]
        return show

    def show_calls(self) -> list[str]:
        return [body.get("model") for method, path, body in self.requests if path == "/api/show"]


class _Handler(BaseHTTPRequestHandler):
    state: OllamaState

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        with self.state.lock:
            self.state.requests.append(("GET", self.path, None))
            failure = self.state.tags_failures.pop(0) if self.path == "/api/tags" and self.state.tags_failures else None
        if self.path == "/api/tags":
            if failure:
                return self._send(failure, {"error": "model list cache unavailable"})
            with self.state.lock:
                self.state.listings_served += 1
                if self.state.new_digest_each_listing:
                    for number, model in enumerate(self.state.models):
                        model["digest"] = f"{self.state.listings_served:032x}{number:032x}"
                models = copy.deepcopy(self.state.models)
            return self._send(200, {"models": models})
        if self.path == "/api/version":
            return self._send(200, {"version": "0.12.6"})
        return self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.state.lock:
            self.state.requests.append(("POST", self.path, body))
        if self.path != "/api/show":
            return self._send(404, {"error": "not found"})
        name = body.get("model") or body.get("name")
        if not name:
            return self._send(400, {"error": "model is required"})
        if self.state.show_delay_s:
            time.sleep(self.state.show_delay_s)
        if name in self.state.show_status:
            return self._send(self.state.show_status[name], {"error": f"model '{name}' not found"})
        if not any(m["name"] == name for m in self.state.models):
            return self._send(404, {"error": f"model '{name}' not found"})
        return self._send(200, self.state.show_for(name))


class FakeOllama:
    def __init__(self, state: OllamaState | None = None) -> None:
        self.state = state or OllamaState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeOllama:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_fake_ollama(state: OllamaState | None = None) -> Iterator[FakeOllama]:
    fake = FakeOllama(state).start()
    try:
        yield fake
    finally:
        fake.stop()


def unused_local_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
