"""PoliteClient against a real HTTP server on 127.0.0.1 that answers from a per-test script.

Waits are never slept: ``sleep=`` records them, so every retry/backoff/rate test runs in milliseconds.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from umlmm_pipelines.ingestion import http as http_module
from umlmm_pipelines.ingestion.http import HttpSettings, PoliteClient, SourceHttpError

SECRET = "s3cr3t-key"

CLOUDFLARE_PAGE = """<!DOCTYPE html>
<html lang="en-US"><head><title>Just a moment...</title></head>
<body><div class="main-wrapper"><h1>Checking your browser before accessing civitai.com</h1>
<p>This process is automatic. Your browser will redirect to your requested content shortly.</p>
<div class="cf-footer">Ray ID: 8a1b2c3d4e5f6789 &bull; Performance &amp; security by Cloudflare</div>
</div></body></html>
"""


# --------------------------------------------------------------------------- scripted server


@dataclass
class Reply:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    raw_target: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """Answers each request with the next scripted Reply; records every request it receives."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.url = ""

    def reply(self, status: int = 200, body: Any = b"", headers: dict[str, str] | None = None,
              delay: float = 0.0, times: int = 1) -> ScriptedServer:
        for _ in range(times):
            self.replies.append(Reply(status, body, dict(headers or {}), delay))
        return self

    def next_reply(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
            if self.replies:
                return self.replies.pop(0)
        return Reply(418, {"error": "test server: no scripted reply left"})


def _make_handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            seen = Seen(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                raw_target=self.path,
                body=body,
            )
            reply = server.next_reply(seen)
            if reply.delay:
                time.sleep(reply.delay)
            headers = dict(reply.headers)
            if isinstance(reply.body, bytes):
                data = reply.body
            elif isinstance(reply.body, str):
                data = reply.body.encode("utf-8")
                headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            else:
                data = json.dumps(reply.body).encode("utf-8")
                headers.setdefault("Content-Type", "application/json")
            try:
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    httpd = _QuietServer(("127.0.0.1", 0), _make_handler(scripted))
    scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A 127.0.0.1 port that is bound but not listening: every connection attempt is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# --------------------------------------------------------------------------- recorders and client factory


class Sleeps:
    """Stands in for time.sleep: records each requested wait, never sleeps."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class RecordingLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _record(self, level: str, message: Any, *args: Any) -> None:
        text = str(message) % args if args else str(message)
        self.records.append((level, text))

    def debug(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._record("debug", message, *args)

    def info(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._record("info", message, *args)

    def warning(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._record("warning", message, *args)

    def error(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._record("error", message, *args)

    def lines(self, level: str | None = None) -> list[str]:
        return [text for lvl, text in self.records if level is None or lvl == level]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def log() -> RecordingLog:
    return RecordingLog()


@pytest.fixture
def make_client(sleeps: Sleeps, log: RecordingLog) -> Iterator[Any]:
    clients: list[PoliteClient] = []

    def make(base_url: str, source: str = "Ollama", **kwargs: Any) -> PoliteClient:
        client_kwargs = {k: kwargs.pop(k) for k in ("auth", "headers", "secrets", "transport") if k in kwargs}
        settings = HttpSettings(**{"BackoffSeconds": 1.0, "MaxRetries": 3, **kwargs})
        client = PoliteClient(source, base_url, settings, log=log, sleep=sleeps, **client_kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _failure(call: Any) -> SourceHttpError:
    with pytest.raises(SourceHttpError) as info:
        call()
    return info.value


# --------------------------------------------------------------------------- success


def test_get_returns_parsed_json_and_sends_the_query_params(server, make_client, sleeps):
    server.reply(200, {"models": [{"name": "llama3.2:latest", "size": 2019393189}]})
    client = make_client(server.url)

    result = client.get_json("/api/tags", params={"name": "llama3.2", "limit": 5})

    assert result == {"models": [{"name": "llama3.2:latest", "size": 2019393189}]}
    [seen] = server.requests
    assert seen.method == "GET"
    assert seen.path == "/api/tags"
    assert seen.query == {"name": ["llama3.2"], "limit": ["5"]}
    assert sleeps.waits == []


def test_post_sends_the_json_body_and_returns_parsed_json(server, make_client):
    server.reply(200, {"details": {"family": "llama"}, "capabilities": ["completion"]})
    client = make_client(server.url)

    result = client.post_json("/api/show", {"model": "llama3.2:latest", "verbose": True})

    assert result == {"details": {"family": "llama"}, "capabilities": ["completion"]}
    [seen] = server.requests
    assert seen.method == "POST"
    assert seen.path == "/api/show"
    assert seen.headers["content-type"].startswith("application/json")
    assert seen.json() == {"model": "llama3.2:latest", "verbose": True}


# --------------------------------------------------------------------------- retries and backoff


def test_two_503s_then_200_succeeds_on_the_third_attempt_after_exponential_jittered_waits(server, make_client, sleeps):
    server.reply(503, times=2).reply(200, {"ok": True})
    client = make_client(server.url, MaxRetries=3, BackoffSeconds=1.0, BackoffMaxSeconds=60)

    assert client.get_json("/api/tags") == {"ok": True}

    assert len(server.requests) == 3
    assert len(sleeps.waits) == 2
    first, second = sleeps.waits
    assert 0.5 <= first <= 1.0  # attempt 1: ceiling = 1 * 2**0
    assert 1.0 <= second <= 2.0  # attempt 2: ceiling = 1 * 2**1


def test_backoff_ceiling_is_capped_by_backoff_max_seconds(server, make_client, sleeps):
    server.reply(502, times=3).reply(200, [])
    client = make_client(server.url, MaxRetries=3, BackoffSeconds=4.0, BackoffMaxSeconds=5.0)

    assert client.get_json("/items") == []

    assert len(sleeps.waits) == 3
    ceilings = [4.0, 5.0, 5.0]  # min(5, 4*1), min(5, 4*2), min(5, 4*4)
    for wait, ceiling in zip(sleeps.waits, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_429_with_retry_after_seconds_waits_exactly_that_long(server, make_client, sleeps):
    server.reply(429, {"error": "slow down"}, headers={"Retry-After": "7"}).reply(200, {"ok": True})
    client = make_client(server.url, BackoffSeconds=1.0)

    assert client.get_json("/api/tags") == {"ok": True}

    assert sleeps.waits == [7.0]
    assert len(server.requests) == 2


def test_429_with_an_http_date_retry_after_is_honoured_approximately(server, make_client, sleeps):
    when = datetime.now(UTC) + timedelta(seconds=30)
    server.reply(429, headers={"Retry-After": format_datetime(when, usegmt=True)}).reply(200, {"ok": True})
    client = make_client(server.url, BackoffSeconds=1.0)

    assert client.get_json("/api/tags") == {"ok": True}

    [wait] = sleeps.waits
    assert wait == pytest.approx(30, abs=2)


def test_retry_after_above_retry_after_max_seconds_is_capped(server, make_client, sleeps):
    server.reply(429, headers={"Retry-After": "3600"}).reply(200, {"ok": True})
    client = make_client(server.url, RetryAfterMaxSeconds=120)

    assert client.get_json("/api/tags") == {"ok": True}

    assert sleeps.waits == [120.0]


def test_exhausted_retries_raise_a_transient_error_naming_source_server_endpoint_status_and_attempts(
        server, make_client, sleeps):
    server.reply(503, times=3)
    client = make_client(server.url, source="Civitai", MaxRetries=2)

    error = _failure(lambda: client.get_json("/api/v1/models"))

    assert str(error).startswith(f"Civitai at {server.url}: GET /api/v1/models failed: HTTP 503")
    assert "3 attempts" in str(error)
    assert error.transient is True
    assert error.status == 503
    assert len(server.requests) == 3
    assert len(sleeps.waits) == 2


def test_connection_refused_is_retried_then_reported_as_connection_refused(refused_url, make_client, sleeps):
    client = make_client(refused_url, MaxRetries=2)

    error = _failure(lambda: client.get_json("/api/tags"))

    assert "connection refused" in str(error)
    assert str(error).startswith(f"Ollama at {refused_url}: GET /api/tags failed:")
    assert "3 attempts" in str(error)  # MaxRetries + 1
    assert len(sleeps.waits) == 2  # one wait between each of the 3 attempts
    assert error.transient is True
    assert error.status is None


def test_a_server_slower_than_timeout_seconds_is_reported_as_timed_out(server, make_client):
    server.reply(200, {"ok": True}, delay=0.6, times=2)
    client = make_client(server.url, TimeoutSeconds=0.2, MaxRetries=1)

    started = time.monotonic()
    error = _failure(lambda: client.get_json("/api/tags"))

    assert time.monotonic() - started < 1.0  # neither attempt waited for the slow answer
    assert "timed out" in str(error)
    assert "2 attempts" in str(error)
    assert error.transient is True
    assert len(server.requests) == 2


def test_a_non_json_200_is_retried_as_transient(server, make_client, sleeps):
    server.reply(200, CLOUDFLARE_PAGE, headers={"Content-Type": "text/html; charset=UTF-8"})
    server.reply(200, {"items": [1, 2]})
    client = make_client(server.url, MaxRetries=2)

    assert client.get_json("/api/v1/models") == {"items": [1, 2]}

    assert len(server.requests) == 2
    assert len(sleeps.waits) == 1


def test_a_persistent_non_json_200_ends_in_a_non_json_response_error(server, make_client):
    server.reply(200, CLOUDFLARE_PAGE, headers={"Content-Type": "text/html; charset=UTF-8"}, times=2)
    client = make_client(server.url, source="Civitai", MaxRetries=1)

    error = _failure(lambda: client.get_json("/api/v1/models"))

    assert "non-JSON response (text/html" in str(error)
    assert error.transient is True
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "api_text"),
    [
        (404, {"error": "model 'foo:latest' not found"}, "model 'foo:latest' not found"),
        (400, {"error": "model 'foo:latest' not found"}, "model 'foo:latest' not found"),
        (404, {"success": False, "message": "That record was not found."}, "That record was not found."),
        (400, {"success": False, "reason": "tag query too long"}, "tag query too long"),
    ],
    ids=["ollama-404", "ollama-400", "danbooru-message", "e621-reason"],
)
def test_a_client_error_is_not_retried_and_carries_the_apis_own_error_text(
        server, make_client, sleeps, status, body, api_text):
    server.reply(status, body).reply(200, {"should": "never be fetched"})
    client = make_client(server.url, MaxRetries=3)

    error = _failure(lambda: client.post_json("/api/show", {"model": "foo:latest"}))

    assert len(server.requests) == 1
    assert sleeps.waits == []
    assert str(error).startswith(f"Ollama at {server.url}: POST /api/show failed: HTTP {status}")
    assert api_text in str(error)
    assert error.status == status
    assert error.transient is False


# --------------------------------------------------------------------------- secrets


def test_a_secret_echoed_in_retried_error_bodies_is_masked_in_the_error_and_every_log_line(server, make_client, log):
    server.reply(503, {"error": f"upstream rejected token {SECRET}"}, times=2)
    client = make_client(server.url, source="Civitai", MaxRetries=1, secrets=[SECRET],
                         headers={"Authorization": f"Bearer {SECRET}"})

    error = _failure(lambda: client.get_json("/api/v1/models"))

    assert SECRET not in str(error)
    assert "upstream rejected token ***" in str(error)
    assert log.lines(), "the retry should have been logged"
    for line in log.lines():
        assert SECRET not in line
    assert any("***" in line for line in log.lines("warning"))


def test_a_secret_echoed_in_a_non_retried_error_body_is_masked(server, make_client, log):
    server.reply(401, {"success": False, "message": f"invalid api key {SECRET}"})
    client = make_client(server.url, source="Danbooru", secrets=[SECRET], auth=httpx.BasicAuth("me", SECRET))

    error = _failure(lambda: client.get_json("/posts.json"))

    assert SECRET not in str(error)
    assert "invalid api key ***" in str(error)
    assert all(SECRET not in line for line in log.lines())


def test_a_secret_cut_by_the_body_summary_limit_leaks_no_fragment(server, make_client):
    # The plain-text summary keeps the first 300 characters: the echoed secret straddles that limit.
    page = "x" * 294 + " " + SECRET + " trailing"
    server.reply(403, page, headers={"Content-Type": "text/plain"})
    client = make_client(server.url, source="Civitai", secrets=[SECRET])

    error = _failure(lambda: client.get_json("/api/v1/models"))

    assert "HTTP 403" in str(error)
    assert SECRET[:4] not in str(error)


# --------------------------------------------------------------------------- headers and auth


def test_the_default_user_agent_identifies_the_pipelines(server, make_client):
    server.reply(200, {})
    client = make_client(server.url)

    client.get_json("/api/version")

    [seen] = server.requests
    assert seen.headers["user-agent"].startswith("umlmm-pipelines/")
    assert seen.headers["accept"] == "application/json"


def test_a_configured_user_agent_is_sent(server, make_client):
    server.reply(200, {})
    client = make_client(server.url, UserAgent="my-catalog/2.0 (+ops@example.org)")

    client.get_json("/api/version")

    [seen] = server.requests
    assert seen.headers["user-agent"] == "my-catalog/2.0 (+ops@example.org)"


def test_extra_headers_and_basic_auth_travel_in_headers_never_in_the_url(server, make_client):
    server.reply(200, {"ok": True})
    client = make_client(server.url, source="Danbooru", auth=httpx.BasicAuth("alice", SECRET),
                         headers={"X-Api-Key": "header-only-key"})

    client.get_json("/posts.json", params={"tags": "rating:safe"})

    [seen] = server.requests
    expected = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert seen.headers["authorization"] == expected
    assert seen.headers["x-api-key"] == "header-only-key"
    assert seen.query == {"tags": ["rating:safe"]}
    for leaked in (SECRET, "alice", "header-only-key"):
        assert leaked not in seen.raw_target


# --------------------------------------------------------------------------- request rate


class FakeClock:
    """monotonic() only advances when sleep() is asked to wait, so spacing is exact and nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_requests_per_second_spaces_back_to_back_requests(server, log, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(http_module, "time", types.SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))
    server.reply(200, {"page": 1}).reply(200, {"page": 2}).reply(200, {"page": 3})
    client = PoliteClient("Civitai", server.url, HttpSettings(RequestsPerSecond=2), log=log, sleep=clock.sleep)
    try:
        pages = [client.get_json("/api/v1/models", params={"page": n}) for n in (1, 2, 3)]
    finally:
        client.close()

    assert pages == [{"page": 1}, {"page": 2}, {"page": 3}]
    assert clock.waits == [pytest.approx(0.5), pytest.approx(0.5)]  # none before the first request


def test_requests_per_second_zero_never_sleeps(server, make_client, sleeps):
    server.reply(200, {}, times=3)
    client = make_client(server.url, RequestsPerSecond=0)

    for _ in range(3):
        client.get_json("/api/tags")

    assert sleeps.waits == []
    assert len(server.requests) == 3


# --------------------------------------------------------------------------- logging


def test_each_retry_logs_a_warning_naming_the_source_endpoint_and_wait(server, make_client, log):
    server.reply(429, headers={"Retry-After": "7"}).reply(503, headers={"Retry-After": "3"}).reply(200, {})
    client = make_client(server.url, source="Ollama", MaxRetries=3)

    client.get_json("/api/tags")

    warnings = log.lines("warning")
    assert len(warnings) == 2
    for line, wait in zip(warnings, ("7", "3"), strict=True):
        assert "http_retry" in line
        assert "Ollama" in line
        assert "GET /api/tags" in line
        assert f"wait_s={wait}" in line
