"""Bulk writes of mapped records, keyed on ``(source, external_id)``.

Change detection compares content hashes, so a re-run of unchanged data writes nothing and
counts every record unchanged; only created and updated rows are sent to the database.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

_CHUNK = 500


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"catalog: upserts are implemented for SQLite and PostgreSQL, not {dialect}")


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def relax_commit_durability(conn: sa.Connection) -> None:
    """Let PostgreSQL acknowledge this transaction before its WAL reaches disk.

    A crash can then lose the last few committed pages, but never half a page: each page, its
    cursor and the run's counters are one transaction, so the catalog stays consistent and the
    next run fetches those pages again. Ingestion is re-playable; waiting for an fsync per page
    is not worth its cost here.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def existing_state(
    conn: sa.Connection, table: sa.Table, source: str, external_ids: Sequence[str]
) -> dict[str, tuple[str, datetime | None]]:
    """``external_id -> (content_hash, removed_at)`` for the ids already in the catalog."""
    found: dict[str, tuple[str, datetime | None]] = {}
    for chunk in _chunks(external_ids):
        query = sa.select(table.c.external_id, table.c.content_hash, table.c.removed_at).where(
            table.c.source == source, table.c.external_id.in_(chunk)
        )
        for external_id, digest, removed_at in conn.execute(query):
            found[external_id] = (digest, removed_at)
    return found


def upsert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or overwrite rows; ``first_seen_at`` and ``id`` of an existing row are kept."""
    if not rows:
        return
    statement = dialect_insert(conn, table)
    keep = {"id", "source", "external_id", "first_seen_at"}
    columns = [c for c in rows[0] if c not in keep]
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.source, table.c.external_id],
        set_={c: statement.excluded[c] for c in columns},
    )
    for chunk in _chunks(list(rows)):
        conn.execute(statement, list(chunk))


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows known to be new; PostgreSQL gets them through COPY, the fastest path it has."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        copy_rows(conn, table, rows)
        return
    for chunk in _chunks(list(rows)):
        conn.execute(sa.insert(table), list(chunk))


def copy_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``COPY table (cols) FROM STDIN`` in PostgreSQL's text format, inside the current transaction."""
    columns = list(rows[0].keys())
    converters = [_copy_converter(table.c[name]) for name in columns]
    pairs = list(zip(columns, converters, strict=True))
    lines = ["\t".join([convert(row[name]) for name, convert in pairs]) for row in rows]
    buffer = io.StringIO("\n".join(lines) + "\n")
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        quoted = ", ".join(f'"{c}"' for c in columns)
        cursor.copy_expert(f'COPY "{table.name}" ({quoted}) FROM STDIN', buffer)
    finally:
        cursor.close()


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": ""})
_NULL = "\\N"


def _copy_converter(column: sa.Column) -> Any:
    """A function turning one column's Python value into COPY text (chosen once per column)."""
    kind = column.type
    if isinstance(kind, sa.JSON):
        def convert_json(value: Any) -> str:
            if value is None:
                return _NULL
            return orjson.dumps(value, default=str).decode().replace("\\u0000", "").translate(_COPY_ESCAPES)
        return convert_json
    if isinstance(kind, sa.Boolean):
        return lambda value: _NULL if value is None else ("t" if value else "f")
    if isinstance(kind, sa.Integer | sa.Float | sa.Numeric):
        return lambda value: _NULL if value is None else str(value)
    if isinstance(kind, sa.DateTime | sa.Date):
        return lambda value: _NULL if value is None else value.isoformat()

    def convert_text(value: Any) -> str:
        if value is None:
            return _NULL
        text = str(value)
        # Most values (tag names, ids, URLs) need no escaping; checking is cheaper than translating.
        if "\\" in text or "\t" in text or "\n" in text or "\r" in text or "\x00" in text:
            return text.translate(_COPY_ESCAPES)
        return text

    return convert_text


def replace_children(
    conn: sa.Connection,
    table: sa.Table,
    source: str,
    changed_parent_ids: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Replace the child rows of changed parents (a removed tag link disappears with them).

    New parents have no children yet, so only ``changed_parent_ids`` (updated parents) are
    deleted first; every row in ``rows`` is then inserted.
    """
    parent_column = table.c[table.info["parent_column"]]
    if isinstance(parent_column.type, sa.Integer):
        changed_parent_ids = [int(p) for p in changed_parent_ids]
    for chunk in _chunks(list(changed_parent_ids)):
        conn.execute(sa.delete(table).where(table.c.source == source, parent_column.in_(chunk)))
    insert_rows(conn, table, rows)


def upsert_references(
    conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], now: datetime
) -> dict[tuple[Any, ...], int]:
    """Insert shared rows that are new, update those whose values changed; return every row's id.

    The result maps each row's natural key (``table.info["natural_key"]``) to its ``id``, so that
    child rows can store the id instead of repeating the key.
    """
    if not rows:
        return {}
    key = table.info["natural_key"]
    key_columns = [table.c[c] for c in key]
    statement = dialect_insert(conn, table)
    values = [c for c in rows[0] if c not in key]
    changed = sa.or_(*(table.c[c].is_distinct_from(statement.excluded[c]) for c in values)) if values else None
    statement = statement.on_conflict_do_update(
        index_elements=key_columns,
        set_={**{c: statement.excluded[c] for c in values}, "updated_at": statement.excluded.updated_at},
        where=changed,
    ).returning(table.c.id, *key_columns)
    stamped = [{**row, "first_seen_at": now, "updated_at": now} for row in rows]
    ids: dict[tuple[Any, ...], int] = {}
    for chunk in _chunks(stamped, 1000):
        # With RETURNING, SQLAlchemy batches these into multi-row VALUES statements itself
        # ("insertmanyvalues"), far cheaper than compiling a 1,000-row .values() statement.
        for row_id, *natural in conn.execute(statement, list(chunk)):
            ids[tuple(natural)] = row_id
    missing = [tuple(row[c] for c in key) for row in rows if tuple(row[c] for c in key) not in ids]
    if missing:  # unchanged rows: the conditional update returned nothing for them
        sources = {m[0] for m in missing}
        for chunk in _chunks(missing):
            query = sa.select(table.c.id, *key_columns).where(
                table.c.source.in_(sources), sa.tuple_(*key_columns).in_(list(chunk))
            )
            for row_id, *natural in conn.execute(query):
                ids[tuple(natural)] = row_id
    return ids


def mark_removed(
    conn: sa.Connection,
    table: sa.Table,
    source: str,
    scope: Mapping[str, Any],
    seen_ids: Sequence[str],
    now: datetime,
    fetch_run_id: int | None,
) -> int:
    """Mark rows of a fully listed scope that the listing no longer has; never delete them."""
    condition = sa.and_(
        table.c.source == source,
        table.c.removed_at.is_(None),
        *(table.c[column] == value for column, value in scope.items()),
    )
    if seen_ids:
        condition = sa.and_(condition, table.c.external_id.not_in(list(seen_ids)))
    result = conn.execute(
        sa.update(table).where(condition).values(removed_at=now, updated_at=now, fetch_run_id=fetch_run_id)
    )
    return int(result.rowcount or 0)
