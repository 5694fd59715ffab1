"""What a source is: a spec the code location is built from, and a per-run fetcher.

A source module provides a :class:`SourceSpec` named ``SOURCE`` and, once implemented, a
:class:`SourceRun` subclass. The shared page loop (``ingestion.pages``) does everything else:
change detection, mapping errors, transactions, cursors, removal marking and statistics.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg
import orjson
import sqlalchemy as sa
from pydantic import BaseModel

Record = Mapping[str, Any]


class RecordError(Exception):
    """One record could not be fetched in full or mapped; it is counted failed, its page kept."""


class SourceError(RuntimeError):
    """The run cannot do (all of) its work; the message names the source and the cause."""


@dataclass(frozen=True)
class Page:
    """A batch of raw records committed in one transaction.

    ``complete_scope`` says the page lists every live record whose columns equal these values
    (Ollama's ``/api/tags`` for one host), so rows of that scope missing from it are marked
    removed. A listing too large for one page is split: the earlier pages carry no scope, and the
    last one carries it with ``listed_before``, the external ids the earlier pages listed, which
    count as seen. ``cursor`` is a ``(scope, value)`` high-water mark saved with the page; a value of
    None clears the scope's cursor (its walk is complete). ``table`` names the entity table of a
    source that keeps several kinds of entity (ComfyUI's workflows and node types); by default the
    page goes to the source's main table. ``refresh`` rewrites the page's unchanged records too
    (still counted unchanged): a periodic full walk uses it to bring up to date the fields a
    source leaves out of its fingerprint because they change all the time (CivitAI's download
    counts), which would otherwise make every record look changed.
    """

    records: Sequence[Record]
    label: str
    complete_scope: Mapping[str, Any] | None = None
    listed_before: Sequence[str] = ()
    cursor: tuple[str, str | None] | None = None
    table: sa.Table | None = None
    refresh: bool = False


#: Rows for a child or reference table: a list of dicts, or columns (a dict of equal-length lists).
Rows = list[dict[str, Any]] | dict[str, list[Any]]


@dataclass
class MappedRecord:
    """Normalized columns for the entity table and the rows that hang off it.

    ``children`` belong to this record alone (a post's tag links) and are replaced whenever the
    record changes. ``references`` are shared rows the record points to (a tag and its
    category): inserted when new, updated when they differ, never deleted with the record.
    Child and reference tables declare their key columns in ``table.info`` (see
    ``catalog.tables.child_table`` and ``reference_table``). Either may be given as rows or as
    columns; columns cost less per row, which matters for a post's two dozen tags.

    ``keep_children`` names child tables whose rows the payload no longer carries (a CivitAI
    model that was taken down comes back without its versions and files): when the record is
    already catalogued, its rows in those tables are kept as they are instead of replaced; a
    new record gets the mapped rows as usual.
    """

    row: dict[str, Any]
    children: dict[sa.Table, Rows] = field(default_factory=dict)
    references: dict[sa.Table, Rows] = field(default_factory=dict)
    keep_children: frozenset[sa.Table] = frozenset()

    def child_rows(self, table: sa.Table) -> list[dict[str, Any]]:
        return as_rows(self.children.get(table, []))

    def reference_rows(self, table: sa.Table) -> list[dict[str, Any]]:
        return as_rows(self.references.get(table, []))


def as_rows(given: Rows) -> list[dict[str, Any]]:
    """Rows as a list of dicts, whichever form they were given in."""
    if isinstance(given, dict):
        names = list(given)
        return [dict(zip(names, values, strict=True)) for values in zip(*given.values(), strict=True)]
    return list(given)


def as_columns(given: Rows) -> dict[str, list[Any]]:
    """Rows as columns; a column some rows lack is None for them."""
    if isinstance(given, dict):
        lengths = {len(values) for values in given.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of unequal length: { {k: len(v) for k, v in given.items()} }")
        return given
    names: dict[str, None] = {}
    for row in given:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in given] for name in names}


@dataclass
class RunInputs:
    """What a source's run gets from the mechanism: settings, the partition, logging, cursors."""

    settings: BaseModel
    partition_keys: Sequence[str]
    log: Any
    read_cursor: Callable[[str], str | None]
    deferred_failures: list[str] = field(default_factory=list)
    #: What the run wants the user to see beside the counts (ComfyUI: which parts could be read);
    #: shown as materialization metadata and logged when the run ends.
    report: dict[str, Any] = field(default_factory=dict)

    def defer_failure(self, message: str) -> None:
        """Record a failure that should fail the run after the other work is committed."""
        self.log.error(message)
        self.deferred_failures.append(message)


class SourceRun(ABC):
    """Fetching for one run. Subclasses hold the clients; they never touch the database."""

    def __init__(self, inputs: RunInputs) -> None:
        self.inputs = inputs
        self.settings = inputs.settings
        self.log = inputs.log

    @abstractmethod
    def pages(self) -> Iterator[Page]:
        """Yield pages of raw records, in an order that makes resuming from a cursor safe."""

    @abstractmethod
    def external_id(self, record: Record) -> str:
        """The natural key of a record within its source."""

    def fingerprint(self, record: Record) -> Any:
        """The part of a record whose change means the catalog row must be rewritten."""
        return record

    def enrich(self, record: Record) -> Record:
        """Fetch details for a new or changed record (Ollama's /api/show); default: nothing."""
        return record

    def page_classified(self, page: Page, counts: Any) -> None:  # noqa: B027 - optional hook
        """Called once a page's records are classified and mapped, before the next page is asked for.

        ``counts`` (a ``catalog.fetch_runs.Counts``) holds the page's created / updated / unchanged
        / failed figures, so an incremental walk can stop early (CivitAI stops after a page of
        nothing new) without the fetcher ever reading the database itself.
        """

    @abstractmethod
    def map(self, record: Record) -> MappedRecord:
        """Normalized columns for a record; raise :class:`RecordError` (or any error) to skip it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""


@dataclass(frozen=True)
class SourceSpec:
    """Everything the code location needs to know of a source to build its asset, job and schedule."""

    name: str
    display_name: str
    asset_name: str
    description: str
    settings_model: type[BaseModel]
    table: sa.Table | None = None
    run_factory: Callable[[RunInputs], SourceRun] | None = None
    #: Partitions built from the source's settings (e.g. daily from a configured start date).
    partitions: Callable[[Any], dg.PartitionsDefinition] | None = None
    #: How a backfill over many partitions is split into runs.
    backfill_policy: Callable[[Any], dg.BackfillPolicy] | None = None
    #: The partition keys a schedule tick at ``now`` should request (settings, now) -> keys.
    scheduled_partitions: Callable[[Any, datetime], list[str]] | None = None
    not_implemented_reason: str = "ingestion for this source is not implemented yet"

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.name, self.asset_name])

    @property
    def job_name(self) -> str:
        return f"{self.name}_ingestion"

    @property
    def schedule_name(self) -> str:
        return f"{self.name}_schedule"

    def partitions_def(self, settings: BaseModel) -> dg.PartitionsDefinition | None:
        return self.partitions(settings) if self.partitions else None

    @property
    def implemented(self) -> bool:
        return self.run_factory is not None and self.table is not None


#: The run tag every run of a source's job carries (the run queue limits runs per value).
SOURCE_TAG = "umlmm/source"


def content_hash(value: Any) -> str:
    """A stable hash of a JSON-able value: key order and whitespace do not matter.

    orjson with sorted keys is several times faster than the standard library here, which
    matters: every fetched record is hashed, changed or not.
    """
    return hashlib.sha256(_canonical_json(value)).hexdigest()


_CANONICAL_OPTIONS = (
    orjson.OPT_SORT_KEYS,
    # Same bytes for string keys, but slower: only for values that have other keys.
    orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
)


def _canonical_json(value: Any) -> bytes:
    for option in _CANONICAL_OPTIONS:
        try:
            return orjson.dumps(value, option=option, default=str)
        except TypeError:
            continue
    # e.g. an integer beyond 64 bits
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()
