"""The page loop every source shares: classify, enrich, map, then commit one page at a time.

A page is written in a single transaction together with its cursor and the run's running
totals, so a killed or cancelled run leaves whole pages and counts that match the rows.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from itertools import filterfalse
from typing import Any

import sqlalchemy as sa

from umlmm_pipelines.catalog import fetch_runs as fetch_run_rows
from umlmm_pipelines.catalog.cursors import save_cursor
from umlmm_pipelines.catalog.fetch_runs import Counts, utcnow
from umlmm_pipelines.catalog.upsert import (
    CopyData,
    copy_encoded,
    encode_copy,
    encode_copy_rows,
    existing_state,
    insert_rows,
    mark_removed,
    relaxed_commit_durability,
    replace_children,
    supports_copy,
    upsert_references,
    upsert_rows,
)
from umlmm_pipelines.ingestion.logfmt import kv
from umlmm_pipelines.ingestion.source import (
    MappedRecord,
    Page,
    Record,
    RecordError,
    SourceRun,
    SourceSpec,
    as_columns,
    content_hash,
)

#: Pages prepared ahead of the one being written: two absorb pages whose write takes longer
#: (new tags, statistics) without stalling the mapping thread.
PAGES_IN_FLIGHT = 2
#: GIL switch interval while a writer thread runs (Python's default is 5 ms; see PageLoop.run_all).
WRITER_SWITCH_INTERVAL_S = 0.0005
#: A committed page is logged when this long has passed since the last logged one (the first
#: page always is). Each log line is an event Dagster stores; fetch_runs has every page's counts.
PAGE_LOG_INTERVAL_S = 2.0


@dataclass
class _Candidate:
    external_id: str
    record: Record
    digest: str
    existed: bool


class _ChildColumns:
    """A page's rows for one child table, column by column, each row with its parent's key."""

    def __init__(self) -> None:
        self.parents: list[Any] = []
        self.columns: dict[str, list[Any]] = {}

    def add(self, parent: Any, columns: dict[str, list[Any]]) -> None:
        count = len(next(iter(columns.values()))) if columns else 0
        if not count:
            return
        before = len(self.parents)
        self.parents.extend([parent] * count)
        for name, values in columns.items():
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = [None] * before
            column.extend(values)
        for column in self.columns.values():  # a column this record lacks is NULL for its rows
            if len(column) < before + count:
                column.extend([None] * (before + count - len(column)))


@dataclass
class _Prepared:
    """A page ready to be written: its counts so far and the rows the write will send."""

    page: Page
    counts: Counts
    candidates: list[_Candidate]
    rows: list[dict[str, Any]]
    children: dict[sa.Table, _ChildColumns]
    references: dict[sa.Table, list[dict[str, Any]]]
    existed: set[str]
    table: sa.Table
    stamped_at: datetime
    new_rows: list[dict[str, Any]]
    encoded_new_rows: CopyData | None
    #: Per child table: the parents whose rows are replaced, the parents whose rows are kept, and
    #: the rows (encoded when they could be resolved ahead; None when the writer must resolve them
    #: after writing the page's tags).
    child_writes: dict[sa.Table, tuple[list[str], set[str], CopyData | dict[str, list[Any]] | None]] = field(
        default_factory=dict)

    def overlaps(self, page: Page, run: SourceRun) -> bool:
        """Whether the next page repeats a record of this one (then it must see this write)."""
        ids = {c.external_id for c in self.candidates}
        for record in page.records:
            try:
                if str(run.external_id(record)) in ids:
                    return True
            except Exception:  # noqa: BLE001 - unidentifiable records are failed later, not here
                continue
        return False


class PageLoop:
    """Runs one source's pages into the catalog and keeps the fetch_runs row current."""

    def __init__(
        self,
        spec: SourceSpec,
        run: SourceRun,
        engine: sa.Engine,
        fetch_run_id: int,
        log: Any,
    ) -> None:
        if spec.table is None:
            raise ValueError(f"{spec.display_name}: no catalog table declared")
        self.spec = spec
        self.table = spec.table
        self.run = run
        self.engine = engine
        self.fetch_run_id = fetch_run_id
        self.log = log
        self.totals = Counts()
        #: (reference table, its mapped columns) -> natural key (after "source") -> values last written.
        self._written_references: dict[tuple[str, tuple[str, ...]], dict[Any, Any]] = {}
        #: Reference table -> natural key (after "source") -> id.
        self._touched_tables: set[sa.Table] = set()
        self._reference_ids: dict[str, dict[Any, int]] = {}
        self._analyzed_at = 100
        self._enriches = type(run).enrich is not SourceRun.enrich
        self._copies = supports_copy(engine.dialect)
        self._write_failed = False
        self._abandoned = False
        self._analyzer: threading.Thread | None = None
        self._analyzer_pid: int | None = None
        self._analyze_cancelled = False
        self._page_logged_at: float | None = None
        self._read_conn: sa.Connection
        self._write_conn: sa.Connection

    def run_all(self) -> Counts:
        """Fetch, classify and map page N+1 while page N is written by a writer thread.

        The database round trips of a write (COPY, upserts, commit) release the GIL, so they
        overlap with the next page's parsing and mapping. Pages still commit strictly in order,
        one at a time; a page whose ids overlap the page being written waits for that write
        before it is classified, so the overlap never changes what is counted.

        While the main thread maps (CPU-bound), the writer needs the GIL back after each of its
        database round trips; with Python's default 5 ms switch interval every round trip waits
        up to 5 ms for it (the "convoy effect"), which made a first load a third slower than its
        CPU time. The interval is shortened for the duration of the loop.
        """
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(WRITER_SWITCH_INTERVAL_S)
        try:
            return self._run_pipelined()
        finally:
            sys.setswitchinterval(previous_interval)

    def _run_pipelined(self) -> Counts:
        """Pages are classified on one connection and written on another, each held for the run
        (no pool checkout and liveness ping per page)."""
        with self.engine.connect() as read_conn, self.engine.connect() as write_conn, \
                relaxed_commit_durability(write_conn):
            self._read_conn, self._write_conn = read_conn, write_conn
            try:
                return self._pipeline()
            finally:
                self._stop_analyzing()

    def _pipeline(self) -> Counts:
        in_flight: deque[tuple[int, _Prepared, Future[Counts]]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.spec.name}-writer") as writer:
            try:
                for number, page in enumerate(self.run.pages(), start=1):
                    if any(queued.overlaps(page, self.run) for _, queued, _ in in_flight):
                        while in_flight:
                            self._finish(*in_flight.popleft())
                    prepared = self.prepare(page)
                    self.run.page_classified(page, prepared.counts)
                    while len(in_flight) >= PAGES_IN_FLIGHT:
                        self._finish(*in_flight.popleft())
                    in_flight.append((number, prepared, writer.submit(self._write_in_order, prepared)))
                while in_flight:
                    self._finish(*in_flight.popleft())
            finally:
                if in_flight:  # stopped early: let the pages being written commit or roll back
                    self._abandoned = True
                    wait([future for _, _, future in in_flight], timeout=60)
        return self.totals

    def _write_in_order(self, prepared: _Prepared) -> Counts:
        """Write a page unless an earlier one failed (a later page must never commit past a gap) or
        the run is stopping (the page being written finishes; queued ones are dropped)."""
        if self._write_failed or self._abandoned:
            raise RuntimeError(f"{self.spec.display_name}: page not written, the run is stopping")
        try:
            return self.write(prepared)
        except BaseException:
            self._write_failed = True
            raise

    def _finish(self, number: int, prepared: _Prepared, write: Future[Counts]) -> None:
        counts = write.result()
        now = time.monotonic()
        if self._page_logged_at is None or now - self._page_logged_at >= PAGE_LOG_INTERVAL_S:
            self._page_logged_at = now
            self.log.info(
                kv("page_committed", source=self.spec.name, page=number, label=prepared.page.label,
                   **counts.as_dict(), total_fetched=self.totals.records_fetched)
            )
        self._refresh_statistics_when_grown()

    def _refresh_statistics_when_grown(self) -> None:
        """ANALYZE the tables this run filled each time its created rows pass a power of ten.

        A first load into an empty table leaves the planner without statistics until autovacuum
        catches up, and it then answers "which of these 200 ids exist?" by scanning every row of
        the source (36 ms a page at 100,000 posts instead of 1 ms).
        """
        created = self.totals.records_created
        if created < 1000 or created < self._analyzed_at * 10:
            return
        self._analyzed_at = created
        if self._analyzer is not None and self._analyzer.is_alive():
            return
        tables = [self.table, *self._touched_tables]
        # On its own connection and thread: ANALYZE of a few million links takes a while, and
        # neither the mapping nor the writing needs to wait for it.
        self._analyzer = threading.Thread(target=self._analyze, args=(tables,), daemon=True,
                                          name=f"{self.spec.name}-analyze")
        self._analyzer.start()

    def _analyze(self, tables: list[sa.Table]) -> None:
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    self._analyzer_pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                for table in tables:
                    if self._analyze_cancelled:
                        return
                    conn.exec_driver_sql(f'ANALYZE "{table.name}"')
        except Exception as exc:  # noqa: BLE001 - statistics are an optimisation; the run goes on
            if not self._analyze_cancelled:
                self.log.warning(kv("tables_analyze_failed", source=self.spec.name, error=repr(exc)))
            return
        self.log.debug(kv("tables_analyzed", source=self.spec.name, tables=",".join(t.name for t in tables)))

    def _stop_analyzing(self) -> None:
        """End an ANALYZE still running when the pages are done: it was for this run's own lookups,
        and autovacuum analyzes tables that grew this much anyway. Waiting for one that started on
        the last pages (a few million links) would only add to the run's time."""
        analyzer = self._analyzer
        if analyzer is None:
            return
        if analyzer.is_alive():
            self._analyze_cancelled = True  # before reading the pid: the thread sets it before it checks this
            pid = self._analyzer_pid
            if pid is not None:
                try:
                    with self.engine.connect() as conn:
                        conn.execute(sa.text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})
                except Exception as exc:  # noqa: BLE001 - never hide why the run is ending; wait instead
                    self.log.debug(kv("tables_analyze_cancel_failed", source=self.spec.name, error=repr(exc)))
        analyzer.join()

    def prepare(self, page: Page) -> _Prepared:
        """Key, hash and classify the page's records, then enrich and map the changed ones."""
        counts = Counts(records_fetched=len(page.records), pages_committed=1)
        candidates = self._identify(page, counts)
        table = page.table if page.table is not None else self.table
        with self._read_conn.begin():
            state = existing_state(self._read_conn, table, self.spec.name, [c.external_id for c in candidates])
        changed: list[_Candidate] = []
        refreshed: list[_Candidate] = []
        for candidate in candidates:
            known = state.get(candidate.external_id)
            candidate.existed = known is not None
            if known is not None and known[0] == candidate.digest and known[1] is None:
                counts.records_unchanged += 1
                if page.refresh:
                    refreshed.append(candidate)
            else:
                changed.append(candidate)
        rows, children, references, kept = self._map(changed, counts, refreshed)
        existed = {c.external_id for c in (*changed, *refreshed) if c.existed}
        now = utcnow()
        for row in rows:  # rows fresh from the mapping: stamped in place, not copied
            row["updated_at"] = row["first_seen_at"] = now
        new_rows = [r for r in rows if r["external_id"] not in existed]
        # Encoded here, on the mapping thread, so that the writer mostly waits for PostgreSQL.
        encoded = encode_copy_rows(table, new_rows) if new_rows and self._copies else None
        prepared = _Prepared(page, counts, candidates, rows, children, references, existed, table, now,
                             new_rows, encoded)
        updated_parents = [row["external_id"] for row in rows if row["external_id"] in existed]
        for child_table, batch in children.items():
            # Catalogued rows the payload no longer carries stay (``MappedRecord.keep_children``);
            # the payload's are not added.
            keep = kept.get(child_table, set()) & existed
            parents = [p for p in updated_parents if p not in keep] if keep else updated_parents
            if not self._resolvable(child_table, batch):  # a new tag: resolved once the page's tags are written
                prepared.child_writes[child_table] = (parents, keep, None)
                continue
            columns = self._child_columns(child_table, batch, keep)
            encoded_children = encode_copy(child_table, columns) if self._copies and batch.parents else None
            prepared.child_writes[child_table] = (parents, keep, encoded_children or columns)
        return prepared

    def write(self, prepared: _Prepared) -> Counts:
        """Commit one prepared page, its cursor and the run's totals in a single transaction."""
        page, counts, candidates = prepared.page, prepared.counts, prepared.candidates
        rows, children, references, existed = prepared.rows, prepared.children, prepared.references, prepared.existed
        table, now = prepared.table, prepared.stamped_at
        if table is not self.table:
            self._touched_tables.add(table)
        conn = self._write_conn
        with conn.begin():
            if prepared.encoded_new_rows is not None:
                copy_encoded(conn, table, prepared.encoded_new_rows)
            else:
                insert_rows(conn, table, prepared.new_rows)
            upsert_rows(conn, table, [r for r in rows if r["external_id"] in existed])
            for reference_table, reference_rows in references.items():
                ids = upsert_references(conn, reference_table, reference_rows, now)
                self._reference_ids.setdefault(reference_table.name, {}).update(
                    (_own_key(k), v) for k, v in ids.items()
                )
            self._touched_tables.update(references, children)
            for child_table, (parents, keep, ready) in prepared.child_writes.items():
                if ready is None:
                    ready = self._child_columns(child_table, children[child_table], keep)
                replace_children(conn, child_table, self.spec.name, parents, ready)
            if page.complete_scope is not None:
                seen = [c.external_id for c in candidates] + list(page.listed_before)
                counts.records_removed = mark_removed(
                    conn, table, self.spec.name, page.complete_scope, seen, now, self.fetch_run_id
                )
            if page.cursor is not None:
                save_cursor(conn, self.spec.name, page.cursor[0], page.cursor[1], now, self.fetch_run_id)
            counts.records_processed = counts.records_created + counts.records_updated + counts.records_unchanged
            pending = Counts(**self.totals.as_dict())
            pending.add(counts)
            fetch_run_rows.record_page(conn, self.fetch_run_id, pending)
        self.totals = pending
        return counts

    def _identify(self, page: Page, counts: Counts) -> list[_Candidate]:
        """Key and hash each record; a later duplicate of an id in one page replaces the earlier.

        A record whose key cannot be read is failed here; failed records that do have a key stay
        "seen", so a listing with one broken entry never marks that entry removed.
        """
        by_id: dict[str, _Candidate] = {}
        for record in page.records:
            try:
                external_id = str(self.run.external_id(record))
                digest = content_hash(self.run.fingerprint(record))
            except Exception as exc:  # noqa: BLE001 - a bad record must not sink its page
                counts.records_failed += 1
                self.log.warning(kv("record_failed", source=self.spec.name, id=_guess_id(record),
                                    reason=f"cannot identify record: {exc!r}"))
                continue
            if external_id in by_id:
                self.log.debug(kv("record_duplicate", source=self.spec.name, id=external_id))
            by_id[external_id] = _Candidate(external_id, record, digest, existed=False)
        return list(by_id.values())

    def _map(
        self, changed: list[_Candidate], counts: Counts, refreshed: Sequence[_Candidate] = ()
    ) -> tuple[
        list[dict[str, Any]],
        dict[sa.Table, _ChildColumns],
        dict[sa.Table, list[dict[str, Any]]],
        dict[sa.Table, set[str]],
    ]:
        """Map changed records (counted created or updated) and refreshed ones (already counted unchanged)."""
        rows: list[dict[str, Any]] = []
        children: dict[sa.Table, _ChildColumns] = {}
        references: dict[tuple[sa.Table, tuple[str, ...]], dict[str, list[Any]]] = {}
        kept: dict[sa.Table, set[str]] = {}
        source = self.spec.name
        for candidate, is_refresh in [*((c, False) for c in changed), *((c, True) for c in refreshed)]:
            try:
                record = self.run.enrich(candidate.record) if self._enriches else candidate.record
                mapped: MappedRecord = self.run.map(record)
                child_columns = {table: as_columns(given) for table, given in mapped.children.items()}
                reference_columns = {table: as_columns(given) for table, given in mapped.references.items()}
                for table, columns in reference_columns.items():
                    if columns and not set(table.info["natural_key"][1:]) <= columns.keys():
                        raise ValueError(f"{table.name} rows lack their key {table.info['natural_key'][1:]}")
            except Exception as exc:  # noqa: BLE001 - mapping bugs and odd payloads fail one record
                reason = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
                if is_refresh:  # its catalogued row stays as it is, which is what "unchanged" said
                    self.log.warning(kv("record_refresh_failed", source=self.spec.name, id=candidate.external_id,
                                        reason=reason))
                else:
                    self._fail(counts, candidate, reason)
                continue
            rows.append(
                {
                    **mapped.row,
                    "source": source,
                    "external_id": candidate.external_id,
                    "content_hash": candidate.digest,
                    "raw": dict(record),
                    "removed_at": None,
                    "fetch_run_id": self.fetch_run_id,
                }
            )
            for table, columns in child_columns.items():
                batch = children.get(table)
                if batch is None:
                    batch = children[table] = _ChildColumns()
                batch.add(_typed(table.c[table.info["parent_column"]], candidate.external_id), columns)
            for table, columns in reference_columns.items():
                if columns:  # gathered column by column; keyed and compared once per page
                    gathered = references.setdefault((table, tuple(columns)), {})
                    for name, values in columns.items():
                        gathered.setdefault(name, []).extend(values)
            for table in mapped.keep_children:
                kept.setdefault(table, set()).add(candidate.external_id)
            if is_refresh:
                continue  # counted unchanged already
            if candidate.existed:
                counts.records_updated += 1
            else:
                counts.records_created += 1
        return rows, children, self._unwritten(references), kept

    def _resolvable(self, table: sa.Table, batch: _ChildColumns) -> bool:
        """Whether every shared row the batch names already has an id (written by an earlier page)."""
        for key, (reference_table, _) in (table.info.get("resolve") or {}).items():
            if not self._reference_ids.get(reference_table.name, {}).keys() >= set(batch.columns.get(key, ())):
                return False
        return True

    def _child_columns(
        self, table: sa.Table, batch: _ChildColumns, skip_parents: set[str] | frozenset[str] = frozenset()
    ) -> dict[str, list[Any]]:
        """The batch's columns as the table stores them: source, parent key, shared rows' ids.

        A column naming a shared row by its natural key (a tag name) becomes that row's id. Rows
        of ``skip_parents`` (external ids whose catalogued children are kept) are left out.
        """
        columns = dict(batch.columns)
        parents = batch.parents
        if skip_parents:
            wanted = [i for i, parent in enumerate(parents) if str(parent) not in skip_parents]
            parents = [parents[i] for i in wanted]
            columns = {name: [values[i] for i in wanted] for name, values in columns.items()}
        for key, (reference_table, id_column) in (table.info.get("resolve") or {}).items():
            ids = self._reference_ids.get(reference_table.name, {})
            columns[id_column] = list(map(ids.__getitem__, columns.pop(key)))
        return {"source": [self.spec.name] * len(parents), table.info["parent_column"]: parents, **columns}

    def _unwritten(
        self, references: dict[tuple[sa.Table, tuple[str, ...]], dict[str, list[Any]]]
    ) -> dict[sa.Table, list[dict[str, Any]]]:
        """The page's shared rows (latest per key) that no earlier page of this run writes with these values.

        Most tags of a page were written by an earlier page of the run, so this check runs for
        every tag of every page; it is built from zip/dict/filterfalse, without Python-level
        loops, and a table with one value column (a tag's category) needs no tuples at all.
        """
        source = self.spec.name
        result: dict[sa.Table, list[dict[str, Any]]] = {}
        for (table, names), columns in references.items():
            key_columns, value_columns = _key_and_values(table, names)
            found = dict(zip(_zipped(columns, key_columns), _zipped(columns, value_columns), strict=True))
            written = self._written_references.setdefault((table.name, names), {})
            # ``(key, value) in written.items()``: one lookup and one comparison, looped in C.
            fresh = list(filterfalse(written.items().__contains__, found.items()))
            # Counted as written from now on: pages are written in order, and none is written
            # after a failed one, so a later page never needs to send these rows again.
            written.update(fresh)
            rows = result.setdefault(table, [])
            for key, value in fresh:
                row = {**_unpick(key, key_columns), **_unpick(value, value_columns), "source": source}
                rows.append(row)
        return {table: rows for table, rows in result.items() if rows}

    def _fail(self, counts: Counts, candidate: _Candidate, reason: str) -> None:
        counts.records_failed += 1
        self.log.warning(kv("record_failed", source=self.spec.name, id=candidate.external_id, reason=reason))


