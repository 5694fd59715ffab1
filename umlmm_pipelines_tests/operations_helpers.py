"""Helpers for the operations tests: Dagster runs, fetch_runs rows and daemon heartbeats as a
running deployment would leave them, without running anything."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._daemon.types import DaemonHeartbeat

from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.catalog.tables import fetch_runs
from umlmm_pipelines.ingestion.source import SOURCE_TAG

LOCATION = "umlmm_pipelines"


def now() -> datetime:
    return datetime.now(UTC)


def ago(**delta: float) -> datetime:
    return now() - timedelta(**delta)


def repository_origin() -> RemoteRepositoryOrigin:
    return RemoteRepositoryOrigin(RegisteredCodeLocationOrigin(LOCATION), "__repository__")


def add_run(instance: dg.DagsterInstance, source: str, status: dg.DagsterRunStatus,
            tags: dict[str, str] | None = None) -> dg.DagsterRun:
    """A Dagster run of the source's job in the given status (QUEUED needs a remote origin)."""
    job = f"{source}_ingestion"
    origin = RemoteJobOrigin(repository_origin(), job)
    return instance.add_run(dg.DagsterRun(job_name=job, run_id=str(uuid.uuid4()), status=status,
                                          tags={SOURCE_TAG: source, **(tags or {})}, remote_job_origin=origin))


def insert_fetch_run(catalog_url: str, source: str, dagster_run_id: str | None = None, *, status: str,
                     started_at: datetime, ended_at: datetime | None = None, heartbeat_at: datetime | None = None,
                     **columns: Any) -> int:
    values = dict(source=source, dagster_run_id=dagster_run_id or str(uuid.uuid4()), status=status,
                  started_at=started_at, ended_at=ended_at, heartbeat_at=heartbeat_at or ended_at or started_at)
    if ended_at is not None and "duration_ms" not in columns:
        values["duration_ms"] = int((ended_at - started_at).total_seconds() * 1000)
    values.update(columns)
    engine = open_catalog(catalog_url)
    try:
        with engine.begin() as conn:
            return int(conn.execute(sa.insert(fetch_runs).values(**values)).inserted_primary_key[0])
    finally:
        engine.dispose()


def fetch_run(catalog_url: str, fetch_run_id: int) -> dict[str, Any]:
    engine = open_catalog(catalog_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(fetch_runs).where(fetch_runs.c.id == fetch_run_id)).one()._mapping)
    finally:
        engine.dispose()


def beat_daemons(instance: dg.DagsterInstance, at: datetime, only: set[str] | None = None,
                 errors: dict[str, str] | None = None) -> None:
    """A heartbeat at ``at`` from every daemon the instance requires (or ``only`` these)."""
    from dagster._utils.error import SerializableErrorInfo

    for daemon_type in instance.get_required_daemon_types():
        if only is not None and daemon_type not in only:
            continue
        failures = [SerializableErrorInfo(errors[daemon_type], [], "RuntimeError")] if errors and (
            daemon_type in errors) else []
        instance.add_daemon_heartbeat(DaemonHeartbeat(at.timestamp(), daemon_type, "test-daemon", failures))
