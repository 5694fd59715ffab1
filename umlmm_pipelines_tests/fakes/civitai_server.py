"""A fake CivitAI ``/api/v1/models`` on 127.0.0.1 that follows the real paging rules and can misbehave on demand.

Rules implemented (see ``/work/shared/sources/civitai/README.md``):

* ``limit`` 1..100, default 100; anything else is a 400 whose ``error`` is a Zod error object, as on the site.
* Cursor paging: the first call has no ``cursor``; ``metadata.nextCursor`` (opaque, ``"<key>|<key>|<id>"``)
  and ``metadata.nextPage`` (the full URL with ``cursor=``) are present only when there is a next page (the
  server looks one row ahead). The cursor is a keyset position, so models that move while a walk is under way
  are skipped or repeated, as on the site.
* Numbered pages: ``page=N`` adds ``currentPage``/``pageSize``; ``page * limit > 1000`` is a **429** ("use
  cursors instead") that is not a rate limit. When both are sent, ``cursor`` wins.
* ``types``: repeated or comma-separated; ``sort``: ``Highest Rated`` (default; thumbs up, downloads, id),
  ``Most Downloaded``, ``Newest`` (latest version's ``publishedAt``, then id; newest first), ``Oldest``.
* ``nsfw``: models flagged ``nsfw`` are hidden unless ``nsfw=true``.
* Auth: ``Authorization: Bearer <token>`` or ``?token=``. A wrong token is a 401 ``{"error":"Unauthorized"}``;
  with ``token_required`` set, so is a missing one.

The mutable :class:`CivitAIState` holds the served models (edit them in place between runs), forced answers
(``force``; consumed in order by ``GET /api/v1/models``) and every request received (``requests``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "civitai"
MODELS_PATH = "/api/v1/models"
MAX_LIMIT = 100
MAX_PAGED_ITEMS = 1000

ForcedResponse = tuple[int, dict[str, str], Any] | None  # None: answer this request normally


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text("utf-8"))


def fixture_models() -> list[dict[str, Any]]:
    """The three models of ``models_page.json``: a checkpoint, a LoRA, an archived LoRA."""
    return copy.deepcopy(load_fixture("models_page.json")["items"])


def _hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest().upper()[:length]


def make_model(
    model_id: int,
    model_type: str = "LORA",
    published_at: datetime | None = None,
    *,
    versions: int = 2,
    nsfw: bool = False,
) -> dict[str, Any]:
    """A model shaped like the fixture LoRA, with ids, hashes and times of its own.

    Versions are ``model_id * 10 + n`` (newest first), files ``model_id * 100 + n``, images ``model_id * 1000 + n``.
    """
    template = fixture_models()[1]
    published_at = published_at or datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=model_id)
    model = copy.deepcopy(template)
    model.update(id=model_id, name=f"Model {model_id}", type=model_type, nsfw=nsfw, nsfwLevel=28 if nsfw else 1)
    model["stats"] = {"downloadCount": 1000 + model_id, "thumbsUpCount": model_id % 97, "thumbsDownCount": 0,
                      "commentCount": 3, "tippedAmountCount": 0}
    version_template = template["modelVersions"][0]
    model["modelVersions"] = []
    for n in range(versions):
        version = copy.deepcopy(version_template)
        version_id = model_id * 10 + n
        when = published_at - timedelta(days=30 * n)
        version.update(id=version_id, index=n, name=f"v{versions - n}.0",
                       publishedAt=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                       downloadUrl=f"https://civitai.com/api/download/models/{version_id}")
        version["stats"] = {"downloadCount": 500 + n, "thumbsUpCount": 10 + n, "thumbsDownCount": 0}
        file = copy.deepcopy(version_template["files"][0])
        file.update(id=model_id * 100 + n, name=f"model_{model_id}_v{versions - n}.safetensors",
                    downloadUrl=f"https://civitai.com/api/download/models/{version_id}")
        seed = f"{model_id}-{n}"
        file["hashes"] = {"AutoV1": _hex(seed + "a1", 8), "AutoV2": _hex(seed, 10), "SHA256": _hex(seed, 64),
                          "CRC32": _hex(seed + "crc", 8), "BLAKE3": _hex(seed + "b3", 64),
                          "AutoV3": _hex(seed + "a3", 12)}
        version["files"] = [file]
        image = copy.deepcopy(version_template["images"][0])
        image.update(id=model_id * 1000 + n, url=f"https://image.civitai.com/x/{model_id}-{n}/original=true/i.jpeg")
        version["images"] = [image]
        model["modelVersions"].append(version)
    return model


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    raw_query: str = ""

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def _published_ms(model: Mapping[str, Any]) -> int:
    times = [v.get("publishedAt") for v in model.get("modelVersions") or [] if isinstance(v, Mapping)]
    parsed = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times if t]
    return int(max(parsed).timestamp() * 1000) if parsed else 0


def _stat(model: Mapping[str, Any], name: str) -> int:
    return int((model.get("stats") or {}).get(name) or 0)


#: sort name -> (the key columns of a model, largest first?) ; the id is always the last key.
_SORTS: dict[str, tuple[Callable[[Mapping[str, Any]], tuple[int, ...]], bool]] = {
    "Highest Rated": (lambda m: (_stat(m, "thumbsUpCount"), _stat(m, "downloadCount"), int(m["id"])), True),
    "Most Downloaded": (lambda m: (_stat(m, "downloadCount"), int(m["id"])), True),
    "Newest": (lambda m: (_published_ms(m), int(m["id"])), True),
    "Oldest": (lambda m: (_published_ms(m), int(m["id"])), False),
}


@dataclass
class CivitAIState:
    """What the fake serves. Tests mutate it between (or during) runs; all access goes through ``lock``."""

    models: dict[int, dict[str, Any]] = field(default_factory=dict)
    valid_token: str | None = None  # when set, a request that sends another token is refused (401)
    token_required: bool = False  # when true, so is a request that sends none
    forced_responses: list[ForcedResponse] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def add_models(self, models: list[dict[str, Any]]) -> None:
        with self.lock:
            for model in models:
                self.models[int(model["id"])] = model

    def model(self, model_id: int) -> dict[str, Any]:
        """The live dict of a served model, to edit in place."""
        with self.lock:
            return self.models[model_id]

    def force(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        """Queue one forced answer for the next GET /api/v1/models."""
        with self.lock:
            self.forced_responses.append((status, dict(headers or {}), {} if body is None else body))

    def serve_normally(self, times: int = 1) -> None:
        """Let the next ``times`` requests through before the forced answers queued after this call."""
        with self.lock:
            self.forced_responses.extend([None] * times)

    def models_requests(self) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == MODELS_PATH]

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    # -- the endpoint ----------------------------------------------------------------------------------------------
    def list_models(self, query: Mapping[str, list[str]], base_url: str) -> tuple[int, Any]:
        def last(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        limit_text = last("limit")
        try:
            limit = MAX_LIMIT if limit_text is None else int(limit_text)
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            return 400, {"error": {"issues": [{"code": "too_big" if limit > MAX_LIMIT else "invalid_type",
                                               "path": ["limit"], "message": "Number must be between 1 and 100"}],
                                   "name": "ZodError"}}
        sort = last("sort") or "Highest Rated"
        if sort not in _SORTS:
            return 400, {"error": {"issues": [{"code": "invalid_enum_value", "path": ["sort"],
                                               "message": f"Invalid enum value. Received '{sort}'"}],
                                   "name": "ZodError"}}
        key, descending = _SORTS[sort]
        types = {t.strip() for value in query.get("types", []) for t in value.split(",") if t.strip()}
        include_nsfw = (last("nsfw") or "false").lower() == "true"
        with self.lock:
            chosen = [copy.deepcopy(m) for m in self.models.values()
                      if (not types or m.get("type") in types) and (include_nsfw or not m.get("nsfw"))]
        chosen.sort(key=key, reverse=descending)
        cursor, page_text = last("cursor"), last("page")
        metadata: dict[str, Any] = {}
        if cursor:
            try:
                position = tuple(int(part) for part in cursor.split("|"))
            except ValueError:
                return 400, {"error": "Invalid cursor"}
            chosen = [m for m in chosen if (key(m) < position if descending else key(m) > position)]
        elif page_text:
            page = int(page_text)
            if page * limit > MAX_PAGED_ITEMS:
                return 429, {"error": "You've requested too many pages, please use cursors instead"}
            chosen = chosen[(page - 1) * limit:]
            metadata.update(currentPage=page, pageSize=limit)
        items, more = chosen[:limit], len(chosen) > limit  # one row ahead decides whether there is a next page
        if more:
            next_cursor = "|".join(str(part) for part in key(items[-1]))
            params = {k: v[-1] for k, v in query.items() if k not in ("cursor", "page", "token")}
            metadata["nextCursor"] = next_cursor
            metadata["nextPage"] = f"{base_url}{MODELS_PATH}?{urlencode({**params, 'cursor': next_cursor})}"
        return 200, {"items": items, "metadata": metadata}


class _Handler(BaseHTTPRequestHandler):
    state: CivitAIState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        if isinstance(body, bytes | str):
            data = body if isinstance(body, bytes) else body.encode()
        else:
            data = json.dumps(body).encode()
        headers = dict(headers or {})
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "text/html" if data.lstrip()[:1] == b"<" else "application/json; charset=utf-8"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        state = self.state
        with state.lock:
            state.requests.append(RecordedRequest("GET", parts.path, query,
                                                  {k.lower(): v for k, v in self.headers.items()}, parts.query))
        if parts.path != MODELS_PATH:
            return self._send(404, {"error": "Not found"})
        forced: ForcedResponse = None
        with state.lock:
            if state.forced_responses:
                forced = state.forced_responses.pop(0)
        if forced is not None:
            status, headers, body = forced
            return self._send(status, body, headers)
        header = self.headers.get("Authorization") or ""
        token = header[len("Bearer "):] if header.startswith("Bearer ") else (query.get("token") or [None])[-1]
        if (token and state.valid_token and token != state.valid_token) or (state.token_required and not token):
            return self._send(401, {"error": "Unauthorized"})
        status, body = state.list_models(query, f"http://{self.headers.get('Host')}")
        return self._send(status, body)


class FakeCivitAI:
    def __init__(self, state: CivitAIState | None = None) -> None:
        self.state = state or CivitAIState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> FakeCivitAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_fake_civitai(state: CivitAIState | None = None) -> Iterator[FakeCivitAI]:
    fake = FakeCivitAI(state).start()
    try:
        yield fake
    finally:
        fake.stop()

