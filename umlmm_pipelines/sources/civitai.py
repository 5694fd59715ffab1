"""CivitAI: models with their versions, files (with hashes) and preview images, one partition per model type.

``GET /api/v1/models?types=<T>&sort=Newest&limit=100&nsfw=true`` pages with the opaque cursor in
``metadata.nextCursor`` (absent on the last page). Numbered pages are never used: the API refuses
``page * limit > 1000`` with a 429 that is not a rate limit.

Two kinds of walk, decided per type when the run starts (state: ``source_cursors`` scope
``models:<type>``, a small JSON document):

* **full** when no full walk of the type has completed yet, or the last one is ``FullRefreshDays``
  old: every page to the end. Each page is committed with the cursor of the next one, so a walk
  that fails or is terminated resumes where it stopped on the next run (a cursor the API no
  longer accepts restarts the walk). A full walk rewrites unchanged models too (``Page.refresh``),
  which is what brings their download counts up to date (see below).
* **incremental** otherwise: newest models first, stopping after a page on which every model was
  unchanged. ``sort=Newest`` orders by a model's latest version, so new models and new versions
  come first; edits to old models wait for the next full walk.

The fingerprint that decides created / updated / unchanged leaves out the counters in ``stats``
(downloads, likes, comments, tips of the model and its versions). They move on popular models
every hour, so with them every page would look changed and an incremental walk would never stop.
The counters are still stored: written whenever the model is written, and on every full walk.

Moderated models keep their history: a model whose ``mode`` is set (``Archived`` lists its
versions without files, ``TakenDown`` without files and images, sometimes without versions at
all) updates its own row, but the versions, files and images already catalogued for it are kept
as they were instead of being replaced by the payload's partial lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, SecretStr, field_validator

from umlmm_pipelines.catalog.tables import JSONType, RawPayload, Timestamp, child_table, entity_table
from umlmm_pipelines.ingestion.http import HttpSettings, PoliteClient, SourceHttpError
from umlmm_pipelines.ingestion.logfmt import kv
from umlmm_pipelines.ingestion.source import (
    MappedRecord,
    Page,
    Record,
    RecordError,
    RunInputs,
    SourceError,
    SourceRun,
    SourceSpec,
)
from umlmm_pipelines.ingestion.timestamps import parse_timestamp

MODELS_PATH = "/api/v1/models"
#: Read when ``Sources__CivitAI__ApiToken`` is not set: the name CivitAI's own tools use.
TOKEN_ENV = "CIVITAI_API_TOKEN"

#: The partitions configured by default (issue 4).
MODEL_TYPES = (
    "Checkpoint", "TextualInversion", "Hypernetwork", "AestheticGradient", "LORA", "LoCon", "DoRA", "Controlnet",
    "Upscaler", "MotionModule", "VAE", "Poses", "Wildcards", "Workflows", "Detection", "Other",
)
#: Every value the API's ``types`` filter accepts; any of them may be configured.
API_MODEL_TYPES = (*MODEL_TYPES, "TextEncoder", "UNet", "CLIPVision", "ComfyWorkflows", "VisionLanguage", "CLIP",
                   "LLM")
#: ``nsfwLevel`` of /images is a name; inside model versions it is the bit it stands for.
_NSFW_LEVELS = {"none": 1, "soft": 2, "mature": 4, "x": 8, "xxx": 16}
_HASH_COLUMNS = {"sha256": "sha256", "autov1": "autov1", "autov2": "autov2", "autov3": "autov3",
                 "blake3": "blake3", "crc32": "crc32"}


class CivitAISettings(HttpSettings):
    """``Sources__CivitAI__…``: where to read, which types, how often to walk everything."""

    base_url: str = Field("https://civitai.com", alias="BaseUrl")
    types: list[str] = Field(default_factory=lambda: list(MODEL_TYPES), alias="Types", min_length=1)
    page_size: int = Field(100, alias="PageSize", ge=1, le=100)
    requests_per_second: float = Field(1.0, alias="RequestsPerSecond", ge=0)
    backoff_max_seconds: float = Field(30.0, alias="BackoffMaxSeconds", ge=0)
    full_refresh_days: float = Field(7.0, alias="FullRefreshDays", ge=0,
                                     description="a full walk of a type when its last one is this old; 0 = always")
    include_nsfw: bool = Field(True, alias="IncludeNsfw", description="send nsfw=true (the API hides NSFW otherwise)")
    api_token: SecretStr | None = Field(None, alias="ApiToken")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http(s) URL such as https://civitai.com")
        return value.rstrip("/")

    @field_validator("types", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        """The API's spelling of each type (matched case-insensitively), each once: they are partition keys."""
        canonical = {t.lower(): t for t in API_MODEL_TYPES}
        unknown = [t for t in value if t.lower() not in canonical]
        if unknown:
            raise ValueError(f"unknown model type(s) {', '.join(unknown)} (known: {', '.join(API_MODEL_TYPES)})")
        return list(dict.fromkeys(canonical[t.lower()] for t in value))


