"""HTTP politeness shared by every web source: timeouts, retries, Retry-After, a request rate.

Every error names the source, the server, the endpoint and the cause, and never contains a
secret: credentials travel in headers (never in URLs), and any configured secret that a server
echoes back is replaced before the text reaches a log or an exception.
"""

from __future__ import annotations

import email.utils
import errno
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from umlmm_pipelines.ingestion.logfmt import kv

DEFAULT_USER_AGENT = "umlmm-pipelines/0.1 (UMLMM metadata catalog; self-hosted)"
_TRANSIENT_STATUS = {429, 500, 502, 503, 504, 520, 521, 522, 523, 524}


class HttpSettings(BaseModel):
    """Client settings every web source accepts (``Sources__<Source>__TimeoutSeconds`` …)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    timeout_seconds: float = Field(30.0, alias="TimeoutSeconds", gt=0)
    max_retries: int = Field(3, alias="MaxRetries", ge=0, le=20)
    backoff_seconds: float = Field(1.0, alias="BackoffSeconds", ge=0)
    backoff_max_seconds: float = Field(60.0, alias="BackoffMaxSeconds", ge=0)
    retry_after_max_seconds: float = Field(300.0, alias="RetryAfterMaxSeconds", ge=0)
    requests_per_second: float = Field(0.0, alias="RequestsPerSecond", ge=0)
    user_agent: str = Field(DEFAULT_USER_AGENT, alias="UserAgent", min_length=1)


class SourceHttpError(RuntimeError):
    """A request failed for good (after retries, or a non-retryable answer)."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class _Retryable(Exception):
    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class PoliteClient:
    """A JSON client for one server of one source."""

    def __init__(
        self,
        source: str,
        base_url: str,
        settings: HttpSettings,
        *,
        log: Any,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.log = log
        self._secrets = [s for s in secrets if s]
        self._sleep = sleep
        self._next_request_at = 0.0
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers={"User-Agent": settings.user_agent, "Accept": "application/json", **(headers or {})},
            auth=auth,
            transport=transport,
            follow_redirects=True,
        )

    def close(self) -> None:
        self._client.close()

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params=params)

    def post_json(self, path: str, body: Any) -> Any:
        return self.request_json("POST", path, json=body)

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        endpoint = f"{method} {path}"
        attempts = self.settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            self._respect_rate()
            try:
                return self._attempt(method, path, endpoint, **kwargs)
            except _Retryable as problem:
                if attempt >= attempts:
                    raise SourceHttpError(
                        self._describe(endpoint, f"{problem.reason} (gave up after {attempts} attempts)"),
                        status=problem.status, transient=True,
                    ) from None
                wait = self._wait_for(attempt, problem.retry_after)
                self.log.warning(kv("http_retry", source=self.source, server=self.base_url, endpoint=endpoint,
                                    attempt=attempt, reason=self._redact(problem.reason), wait_s=round(wait, 2)))
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, method: str, path: str, endpoint: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise _Retryable(f"timed out after {self.settings.timeout_seconds:g} s") from None
        except httpx.ConnectError as exc:
            raise _Retryable(_connect_reason(exc)) from None
        except httpx.TransportError as exc:
            raise _Retryable(f"transport error: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status in _TRANSIENT_STATUS:
            raise _Retryable(
                f"HTTP {status}{self._body_summary(response)}", status, _retry_after_seconds(response.headers)
            )
        if status >= 400:
            raise SourceHttpError(
                self._describe(endpoint, f"HTTP {status}{self._body_summary(response)}"), status=status
            )
        try:
            return orjson.loads(response.content)
        except ValueError:
            # A Cloudflare challenge or a proxy's error page: the API is blocked for now, not broken.
            kind = response.headers.get("content-type", "no content type")
            raise _Retryable(f"non-JSON response ({kind}){self._body_summary(response)}", status) from None

    def _describe(self, endpoint: str, reason: str) -> str:
        return self._redact(f"{self.source} at {self.base_url}: {endpoint} failed: {reason}")

    def _body_summary(self, response: httpx.Response, limit: int = 300) -> str:
        """The API's own error text where it gave one, else the start of the body.

        Secrets are masked before the text is cut, so a cut never leaves a fragment of one.
        """
        try:
            data = response.json()
        except ValueError:
            text = " ".join(self._redact(response.text).split())[:limit]
            return f": {text}" if text else ""
        if isinstance(data, dict):
            parts = [data[key] for key in ("error", "message", "reason") if data.get(key)]
            if parts:
                text = " - ".join(p if isinstance(p, str) else str(p) for p in parts)
                return f": {self._redact(text)[:limit]}"
        return f": {self._redact(str(data))[:limit]}"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _wait_for(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.retry_after_max_seconds)
        ceiling = min(self.settings.backoff_max_seconds, self.settings.backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def _respect_rate(self) -> None:
        rate = self.settings.requests_per_second
        if rate <= 0:
            return
        now = time.monotonic()
        if now < self._next_request_at:
            self._sleep(self._next_request_at - now)
            now = time.monotonic()
        self._next_request_at = max(now, self._next_request_at) + 1.0 / rate


def _connect_reason(exc: httpx.ConnectError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    return f"cannot connect: {text or type(exc).__name__}"


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
