"""The ``fetch_runs`` table: one row per Dagster run per source, kept honest page by page.

The row moves ``queued -> running -> completed | failed | cancelled``. ``running`` is also the
overlap guard: a partial unique index allows one running row per source, so the database
refuses a second run even when launches race past the run queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from umlmm_pipelines.catalog.tables import ACTIVE_STATUSES, fetch_runs

_MESSAGE_LIMIT = 4000


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite returns naive timestamps; every timestamp we write is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class Counts:
    """Running totals of one fetch run; the names are the fetch_runs columns."""

    records_fetched: int = 0
    records_processed: int = 0
    records_failed: int = 0
    records_created: int = 0
    records_updated: int = 0
    records_unchanged: int = 0
    records_removed: int = 0
    pages_committed: int = 0

    def add(self, other: Counts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RunningRow:
    id: int
    source: str
    dagster_run_id: str
    status: str
    heartbeat_at: datetime


def insert_queued(
    conn: sa.Connection, source: str, dagster_run_id: str, partition_key: str | None, parameters: Mapping[str, Any]
) -> int:
    """Create the run's row, or reuse it when Dagster re-executes the same run id."""
    now = utcnow()
    existing = conn.execute(
        sa.select(fetch_runs.c.id).where(fetch_runs.c.source == source, fetch_runs.c.dagster_run_id == dagster_run_id)
    ).scalar_one_or_none()
    values = dict(
        status="queued", partition_key=partition_key, parameters=dict(parameters), started_at=now,
        heartbeat_at=now, ended_at=None, duration_ms=None, error_message=None, error_details=None,
    )
    if existing is not None:
        conn.execute(sa.update(fetch_runs).where(fetch_runs.c.id == existing).values(**values))
        return int(existing)
    result = conn.execute(sa.insert(fetch_runs).values(source=source, dagster_run_id=dagster_run_id, **values))
    return int(result.inserted_primary_key[0])


def try_mark_running(engine: sa.Engine, fetch_run_id: int) -> bool:
    """Take the source's guard; False when another run of the source holds it.

    ``started_at`` is stamped only after the status change went through: that change may have
    waited for the previous holder's commit, so a time read earlier could precede its
    ``ended_at`` and make two runs look overlapping.
    """
    try:
        with engine.begin() as conn:
            statement = sa.update(fetch_runs).where(fetch_runs.c.id == fetch_run_id)
            conn.execute(statement.values(status="running"))
            now = utcnow()
            conn.execute(statement.values(started_at=now, heartbeat_at=now))
        return True
    except sa.exc.IntegrityError:
        return False


def running_row(conn: sa.Connection, source: str) -> RunningRow | None:
    row = conn.execute(
        sa.select(fetch_runs.c.id, fetch_runs.c.source, fetch_runs.c.dagster_run_id, fetch_runs.c.status,
                  fetch_runs.c.heartbeat_at)
        .where(fetch_runs.c.source == source, fetch_runs.c.status == "running")
    ).first()
    return RunningRow(*row) if row else None


def active_rows(conn: sa.Connection) -> list[RunningRow]:
    rows = conn.execute(
        sa.select(fetch_runs.c.id, fetch_runs.c.source, fetch_runs.c.dagster_run_id, fetch_runs.c.status,
                  fetch_runs.c.heartbeat_at)
        .where(fetch_runs.c.status.in_(ACTIVE_STATUSES))
        .order_by(fetch_runs.c.id)
    )
    return [RunningRow(*row) for row in rows]


def record_page(conn: sa.Connection, fetch_run_id: int, totals: Counts) -> None:
    """Write the run's totals inside the page's own transaction, so rows and counts agree."""
    conn.execute(
        sa.update(fetch_runs).where(fetch_runs.c.id == fetch_run_id).values(**totals.as_dict(), heartbeat_at=utcnow())
    )


def finish(
    conn: sa.Connection,
    fetch_run_id: int,
    status: str,
    totals: Counts | None = None,
    error_message: str | None = None,
    error_details: str | None = None,
    only_if_active: bool = False,
) -> bool:
    """Set the final status; returns False when ``only_if_active`` and the row had already ended."""
    now = utcnow()
    query = sa.select(fetch_runs.c.started_at).where(fetch_runs.c.id == fetch_run_id)
    started = aware(conn.execute(query).scalar_one())
    values: dict[str, Any] = dict(
        status=status,
        ended_at=now,
        heartbeat_at=now,
        duration_ms=int((now - started).total_seconds() * 1000),
        error_message=(error_message or None) and error_message[:_MESSAGE_LIMIT],
        error_details=error_details,
    )
    if totals is not None:
        values.update(totals.as_dict())
    statement = sa.update(fetch_runs).where(fetch_runs.c.id == fetch_run_id)
    if only_if_active:
        statement = statement.where(fetch_runs.c.status.in_(ACTIVE_STATUSES))
    return bool(conn.execute(statement.values(**values)).rowcount)
