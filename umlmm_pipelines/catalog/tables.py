"""Tables shared by every source, and the column set every mapped entity table carries.

One ``MetaData`` holds every table so that Alembic sees the whole catalog. Source modules add
their own entity tables through :func:`entity_table`, which gives each of them the natural key
``(source, external_id)``, the raw payload and the content hash that make created / updated /
unchanged counts exact.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Mapped JSON columns (tags, stats, node types…): JSONB on PostgreSQL, to be queried and indexed.
JSONType = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
#: Raw payloads: plain JSON on PostgreSQL too. They are an archive of what the source sent (key
#: order kept) and are read with ``raw->>'field'`` as easily; JSONB's parse on every insert cost
#: PostgreSQL 2.6 CPU-seconds per 100,000 posts, a tenth of a first load's time (``raw::jsonb``
#: gives its operators to a query that needs them).
RawPayload = sa.JSON(none_as_null=True)
#: SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

FETCH_RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")

fetch_runs = sa.Table(
    "fetch_runs",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=False),
    sa.Column("partition_key", sa.String(255), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    sa.Column("records_fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("records_processed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("records_failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("records_created", sa.Integer, nullable=False, server_default="0"),
    sa.Column("records_updated", sa.Integer, nullable=False, server_default="0"),
    sa.Column("records_unchanged", sa.Integer, nullable=False, server_default="0"),
    sa.Column("records_removed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pages_committed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("parameters", JSONType, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("error_details", sa.Text, nullable=True),
    sa.Column("heartbeat_at", Timestamp, nullable=False),
    sa.CheckConstraint(
        "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')", name="status_known"
    ),
    sa.UniqueConstraint("dagster_run_id", "source"),
    sa.Index("ix_fetch_runs_source_started_at", "source", "started_at"),
    # The in-run overlap guard: at most one running row per source, enforced by the database
    # itself so that two racing launches cannot both pass.
    sa.Index(
        "uq_fetch_runs_one_running_per_source",
        "source",
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    ),
)

source_cursors = sa.Table(
    "source_cursors",
    metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("scope", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("fetch_run_id", sa.BigInteger, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
)

#: Columns every entity table has, managed by the shared upsert; mappings fill the rest.
ENTITY_COLUMNS = ("id", "source", "external_id", "content_hash", "raw", "first_seen_at", "updated_at",
                  "removed_at", "fetch_run_id")


def entity_table(name: str, *columns: sa.Column | sa.Index | sa.Constraint) -> sa.Table:
    """Declare a catalog table for one mapped entity (an Ollama model, a post, a CivitAI model…)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(512), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("raw", RawPayload, nullable=False),
        sa.Column("first_seen_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("removed_at", Timestamp, nullable=True),
        sa.Column("fetch_run_id", sa.BigInteger, nullable=True),
        *columns,
        sa.UniqueConstraint("source", "external_id"),
    )


def child_table(
    name: str,
    parent_column: str,
    *columns: sa.Column | sa.Index | sa.Constraint,
    parent_type: sa.types.TypeEngine = sa.String(512),
    resolve: dict[str, tuple[sa.Table, str]] | None = None,
) -> sa.Table:
    """Rows owned by one entity row (``parent_column`` holds its external_id), replaced with it.

    ``resolve`` maps a key of the mapped child rows to ``(reference table, id column)``: the
    mapping names a shared row by its natural key (a tag name) and the row stores that shared
    row's integer id, which keeps link tables and their indexes narrow.
    """
    table = sa.Table(
        name,
        metadata,
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column(parent_column, parent_type, nullable=False),
        *columns,
    )
    table.info["parent_column"] = parent_column
    table.info["resolve"] = dict(resolve or {})
    return table


def reference_table(
    name: str, key_columns: tuple[str, ...], *columns: sa.Column | sa.Index | sa.Constraint
) -> sa.Table:
    """Shared rows keyed by ``(source, *key_columns)`` that entity rows point to (tags)."""
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        *columns,
        sa.Column("first_seen_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("source", *key_columns),
    )
    table.info["natural_key"] = ("source", *key_columns)
    return table
