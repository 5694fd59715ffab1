"""Per-source high-water marks, written in the same transaction as the page they cover."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from umlmm_pipelines.catalog.tables import source_cursors
from umlmm_pipelines.catalog.upsert import dialect_insert


def read_cursor(engine: sa.Engine, source: str, scope: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(source_cursors.c.value).where(source_cursors.c.source == source, source_cursors.c.scope == scope)
        ).scalar_one_or_none()


def save_cursor(
    conn: sa.Connection, source: str, scope: str, value: str | None, now: datetime, fetch_run_id: int | None
) -> None:
    """Move the scope's cursor to ``value``; None clears it (the scope's walk is complete)."""
    if value is None:
        conn.execute(
            sa.delete(source_cursors).where(source_cursors.c.source == source, source_cursors.c.scope == scope)
        )
        return
    statement = dialect_insert(conn, source_cursors).values(
        source=source, scope=scope, value=value, updated_at=now, fetch_run_id=fetch_run_id
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[source_cursors.c.source, source_cursors.c.scope],
            set_={"value": value, "updated_at": now, "fetch_run_id": fetch_run_id},
        )
    )
