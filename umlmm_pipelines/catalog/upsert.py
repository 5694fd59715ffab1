"""Bulk writes of mapped records, keyed on ``(source, external_id)``.

Change detection compares content hashes, so a re-run of unchanged data writes nothing and
counts every record unchanged; only created and updated rows are sent to the database.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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


@contextlib.contextmanager
def relaxed_commit_durability(conn: sa.Connection) -> Iterator[None]:
    """Let PostgreSQL acknowledge this connection's commits before their WAL reaches disk.

    A crash can then lose the last few committed pages, but never half a page: each page, its
    cursor and the run's counters are one transaction, so the catalog stays consistent and the
    next run fetches those pages again. Ingestion is re-playable; waiting for an fsync per page
    is not worth its cost here. Set once for the connection a run writes with, and reset before
    the connection goes back to the pool.
    """
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.exec_driver_sql("SET synchronous_commit TO OFF")
        conn.commit()
    try:
        yield
    finally:
        if postgres and not conn.closed and not conn.invalidated:
            conn.rollback()
            conn.exec_driver_sql("RESET synchronous_commit")
            conn.commit()


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


def supports_copy(dialect: sa.Dialect) -> bool:
    """Whether inserts can go through ``COPY … FROM STDIN`` (PostgreSQL through psycopg2)."""
    return dialect.name == "postgresql" and dialect.driver == "psycopg2"


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows known to be new; PostgreSQL gets them through COPY, the fastest path it has."""
    if not rows:
        return
    if supports_copy(conn.dialect):
        copy_encoded(conn, table, encode_copy_rows(table, rows))
        return
    for chunk in _chunks(list(rows)):
        conn.execute(sa.insert(table), list(chunk))


def insert_columns(conn: sa.Connection, table: sa.Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert rows given column by column (a page's tag links), through COPY on PostgreSQL."""
    if not columns or not len(next(iter(columns.values()))):
        return
    if supports_copy(conn.dialect):
        copy_encoded(conn, table, encode_copy(table, columns))
        return
    names = list(columns)
    insert_rows(conn, table, [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)])


@dataclass(frozen=True)
class CopyData:
    """Rows already in COPY text format, so that a page can be encoded before its transaction."""

    columns: tuple[str, ...]
    data: bytes


def encode_copy(table: sa.Table, columns: Mapping[str, Sequence[Any]]) -> CopyData:
    """Rows as COPY text, converted a column at a time (one list comprehension per column, no
    per-value function call): a first load sends ~25 tag links per post, so per-value Python
    overhead is what limits posts per second."""
    converted = [_copy_column(table.c[name], values) for name, values in columns.items()]
    text = "\n".join(map("\t".join, zip(*converted, strict=True))) + "\n"
    return CopyData(tuple(columns), text.encode())


def encode_copy_rows(table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> CopyData:
    return encode_copy(table, {name: [row[name] for row in rows] for name in rows[0]})


def copy_encoded(conn: sa.Connection, table: sa.Table, copy: CopyData) -> None:
    """Send encoded rows with ``COPY … FROM STDIN`` inside the current transaction (in 1 MB chunks)."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        quoted = ", ".join(f'"{c}"' for c in copy.columns)
        cursor.copy_expert(f'COPY "{table.name}" ({quoted}) FROM STDIN', io.BytesIO(copy.data), size=1 << 20)
    finally:
        cursor.close()


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": ""})
_NEEDS_ESCAPE = re.compile("[\\\\\t\n\r\x00]")
_NULL = "\\N"


def _copy_column(column: sa.Column, values: Sequence[Any]) -> list[str]:
    """One column's values as COPY text fields."""
    kind = column.type
    null = _NULL
    if isinstance(kind, sa.JSON):
        return [null if v is None else _copy_json(v) for v in values]
    if isinstance(kind, sa.Boolean):
        return [null if v is None else ("t" if v else "f") for v in values]
    if isinstance(kind, sa.Integer | sa.Float | sa.Numeric):
        if None not in values:
            return list(map(str, values))
        return [null if v is None else str(v) for v in values]
    if isinstance(kind, sa.DateTime | sa.Date):
        # A page's rows share their stamps (updated_at, first_seen_at): format each value once.
        formatted = {v: null if v is None else v.isoformat() for v in set(values)}
        return list(map(formatted.__getitem__, values))
    texts = [null if v is None else str(v) for v in values]
    # Most values (tag names, ids, URLs) need no escaping; one regex over the column finds those that do.
    if _NEEDS_ESCAPE.search("".join(t for t in texts if t is not null)):
        texts = [t if t is null else t.translate(_COPY_ESCAPES) for t in texts]
    return texts


def _copy_json(value: Any) -> str:
    """JSON text for COPY: orjson already escapes control characters, so only backslashes double.

    PostgreSQL's JSON types refuse ``\\u0000``; it is dropped.
    """
    text = orjson.dumps(value, default=str).decode()
    if "\\" in text:
        if "\\u0000" in text:
            text = _JSON_NUL.sub(r"\1", text)
        text = text.replace("\\", "\\\\")
    return text


#: ``\u0000`` as an escape (an even run of backslashes before it), not a literal ``\\u0000`` text.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def replace_children(
    conn: sa.Connection,
    table: sa.Table,
    source: str,
    changed_parent_ids: Sequence[str],
    columns: Mapping[str, Sequence[Any]] | CopyData,
) -> None:
    """Replace the child rows of changed parents (a removed tag link disappears with them).

    New parents have no children yet, so only ``changed_parent_ids`` (updated parents) are
    deleted first; every row in ``columns`` (or already encoded for COPY) is then inserted.
    """
    parent_column = table.c[table.info["parent_column"]]
    if isinstance(parent_column.type, sa.Integer):
        changed_parent_ids = [int(p) for p in changed_parent_ids]
    for chunk in _chunks(list(changed_parent_ids)):
        conn.execute(sa.delete(table).where(table.c.source == source, parent_column.in_(chunk)))
    if isinstance(columns, CopyData):
        copy_encoded(conn, table, columns)
    else:
        insert_columns(conn, table, columns)


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
