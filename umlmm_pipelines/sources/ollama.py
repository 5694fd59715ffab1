"""Ollama: the models installed on one or more Ollama servers.

``GET /api/tags`` lists every local model (no paging), so each host's listing is one page and a
complete scope: a model missing from it is marked removed. ``POST /api/show`` is expensive (it
opens the GGUF file), so it is called only for models whose listing entry changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from pydantic import Field, field_validator

from umlmm_pipelines.catalog.tables import JSONType, Timestamp, entity_table
from umlmm_pipelines.ingestion.http import HttpSettings, PoliteClient, SourceHttpError
from umlmm_pipelines.ingestion.source import MappedRecord, Page, Record, RecordError, RunInputs, SourceRun, SourceSpec
from umlmm_pipelines.ingestion.timestamps import parse_timestamp

DEFAULT_HOST = "http://127.0.0.1:11434"
_BLOB_FROM = re.compile(r"blobs/sha256[-:]([0-9a-f]{64})$")
_MULTI_VALUED_PARAMETERS = {"stop"}


class OllamaSettings(HttpSettings):
    """``Sources__Ollama__BaseUrl`` takes one URL or several separated by commas."""

    base_urls: list[str] = Field(default_factory=lambda: [DEFAULT_HOST], alias="BaseUrl", min_length=1)

    @field_validator("base_urls", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        return value

    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"'{url}' is not an http(s) URL such as {DEFAULT_HOST}")
        return [url.rstrip("/") for url in value]


ollama_models = entity_table(
    "ollama_models",
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("tag", sa.String(128), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("modified_at", Timestamp, nullable=True),
    sa.Column("format", sa.String(32), nullable=True),
    sa.Column("family", sa.String(64), nullable=True),
    sa.Column("families", JSONType, nullable=True),
    sa.Column("parameter_size", sa.String(32), nullable=True),
    sa.Column("quantization_level", sa.String(32), nullable=True),
    sa.Column("capabilities", JSONType, nullable=True),
    sa.Column("context_length", sa.Integer, nullable=True),
    sa.Column("remote_model", sa.String(255), nullable=True),
    sa.Column("remote_host", sa.String(255), nullable=True),
    sa.Column("parent", sa.Text, nullable=True),
    sa.Column("blob_digest", sa.String(71), nullable=True),
    sa.Column("parameters", JSONType, nullable=True),
    sa.Column("template", sa.Text, nullable=True),
    sa.Column("system", sa.Text, nullable=True),
    sa.Column("license", sa.Text, nullable=True),
    sa.Column("model_info", JSONType, nullable=True),
    sa.Index("ix_ollama_models_digest", "digest"),
    sa.Index("ix_ollama_models_host_name", "host", "name"),
)


class OllamaRun(SourceRun):
    settings: OllamaSettings

    def __init__(self, inputs: RunInputs) -> None:
        super().__init__(inputs)
        self.clients = {
            host: PoliteClient("Ollama", host, self.settings, log=self.log) for host in self.settings.base_urls
        }

    def pages(self) -> Iterator[Page]:
        for host, client in self.clients.items():
            try:
                listing = client.get_json("/api/tags")
            except SourceHttpError as exc:
                self.inputs.defer_failure(str(exc))
                continue
            models = listing.get("models") if isinstance(listing, dict) else None
            if not isinstance(models, list):
                self.inputs.defer_failure(
                    f"Ollama at {host}: GET /api/tags returned no 'models' list: {str(listing)[:200]}"
                )
                continue
            yield Page(
                records=[{"host": host, "listing": entry} for entry in models],
                label=f"{host} /api/tags ({len(models)} models)",
                complete_scope={"host": host},
            )

    def external_id(self, record: Record) -> str:
        return f"{record['host']}|{record['listing']['name']}"

    def fingerprint(self, record: Record) -> Any:
        return record["listing"]

    def enrich(self, record: Record) -> Record:
        listing = record["listing"]
        if listing.get("remote_host"):
            return record  # a cloud stub: nothing local to show, and /api/show would call out
        try:
            show = self.clients[record["host"]].post_json("/api/show", {"model": listing["name"]})
        except SourceHttpError as exc:
            if exc.status is None:
                raise  # the host went away: fail the run rather than half-map it
            raise RecordError(str(exc)) from None
        return {**record, "show": show}

    def map(self, record: Record) -> MappedRecord:
        return MappedRecord(row=map_model(record["host"], record["listing"], record.get("show")))

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def map_model(host: str, listing: dict[str, Any], show: dict[str, Any] | None) -> dict[str, Any]:
    """Normalized columns from an /api/tags entry and (when fetched) its /api/show answer."""
    show = show or {}
    details = {**(listing.get("details") or {}), **(show.get("details") or {})}
    name = listing["name"]
    model, tag = split_name(name)
    digest = listing.get("digest")
    if not isinstance(digest, str) or not digest:
        raise RecordError(f"model {name!r} has no digest")
    modelfile = show.get("modelfile") or ""
    parent = modelfile_from(modelfile)
    blob = _BLOB_FROM.search(parent or "")
    model_info = show.get("model_info")
    return {
        "host": host,
        "name": name,
        "model": model,
        "tag": tag,
        "digest": digest.removeprefix("sha256:"),
        "size": listing.get("size"),
        "modified_at": parse_timestamp(listing.get("modified_at") or show.get("modified_at")),
        "format": details.get("format") or None,
        "family": details.get("family") or None,
        "families": details.get("families"),
        "parameter_size": details.get("parameter_size") or None,
        "quantization_level": details.get("quantization_level") or None,
        "capabilities": show.get("capabilities", listing.get("capabilities")),
        "context_length": context_length(details, model_info),
        "remote_model": listing.get("remote_model") or show.get("remote_model"),
        "remote_host": listing.get("remote_host") or show.get("remote_host"),
        "parent": parent or details.get("parent_model") or None,
        "blob_digest": f"sha256:{blob.group(1)}" if blob else None,
        "parameters": parse_parameters(show.get("parameters")) if show else None,
        "template": show.get("template"),
        "system": show.get("system"),
        "license": show.get("license"),
        "model_info": model_info,
    }


def split_name(name: str) -> tuple[str, str]:
    """``model:tag``; the tag defaults to ``latest``. A ``host:port/`` registry prefix is not a tag."""
    head, sep, tail = name.rpartition(":")
    if not sep or "/" in tail:
        return name, "latest"
    return head, tail


def modelfile_from(modelfile: str) -> str | None:
    for line in modelfile.splitlines():
        if line.upper().startswith("FROM "):
            return line[5:].strip()
    return None


def parse_parameters(text: str | None) -> dict[str, Any]:
    """``key   value`` lines with Go-formatted values; repeated keys (``stop``) become lists."""
    result: dict[str, Any] = {}
    for line in (text or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        parsed = _go_value(value.strip())
        if key in _MULTI_VALUED_PARAMETERS:
            result.setdefault(key, []).append(parsed)
        elif key in result:
            previous = result[key]
            result[key] = [*previous, parsed] if isinstance(previous, list) else [previous, parsed]
        else:
            result[key] = parsed
    return result


def _go_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def context_length(details: dict[str, Any], model_info: dict[str, Any] | None) -> int | None:
    if isinstance(details.get("context_length"), int):
        return details["context_length"]
    for key, value in (model_info or {}).items():
        if key.endswith(".context_length") and isinstance(value, int):
            return value
    return None


SOURCE = SourceSpec(
    name="ollama",
    display_name="Ollama",
    asset_name="models",
    description=(
        "Models installed on the configured Ollama servers (GET /api/tags, then POST /api/show for new or "
        "changed digests). Models gone from a host are marked removed, not deleted."
    ),
    settings_model=OllamaSettings,
    table=ollama_models,
    run_factory=OllamaRun,
)
