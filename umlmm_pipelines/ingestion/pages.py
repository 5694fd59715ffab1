"""The page loop every source shares: classify, enrich, map, then commit one page at a time.

A page is written in a single transaction together with its cursor and the run's running
totals, so a killed or cancelled run leaves whole pages and counts that match the rows.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from umlmm_pipelines.catalog import fetch_runs as fetch_run_rows
from umlmm_pipelines.catalog.cursors import save_cursor
from umlmm_pipelines.catalog.fetch_runs import Counts, utcnow
from umlmm_pipelines.catalog.upsert import (
    existing_state,
    insert_rows,
    mark_removed,
    relax_commit_durability,
    replace_children,
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
    content_hash,
)


@dataclass
class _Candidate:
    external_id: str
    record: Record
    digest: str
    existed: bool


@dataclass
class _Prepared:
    """A page ready to be written: its counts so far and the rows the write will send."""

    page: Page
    counts: Counts
    candidates: list[_Candidate]
    rows: list[dict[str, Any]]
    children: dict[sa.Table, list[dict[str, Any]]]
    references: dict[sa.Table, list[dict[str, Any]]]
    existed: set[str]
    table: sa.Table

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
        self._written_references: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self._touched_tables: set[sa.Table] = set()
        self._reference_ids: dict[tuple[str, tuple[Any, ...]], int] = {}
        self._analyzed_at = 100
        self._enriches = type(run).enrich is not SourceRun.enrich

    def run_all(self) -> Counts:
        """Fetch, classify and map page N+1 while page N is written by a writer thread.

        The database round trips of a write (COPY, upserts, commit) release the GIL, so they
        overlap with the next page's parsing and mapping. Pages still commit strictly in order,
        one at a time; a page whose ids overlap the page being written waits for that write
        before it is classified, so the overlap never changes what is counted.
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.spec.name}-writer") as writer:
            in_flight: tuple[int, _Prepared, Future[Counts]] | None = None
            try:
                for number, page in enumerate(self.run.pages(), start=1):
                    if in_flight is not None and in_flight[1].overlaps(page, self.run):
                        self._finish(*in_flight)
                        in_flight = None
                    prepared = self.prepare(page)
                    self.run.page_classified(page, prepared.counts)
                    if in_flight is not None:
                        self._finish(*in_flight)
                    in_flight = (number, prepared, writer.submit(self.write, prepared))
                if in_flight is not None:
                    self._finish(*in_flight)
                    in_flight = None
            finally:
                if in_flight is not None:  # stopped early: let the page being written commit or roll back
                    wait([in_flight[2]], timeout=60)
        return self.totals

    def _finish(self, number: int, prepared: _Prepared, write: Future[Counts]) -> None:
        counts = write.result()
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
        tables = [self.table, *self._touched_tables]
        with self.engine.begin() as conn:
            for table in tables:
                conn.exec_driver_sql(f'ANALYZE "{table.name}"')
        self.log.debug(kv("tables_analyzed", source=self.spec.name, tables=",".join(t.name for t in tables)))

    def prepare(self, page: Page) -> _Prepared:
        """Key, hash and classify the page's records, then enrich and map the changed ones."""
        counts = Counts(records_fetched=len(page.records), pages_committed=1)
        candidates = self._identify(page, counts)
        table = page.table if page.table is not None else self.table
        with self.engine.begin() as conn:
            state = existing_state(conn, table, self.spec.name, [c.external_id for c in candidates])
        changed: list[_Candidate] = []
        for candidate in candidates:
            known = state.get(candidate.external_id)
            candidate.existed = known is not None
            if known is not None and known[0] == candidate.digest and known[1] is None:
                counts.records_unchanged += 1
            else:
                changed.append(candidate)
        rows, children, references = self._map(changed, counts)
        existed = {c.external_id for c in changed if c.existed}
        return _Prepared(page, counts, candidates, rows, children, references, existed, table)

    def write(self, prepared: _Prepared) -> Counts:
        """Commit one prepared page, its cursor and the run's totals in a single transaction."""
        page, counts, candidates = prepared.page, prepared.counts, prepared.candidates
        rows, children, references, existed = prepared.rows, prepared.children, prepared.references, prepared.existed
        table = prepared.table
        if table is not self.table:
            self._touched_tables.add(table)
        now = utcnow()
        stamped = [{**row, "updated_at": now, "first_seen_at": now} for row in rows]
        with self.engine.begin() as conn:
            relax_commit_durability(conn)
            insert_rows(conn, table, [r for r in stamped if r["external_id"] not in existed])
            upsert_rows(conn, table, [r for r in stamped if r["external_id"] in existed])
            for reference_table, reference_rows in references.items():
                ids = upsert_references(conn, reference_table, reference_rows, now)
                self._reference_ids.update({(reference_table.name, k): v for k, v in ids.items()})
            self._touched_tables.update(references, children)
            children = {table: self._resolve(table, child_rows) for table, child_rows in children.items()}
            updated_parents = [row["external_id"] for row in rows if row["external_id"] in existed]
            for child_table, child_rows in children.items():
                replace_children(conn, child_table, self.spec.name, updated_parents, child_rows)
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
        for reference_table, reference_rows in references.items():
            key_columns = reference_table.info["natural_key"]
            for row in reference_rows:
                self._written_references[(reference_table.name, tuple(row[c] for c in key_columns))] = row
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
        self, changed: list[_Candidate], counts: Counts
    ) -> tuple[list[dict[str, Any]], dict[sa.Table, list[dict[str, Any]]], dict[sa.Table, list[dict[str, Any]]]]:
        rows: list[dict[str, Any]] = []
        children: dict[sa.Table, list[dict[str, Any]]] = {}
        references: dict[sa.Table, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for candidate in changed:
            try:
                record = self.run.enrich(candidate.record) if self._enriches else candidate.record
                mapped: MappedRecord = self.run.map(record)
            except RecordError as exc:
                self._fail(counts, candidate, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - mapping bugs and odd payloads fail one record
                self._fail(counts, candidate, f"{type(exc).__name__}: {exc}")
                continue
            rows.append(
                {
                    **mapped.row,
                    "source": self.spec.name,
                    "external_id": candidate.external_id,
                    "content_hash": candidate.digest,
                    "raw": dict(record),
                    "removed_at": None,
                    "fetch_run_id": self.fetch_run_id,
                }
            )
            source = self.spec.name
            for table, child_rows in mapped.children.items():
                parent_column = table.info["parent_column"]
                parent = _typed(table.c[parent_column], candidate.external_id)
                for child in child_rows:  # rows fresh from the mapping: completed in place, not copied
                    child["source"] = source
                    child[parent_column] = parent
                children.setdefault(table, []).extend(child_rows)
            for table, reference_rows in mapped.references.items():
                self._collect_references(table, reference_rows, references.setdefault(table, {}))
            if candidate.existed:
                counts.records_updated += 1
            else:
                counts.records_created += 1
        return rows, children, {table: list(found.values()) for table, found in references.items() if found}

    def _resolve(self, table: sa.Table, child_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the natural keys that child rows name (a tag name) by the shared row's id."""
        resolve = table.info.get("resolve") or {}
        if not resolve:
            return child_rows
        source = self.spec.name
        for key, (reference_table, id_column) in resolve.items():
            ids = self._reference_ids
            name = reference_table.name
            for row in child_rows:
                row[id_column] = ids[(name, (source, row.pop(key)))]
        return child_rows

    def _collect_references(
        self, table: sa.Table, reference_rows: list[dict[str, Any]], found: dict[tuple[Any, ...], dict[str, Any]]
    ) -> None:
        """Keep each shared row once per page, and skip rows this run already wrote unchanged.

        Most tags of a page were written by an earlier page of the run, so the check runs before
        any row is built; it compares the mapping's values with what was written.
        """
        source = self.spec.name
        own_key = table.info["natural_key"][1:]  # the key after "source"
        written = self._written_references
        name = table.name
        for reference in reference_rows:
            key = (source, *(reference[c] for c in own_key))
            previous = written.get((name, key))
            if previous is not None and all(previous.get(c) == v for c, v in reference.items()):
                continue
            found[key] = {**reference, "source": source}

    def _fail(self, counts: Counts, candidate: _Candidate, reason: str) -> None:
        counts.records_failed += 1
        self.log.warning(kv("record_failed", source=self.spec.name, id=candidate.external_id, reason=reason))


def _typed(column: sa.Column, external_id: str) -> Any:
    """The parent key as the child column stores it (integer ids for integer link tables)."""
    return int(external_id) if isinstance(column.type, sa.Integer) else external_id


def _guess_id(record: Any) -> str:
    if isinstance(record, dict):
        for key in ("id", "name", "external_id"):
            if key in record:
                return str(record[key])
    return "?"