civitai_models = entity_table(
    "civitai_models",
    sa.Column("model_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("nsfw", sa.Boolean, nullable=True),
    sa.Column("nsfw_level", sa.Integer, nullable=True),
    sa.Column("poi", sa.Boolean, nullable=True),
    sa.Column("minor", sa.Boolean, nullable=True),
    sa.Column("sfw_only", sa.Boolean, nullable=True),
    sa.Column("availability", sa.String(64), nullable=True),
    sa.Column("mode", sa.String(64), nullable=True),
    sa.Column("user_id", sa.BigInteger, nullable=True),
    sa.Column("creator_username", sa.Text, nullable=True),
    sa.Column("creator_image", sa.Text, nullable=True),
    sa.Column("tags", JSONType, nullable=True),
    sa.Column("base_models", JSONType, nullable=True),
    sa.Column("allow_no_credit", sa.Boolean, nullable=True),
    sa.Column("allow_commercial_use", JSONType, nullable=True),
    sa.Column("allow_derivatives", sa.Boolean, nullable=True),
    sa.Column("allow_different_license", sa.Boolean, nullable=True),
    sa.Column("supports_generation", sa.Boolean, nullable=True),
    sa.Column("cosmetic", JSONType, nullable=True),
    sa.Column("download_count", sa.BigInteger, nullable=True),
    sa.Column("thumbs_up_count", sa.BigInteger, nullable=True),
    sa.Column("thumbs_down_count", sa.BigInteger, nullable=True),
    sa.Column("comment_count", sa.BigInteger, nullable=True),
    sa.Column("tipped_amount_count", sa.BigInteger, nullable=True),
    sa.Column("favorite_count", sa.BigInteger, nullable=True),
    sa.Column("rating_count", sa.BigInteger, nullable=True),
    sa.Column("rating", sa.Float, nullable=True),
    sa.Column("stats", JSONType, nullable=True),
    sa.Column("version_count", sa.Integer, nullable=False),
    sa.Column("latest_version_id", sa.BigInteger, nullable=True),
    sa.Column("latest_published_at", Timestamp, nullable=True),
    sa.Index("ix_civitai_models_type", "type"),
)

#: One row per published version of a model (``model_id`` is the parent's external_id).
civitai_model_versions = child_table(
    "civitai_model_versions",
    "model_id",
    sa.Column("version_id", sa.BigInteger, nullable=False),
    sa.Column("position", sa.Integer, nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("base_model", sa.Text, nullable=True),
    sa.Column("base_model_type", sa.String(64), nullable=True),
    sa.Column("trained_words", JSONType, nullable=True),
    sa.Column("published_at", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=True),
    sa.Column("status", sa.String(64), nullable=True),
    sa.Column("availability", sa.String(64), nullable=True),
    sa.Column("nsfw_level", sa.Integer, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("download_url", sa.Text, nullable=True),
    sa.Column("early_access_ends_at", Timestamp, nullable=True),
    sa.Column("early_access_config", JSONType, nullable=True),
    sa.Column("vae_id", sa.BigInteger, nullable=True),
    sa.Column("supports_generation", sa.Boolean, nullable=True),
    sa.Column("air", sa.Text, nullable=True),
    sa.Column("download_count", sa.BigInteger, nullable=True),
    sa.Column("thumbs_up_count", sa.BigInteger, nullable=True),
    sa.Column("thumbs_down_count", sa.BigInteger, nullable=True),
    sa.Column("stats", JSONType, nullable=True),
    sa.Column("raw", RawPayload, nullable=False),
    sa.PrimaryKeyConstraint("model_id", "version_id"),
    sa.Index("ix_civitai_model_versions_version_id", "version_id"),
    parent_type=sa.BigInteger(),
)

#: One row per downloadable file of a version; ``catalog/model_links`` matches local files by
#: ``sha256`` (uppercase hex), else by ``name``, so both are indexed.
civitai_model_files = child_table(
    "civitai_model_files",
    "model_id",
    sa.Column("version_id", sa.BigInteger, nullable=False),
    sa.Column("file_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("size_kb", sa.Float, nullable=True),
    sa.Column("type", sa.String(64), nullable=True),
    sa.Column("format", sa.String(64), nullable=True),
    sa.Column("fp", sa.String(64), nullable=True),
    sa.Column("size", sa.String(64), nullable=True),
    sa.Column("file_metadata", JSONType, nullable=True),
    sa.Column("is_primary", sa.Boolean, nullable=False),
    sa.Column("pickle_scan_result", sa.String(64), nullable=True),
    sa.Column("pickle_scan_message", sa.Text, nullable=True),
    sa.Column("virus_scan_result", sa.String(64), nullable=True),
    sa.Column("virus_scan_message", sa.Text, nullable=True),
    sa.Column("scanned_at", Timestamp, nullable=True),
    sa.Column("sha256", sa.String(128), nullable=True),
    sa.Column("autov1", sa.String(128), nullable=True),
    sa.Column("autov2", sa.String(128), nullable=True),
    sa.Column("autov3", sa.String(128), nullable=True),
    sa.Column("blake3", sa.String(128), nullable=True),
    sa.Column("crc32", sa.String(128), nullable=True),
    sa.Column("download_url", sa.Text, nullable=True),
    sa.Column("raw", RawPayload, nullable=False),
    sa.PrimaryKeyConstraint("model_id", "file_id"),
    sa.Index("ix_civitai_model_files_sha256", "sha256"),
    sa.Index("ix_civitai_model_files_name", "name"),
    sa.Index("ix_civitai_model_files_version_id", "version_id"),
    parent_type=sa.BigInteger(),
)

#: Preview images of a version. ``/model-versions/{id}`` lists them without ids but with the
#: generation parameters (``meta``); the model listing has ids and no ``meta``.
civitai_model_images = child_table(
    "civitai_model_images",
    "model_id",
    sa.Column("version_id", sa.BigInteger, nullable=False),
    sa.Column("image_id", sa.BigInteger, nullable=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("url", sa.Text, nullable=True),
    sa.Column("nsfw_level", sa.Integer, nullable=True),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("hash", sa.Text, nullable=True),
    sa.Column("type", sa.String(64), nullable=True),
    sa.Column("has_meta", sa.Boolean, nullable=True),
    sa.Column("has_positive_prompt", sa.Boolean, nullable=True),
    sa.Column("on_site", sa.Boolean, nullable=True),
    sa.Column("minor", sa.Boolean, nullable=True),
    sa.Column("poi", sa.Boolean, nullable=True),
    sa.Column("remix_of_id", sa.BigInteger, nullable=True),
    sa.Column("availability", sa.String(64), nullable=True),
    sa.Column("meta", JSONType, nullable=True),
    sa.Column("raw", RawPayload, nullable=False),
    sa.Index("ix_civitai_model_images_model_id", "model_id"),
    sa.Index("ix_civitai_model_images_version_id", "version_id"),
    parent_type=sa.BigInteger(),
)

CHILD_TABLES = frozenset({civitai_model_versions, civitai_model_files, civitai_model_images})


# ---------------------------------------------------------------------------------------------------------------
# Walk state per type
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalkState:
    """What ``source_cursors`` remembers of one type's full walks.

    ``completed_at`` is when the last complete full walk *started*: everything it saw is at least
    that fresh. ``resume_cursor`` and ``started_at`` describe a full walk still in progress.
    """

    completed_at: datetime | None = None
    resume_cursor: str | None = None
    started_at: datetime | None = None

    @classmethod
    def parse(cls, text: str | None) -> WalkState:
        """The stored state; anything unreadable counts as "no full walk yet" (the safe direction)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(
                completed_at=parse_timestamp(data.get("full_walk_completed_at")),
                resume_cursor=data.get("resume_cursor") or None,
                started_at=parse_timestamp(data.get("full_walk_started_at")),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({
            "full_walk_completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "resume_cursor": self.resume_cursor,
            "full_walk_started_at": self.started_at.isoformat() if self.started_at else None,
        })

    def full_walk_due(self, now: datetime, refresh_days: float) -> bool:
        if self.completed_at is None or refresh_days <= 0:
            return True
        return now - self.completed_at >= timedelta(days=refresh_days)


def cursor_scope(model_type: str) -> str:
    return f"models:{model_type}"


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


class CivitAIRun(SourceRun):
    """Walks each model type of the run: resumed full walk, full walk or incremental walk."""

    settings: CivitAISettings

    def __init__(self, inputs: RunInputs) -> None:
        super().__init__(inputs)
        token = self.settings.api_token.get_secret_value() if self.settings.api_token else os.environ.get(TOKEN_ENV)
        token = (token or "").strip()
        self._token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = PoliteClient("CivitAI", self.settings.base_url, self.settings, log=self.log,
                                   headers=headers, secrets=[token] if token else [])
        self._incremental = False
        self._nothing_new = False
        self._walks: list[str] = []

    def pages(self) -> Iterator[Page]:
        types = list(self.inputs.partition_keys)
        if not types:
            raise SourceError("CivitAI: runs need a model-type partition (e.g. LORA)")
        for model_type in types:
            yield from self._walk(model_type)

    def _walk(self, model_type: str) -> Iterator[Page]:
        scope = cursor_scope(model_type)
        state = WalkState.parse(self.inputs.read_cursor(scope))
        now = datetime.now(UTC)
        full = True
        cursor: str | None = None
        started_at = now
        if state.resume_cursor:
            mode, cursor, started_at = "full walk (resumed)", state.resume_cursor, state.started_at or now
        elif state.full_walk_due(now, self.settings.full_refresh_days):
            mode = "full walk"
        else:
            mode, full = "incremental", False
        self._incremental, self._nothing_new = not full, False
        self.log.info(kv("walk_started", source="civitai", type=model_type, mode=mode,
                         last_full_walk=state.completed_at.isoformat() if state.completed_at else "never"))
        number = 0
        while True:
            number += 1
            params: dict[str, Any] = {"types": model_type, "sort": "Newest", "limit": self.settings.page_size,
                                      "nsfw": "true" if self.settings.include_nsfw else "false"}
            if cursor:
                params["cursor"] = cursor
            try:
                body = self.client.get_json(MODELS_PATH, params=params)
            except SourceHttpError as exc:
                if not (number == 1 and cursor and exc.status == 400):
                    raise
                # The API no longer takes the saved cursor (days old, or its format changed): start over.
                self.log.warning(kv("resume_cursor_refused", source="civitai", type=model_type, reason=str(exc)))
                cursor, started_at, mode, number = None, now, "full walk (restarted)", 0
                continue
            items, next_cursor = self._listing(body, model_type)
            if next_cursor is not None and next_cursor == cursor:
                raise SourceError(f"CivitAI: {MODELS_PATH}?types={model_type} returned the cursor it was given "
                                  f"({cursor}); stopping instead of looping")
            page_cursor = None
            if full:
                after = (WalkState(state.completed_at, next_cursor, started_at) if next_cursor
                         else WalkState(completed_at=started_at))
                page_cursor = (scope, after.dump())
            yield Page(items, f"{model_type} {mode} page {number}", cursor=page_cursor, refresh=full)
            if next_cursor is None:
                self._walk_ended(model_type, f"{mode}, {number} page(s), reached the end")
                return
            if self._nothing_new:
                self._walk_ended(model_type, f"{mode}, {number} page(s), stopped after a page with nothing new")
                return
            cursor = next_cursor

    def _walk_ended(self, model_type: str, summary: str) -> None:
        self._walks.append(f"{model_type}: {summary}")
        self.inputs.report["walks"] = "; ".join(self._walks)

    def _listing(self, body: Any, model_type: str) -> tuple[list[Record], str | None]:
        """The models of a response and the cursor of the next page (None at the end)."""
        where = f"CivitAI at {self.settings.base_url}: GET {MODELS_PATH}?types={model_type}"
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            shown = body.get("error") if isinstance(body, dict) and body.get("error") else type(body).__name__
            raise SourceError(self._redact(f"{where} returned no 'items' list: {str(shown)[:300]}"))
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise SourceError(f"{where} returned metadata of type {type(metadata).__name__}, not an object")
        next_cursor = metadata.get("nextCursor")
        if next_cursor in (None, "") and metadata.get("nextPage"):
            next_cursor = (parse_qs(urlsplit(str(metadata["nextPage"])).query).get("cursor") or [None])[0]
        return body["items"], (str(next_cursor) if next_cursor not in (None, "") else None)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def page_classified(self, page: Page, counts: Any) -> None:
        """An incremental walk stops once a whole page brought nothing new (every model unchanged)."""
        if self._incremental and counts.records_fetched > 0 and counts.records_unchanged == counts.records_fetched:
            self._nothing_new = True

    def external_id(self, record: Record) -> str:
        return str(_integer(record["id"], "id", required=True))

    def fingerprint(self, record: Record) -> Any:
        return without_counters(record)

    def map(self, record: Record) -> MappedRecord:
        return map_model(record)

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------------------------------
# Mapping
# ---------------------------------------------------------------------------------------------------------------


def without_counters(model: Record) -> Any:
    """The model without the ``stats`` counters of itself and its versions (see the module docstring)."""
    if not isinstance(model, Mapping):
        return model
    trimmed = {k: v for k, v in model.items() if k != "stats"}
    versions = model.get("modelVersions")
    if isinstance(versions, list):
        trimmed["modelVersions"] = [
            {k: v for k, v in version.items() if k != "stats"} if isinstance(version, Mapping) else version
            for version in versions
        ]
    return trimmed


def map_model(model: Record) -> MappedRecord:
    """The model's row, its versions, files and images; moderated models keep what is catalogued."""
    model_id = _integer(model.get("id"), "id", required=True)
    stats = _mapping(model.get("stats"), "stats")
    creator = _mapping(model.get("creator"), "creator")
    versions = model.get("modelVersions")
    if versions is None:
        versions = []
    if not isinstance(versions, list):
        raise RecordError(f"modelVersions is {type(versions).__name__}, not a list")
    version_rows: list[dict[str, Any]] = []
    file_rows: list[dict[str, Any]] = []
    image_rows: list[dict[str, Any]] = []
    seen_versions: set[int] = set()
    seen_files: set[int] = set()
    for position, version in enumerate(versions):
        version_row, files, images = map_version(version, model_id, position)
        if version_row["version_id"] in seen_versions:
            continue
        seen_versions.add(version_row["version_id"])
        version_rows.append(version_row)
        for file_row in files:
            if file_row["file_id"] not in seen_files:
                seen_files.add(file_row["file_id"])
                file_rows.append(file_row)
        image_rows.extend(images)
    published = [v["published_at"] for v in version_rows if v["published_at"] is not None]
    mode = _text(model.get("mode"), "mode")
    row = {
        "model_id": model_id,
        "name": _text(model.get("name"), "name", required=True),
        "description": _text(model.get("description"), "description"),
        "type": _text(model.get("type"), "type", required=True),
        "nsfw": _boolean(model.get("nsfw"), "nsfw"),
        "nsfw_level": _nsfw_level(model.get("nsfwLevel")),
        "poi": _boolean(model.get("poi"), "poi"),
        "minor": _boolean(model.get("minor"), "minor"),
        "sfw_only": _boolean(model.get("sfwOnly"), "sfwOnly"),
        "availability": _text(model.get("availability"), "availability"),
        "mode": mode,
        "user_id": _integer(model.get("userId"), "userId"),
        "creator_username": _text(creator.get("username"), "creator.username"),
        "creator_image": _text(creator.get("image"), "creator.image"),
        "tags": _strings(model.get("tags"), "tags"),
        "base_models": _strings(model.get("baseModels"), "baseModels"),
        "allow_no_credit": _boolean(model.get("allowNoCredit"), "allowNoCredit"),
        "allow_commercial_use": commercial_use(model.get("allowCommercialUse")),
        "allow_derivatives": _boolean(model.get("allowDerivatives"), "allowDerivatives"),
        "allow_different_license": _boolean(model.get("allowDifferentLicense"), "allowDifferentLicense"),
        "supports_generation": _boolean(model.get("supportsGeneration"), "supportsGeneration"),
        "cosmetic": model.get("cosmetic"),
        "download_count": _integer(stats.get("downloadCount"), "stats.downloadCount"),
        "thumbs_up_count": _integer(stats.get("thumbsUpCount"), "stats.thumbsUpCount"),
        "thumbs_down_count": _integer(stats.get("thumbsDownCount"), "stats.thumbsDownCount"),
        "comment_count": _integer(stats.get("commentCount"), "stats.commentCount"),
        "tipped_amount_count": _integer(stats.get("tippedAmountCount"), "stats.tippedAmountCount"),
        "favorite_count": _integer(stats.get("favoriteCount"), "stats.favoriteCount"),
        "rating_count": _integer(stats.get("ratingCount"), "stats.ratingCount"),
        "rating": _number(stats.get("rating"), "stats.rating"),
        "stats": dict(stats) if model.get("stats") is not None else None,
        "version_count": len(version_rows),
        "latest_version_id": version_rows[0]["version_id"] if version_rows else None,
        "latest_published_at": max(published) if published else None,
    }
    return MappedRecord(
        row=row,
        children={civitai_model_versions: version_rows, civitai_model_files: file_rows,
                  civitai_model_images: image_rows},
        keep_children=CHILD_TABLES if mode else frozenset(),
    )


def map_version(
    version: Any, model_id: int, position: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A version's row, files and images; takes a version from the model listing or ``/model-versions/{id}``."""
    if not isinstance(version, Mapping):
        raise RecordError(f"a model version is {type(version).__name__}, not an object")
    version_id = _integer(version.get("id"), "modelVersions[].id", required=True)
    where = f"version {version_id}"
    stats = _mapping(version.get("stats"), f"{where} stats")
    files = version.get("files") or []
    images = version.get("images") or []
    if not isinstance(files, list) or not isinstance(images, list):
        raise RecordError(f"{where}: files and images must be lists")
    row = {
        "model_id": model_id,
        "version_id": version_id,
        "position": _integer(version.get("index"), f"{where} index") if "index" in version else position,
        "name": _text(version.get("name"), f"{where} name"),
        "base_model": _text(version.get("baseModel"), f"{where} baseModel"),
        "base_model_type": _text(version.get("baseModelType"), f"{where} baseModelType"),
        "trained_words": _strings(version.get("trainedWords"), f"{where} trainedWords"),
        "published_at": _timestamp(version.get("publishedAt"), f"{where} publishedAt"),
        "created_at": _timestamp(version.get("createdAt"), f"{where} createdAt"),
        "updated_at": _timestamp(version.get("updatedAt"), f"{where} updatedAt"),
        "status": _text(version.get("status"), f"{where} status"),
        "availability": _text(version.get("availability"), f"{where} availability"),
        "nsfw_level": _nsfw_level(version.get("nsfwLevel")),
        "description": _text(version.get("description"), f"{where} description"),
        "download_url": _text(version.get("downloadUrl"), f"{where} downloadUrl"),
        "early_access_ends_at": _timestamp(version.get("earlyAccessEndsAt") or version.get("earlyAccessDeadline"),
                                           f"{where} earlyAccessEndsAt"),
        "early_access_config": version.get("earlyAccessConfig"),
        "vae_id": _integer(version.get("vaeId"), f"{where} vaeId"),
        "supports_generation": _boolean(version.get("supportsGeneration"), f"{where} supportsGeneration"),
        "air": _text(version.get("air"), f"{where} air"),
        "download_count": _integer(stats.get("downloadCount"), f"{where} stats.downloadCount"),
        "thumbs_up_count": _integer(stats.get("thumbsUpCount"), f"{where} stats.thumbsUpCount"),
        "thumbs_down_count": _integer(stats.get("thumbsDownCount"), f"{where} stats.thumbsDownCount"),
        "stats": dict(stats) if version.get("stats") is not None else None,
        # Files and images have rows of their own; the version's raw keeps everything else.
        "raw": {k: v for k, v in version.items() if k not in ("files", "images")},
    }
    file_rows = [map_file(f, model_id, version_id) for f in files]
    image_rows = [map_image(image, model_id, version_id, n) for n, image in enumerate(images)]
    return row, file_rows, image_rows


def map_file(file: Any, model_id: int, version_id: int) -> dict[str, Any]:
    """A file's row: hashes as separate uppercase columns (missing ones NULL), scan results, metadata."""
    if not isinstance(file, Mapping):
        raise RecordError(f"version {version_id}: a file is {type(file).__name__}, not an object")
    file_id = _integer(file.get("id"), f"version {version_id} files[].id", required=True)
    where = f"file {file_id}"
    metadata = _mapping(file.get("metadata"), f"{where} metadata")
    hashes = _mapping(file.get("hashes"), f"{where} hashes")
    by_kind: dict[str, str | None] = dict.fromkeys(_HASH_COLUMNS.values())
    for kind, value in hashes.items():
        column = _HASH_COLUMNS.get(str(kind).lower())
        if column is not None and value not in (None, ""):
            text = _text(value, f"{where} hashes.{kind}")
            if text is not None and len(text) > 128:
                raise RecordError(f"{where}: hash {kind} is {len(text)} characters long")
            by_kind[column] = text.upper() if text else None
    return {
        "model_id": model_id,
        "version_id": version_id,
        "file_id": file_id,
        "name": _text(file.get("name"), f"{where} name"),
        "size_kb": _number(file.get("sizeKB"), f"{where} sizeKB"),
        "type": _text(file.get("type"), f"{where} type"),
        "format": _text(metadata.get("format"), f"{where} metadata.format"),
        "fp": _text(metadata.get("fp"), f"{where} metadata.fp"),
        "size": _text(metadata.get("size"), f"{where} metadata.size"),
        "file_metadata": dict(metadata) if file.get("metadata") is not None else None,
        # The listing sends ``primary: true`` or leaves it out; /model-versions sends true/false.
        "is_primary": bool(_boolean(file.get("primary"), f"{where} primary")),
        "pickle_scan_result": _text(file.get("pickleScanResult"), f"{where} pickleScanResult"),
        "pickle_scan_message": _text(file.get("pickleScanMessage"), f"{where} pickleScanMessage"),
        "virus_scan_result": _text(file.get("virusScanResult"), f"{where} virusScanResult"),
        "virus_scan_message": _text(file.get("virusScanMessage"), f"{where} virusScanMessage"),
        "scanned_at": _timestamp(file.get("scannedAt"), f"{where} scannedAt"),
        **by_kind,
        "download_url": _text(file.get("downloadUrl"), f"{where} downloadUrl"),
        "raw": dict(file),
    }


def map_image(image: Any, model_id: int, version_id: int, position: int) -> dict[str, Any]:
    """A preview image; ``meta`` (generation parameters) only comes with ``/model-versions/{id}``."""
    if not isinstance(image, Mapping):
        raise RecordError(f"version {version_id}: an image is {type(image).__name__}, not an object")
    where = f"version {version_id} image {position}"
    metadata = _mapping(image.get("metadata"), f"{where} metadata")
    meta = image.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        raise RecordError(f"{where}: meta is {type(meta).__name__}, not an object")
    return {
        "model_id": model_id,
        "version_id": version_id,
        "image_id": _integer(image.get("id"), f"{where} id"),
        "position": position,
        "url": _text(image.get("url"), f"{where} url"),
        "nsfw_level": _nsfw_level(image.get("nsfwLevel")),
        "width": _integer(image.get("width", metadata.get("width")), f"{where} width"),
        "height": _integer(image.get("height", metadata.get("height")), f"{where} height"),
        "hash": _text(image.get("hash", metadata.get("hash")), f"{where} hash"),
        "type": _text(image.get("type"), f"{where} type"),
        "has_meta": _boolean(image.get("hasMeta"), f"{where} hasMeta"),
        "has_positive_prompt": _boolean(image.get("hasPositivePrompt"), f"{where} hasPositivePrompt"),
        "on_site": _boolean(image.get("onSite"), f"{where} onSite"),
        "minor": _boolean(image.get("minor"), f"{where} minor"),
        "poi": _boolean(image.get("poi"), f"{where} poi"),
        "remix_of_id": _integer(image.get("remixOfId"), f"{where} remixOfId"),
        "availability": _text(image.get("availability"), f"{where} availability"),
        "meta": dict(meta) if meta is not None else None,
        "raw": {k: v for k, v in image.items() if k != "meta"},
    }


def commercial_use(value: Any) -> list[str] | None:
    """``allowCommercialUse`` as a list in all three forms the API uses.

    The listing sends a PostgreSQL array literal (``"{Image,RentCivit}"``), other endpoints a JSON
    array, very old models a single word (``"Sell"``). ``None`` (the value) means no commercial use
    and becomes an empty list; a missing field stays NULL (unknown).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{") and text.endswith("}"):
            parts = [p.strip().strip('"').strip() for p in text[1:-1].split(",")]
        else:
            parts = [text]
    elif isinstance(value, list) and all(isinstance(p, str) for p in value):
        parts = [p.strip() for p in value]
    else:
        raise RecordError(f"allowCommercialUse is {value!r}, not a string or a list of strings")
    return list(dict.fromkeys(p for p in parts if p and p.lower() != "none"))


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{field} is {type(value).__name__}, not an object")
    return value


def _integer(value: Any, field: str, *, required: bool = False) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise RecordError(f"{field} is {value!r}, not an integer")


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise RecordError(f"{field} is {value!r}, not a number")


def _boolean(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise RecordError(f"{field} is {value!r}, not true or false")


def _text(value: Any, field: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if isinstance(value, str):
        return value
    raise RecordError(f"{field} is {value!r}, not a string")


def _strings(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise RecordError(f"{field} is {value!r}, not a list of strings")


def _nsfw_level(value: Any) -> int | None:
    """The bitmask level (1 PG … 16 XXX); /images names it (``None``, ``Soft``, ``Mature``, ``X``)."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in _NSFW_LEVELS:
        return _NSFW_LEVELS[value.lower()]
    return _integer(value, "nsfwLevel")


def _timestamp(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return parse_timestamp(value)
    except (TypeError, ValueError):
        raise RecordError(f"{field} is {value!r}, not an ISO 8601 time") from None


# ---------------------------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------------------------


def type_partitions(settings: CivitAISettings) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(settings.types))


def one_type_per_run(settings: CivitAISettings) -> dg.BackfillPolicy:
    """A backfill runs each type on its own: its own fetch_runs row, counts and failure."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def every_type(settings: CivitAISettings, now: datetime) -> list[str]:
    """A tick refreshes every configured type; the run queue (one run per source) runs them one by one."""
    return list(settings.types)


SOURCE = SourceSpec(
    name="civitai",
    display_name="CivitAI",
    asset_name="models",
    description=(
        "CivitAI models by type: /api/v1/models?types=<type>&sort=Newest, cursor-paged, with versions, files "
        "(hashes) and preview images. Incremental walks stop after a page with nothing new; a full walk every "
        "FullRefreshDays refreshes everything."
    ),
    settings_model=CivitAISettings,
    table=civitai_models,
    run_factory=CivitAIRun,
    partitions=type_partitions,
    backfill_policy=one_type_per_run,
    scheduled_partitions=every_type,
)