def _key_and_values(table: sa.Table, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A reference table's natural key columns (after "source") and the other mapped columns."""
    key_columns = tuple(table.info["natural_key"][1:])
    return key_columns, tuple(n for n in names if n not in key_columns)


def _zipped(columns: dict[str, list[Any]], names: tuple[str, ...]) -> list[Any] | Any:
    """One column as is, several as tuples, none as Nones: the key or value of each row."""
    if len(names) == 1:
        return columns[names[0]]
    if not names:
        return [None] * len(next(iter(columns.values())))
    return zip(*(columns[n] for n in names), strict=True)


def _unpick(shaped: Any, names: tuple[str, ...]) -> dict[str, Any]:
    if len(names) == 1:
        return {names[0]: shaped}
    return dict(zip(names, shaped, strict=True)) if names else {}


def _own_key(natural_key: tuple[Any, ...]) -> Any:
    """A reference row's key within its source: the value itself when the key is one column."""
    return natural_key[1] if len(natural_key) == 2 else natural_key[1:]


def _typed(column: sa.Column, external_id: str) -> Any:
    """The parent key as the child column stores it (integer ids for integer link tables)."""
    return int(external_id) if isinstance(column.type, sa.Integer) else external_id


def _guess_id(record: Any) -> str:
    if isinstance(record, dict):
        for key in ("id", "name", "external_id"):
            if key in record:
                return str(record[key])
    return "?"
