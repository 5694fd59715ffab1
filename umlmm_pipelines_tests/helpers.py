"""Small helpers that keep the tests about behaviour rather than plumbing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import sqlalchemy as sa

from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.catalog.tables import fetch_runs as fetch_runs_table
from umlmm_pipelines.definitions import build_definitions, load_source_settings
from umlmm_pipelines.ingestion.recorder import FetchRunRecorder

FAST_HTTP = {"Sources__Ollama__BackoffSeconds": "0.01", "Sources__Ollama__MaxRetries": "2",
             "Sources__Ollama__TimeoutSeconds": "5"}


def make_defs(catalog_url: str, env: Mapping[str, str] | None = None, **recorder: Any) -> dg.Definitions:
    settings = load_source_settings({**FAST_HTTP, **(env or {})})
    return build_definitions(settings, recorder=FetchRunRecorder(database_url=catalog_url, **recorder))


def run_source(defs: dg.Definitions, source: str, instance: dg.DagsterInstance,
               partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(f"{source}_ingestion")
    return job.execute_in_process(instance=instance, raise_on_error=False, partition_key=partition_key)


def rows(catalog_url: str, query: str, **params: Any) -> list[dict[str, Any]]:
    engine = open_catalog(catalog_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(query), params)]
    finally:
        engine.dispose()


def fetch_runs(catalog_url: str, source: str | None = None) -> list[dict[str, Any]]:
    """fetch_runs rows as dicts, oldest first (through the Table, so JSON columns are decoded)."""
    query = sa.select(fetch_runs_table).order_by(fetch_runs_table.c.id)
    if source:
        query = query.where(fetch_runs_table.c.source == source)
    engine = open_catalog(catalog_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]
    finally:
        engine.dispose()
