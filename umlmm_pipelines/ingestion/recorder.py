"""The fetch_runs recorder: a Dagster resource that owns the catalog connection for a run.

It writes the run's row before any work, holds the per-source overlap guard while the run
works, and writes the final status from inside the run: ``completed``, ``failed`` with the
message and full stack, or ``cancelled`` with the counts committed so far.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster._core.errors import DagsterExecutionInterruptedError
from pydantic import PrivateAttr

from umlmm_pipelines.catalog import fetch_runs as rows
from umlmm_pipelines.catalog.database import open_catalog, redact
from umlmm_pipelines.catalog.fetch_runs import Counts
from umlmm_pipelines.ingestion.inflight import run_has_finished
from umlmm_pipelines.ingestion.logfmt import kv


class SourceBusyError(RuntimeError):
    """Another run of the same source held the guard for longer than we were willing to wait."""


class FetchRunRecorder(dg.ConfigurableResource):
    """Catalog access and fetch_runs bookkeeping for one run.

    ``database_url`` is for tests and explicit setups; normally the URL comes from
    ``UMLMM_DATABASE_URL`` (read at run time, so a password never enters run config) or falls
    back to SQLite under ``DAGSTER_HOME``.
    """

    database_url: str | None = None
    guard_timeout_seconds: float = 6 * 3600.0
    guard_poll_seconds: float = 2.0
    guard_stale_after_seconds: float = 3600.0

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._engine = open_catalog(self.database_url)
        context.log.info(kv("catalog_open", url=redact(self._engine.url)))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = open_catalog(self.database_url)
        return self._engine

    def begin(
        self, context: dg.AssetExecutionContext, source: str, partition_key: str | None,
        parameters: Mapping[str, Any],
    ) -> FetchRun:
        with self.engine.begin() as conn:
            fetch_run_id = rows.insert_queued(conn, source, context.run_id, partition_key, parameters)
        return FetchRun(self, context, source, fetch_run_id)


class FetchRun:
    """The row of one run of one source, from ``queued`` to its final status."""

    def __init__(self, recorder: FetchRunRecorder, context: dg.AssetExecutionContext, source: str,
                 fetch_run_id: int) -> None:
        self.recorder = recorder
        self.engine = recorder.engine
        self.context = context
        self.source = source
        self.id = fetch_run_id

    def acquire_guard(self) -> None:
        """Move to ``running``; wait while a live run of the source is running.

        A holder whose Dagster run is over (its worker was killed), or whose row has shown no
        progress for ``guard_stale_after_seconds``, is marked failed here, so a crash never
        blocks the source for good.
        """
        deadline = time.monotonic() + self.recorder.guard_timeout_seconds
        announced = None
        while not rows.try_mark_running(self.engine, self.id):
            with self.engine.connect() as conn:
                holder = rows.running_row(conn, self.source)
            if holder is None:
                continue
            finished, status = run_has_finished(self.context.instance, holder.dagster_run_id)
            silent_s = (rows.utcnow() - rows.aware(holder.heartbeat_at)).total_seconds()
            if finished or silent_s > self.recorder.guard_stale_after_seconds:
                why = f"ended ({status})" if finished else f"made no progress for {silent_s:.0f} s ({status})"
                with self.engine.begin() as conn:
                    rows.finish(conn, holder.id, "failed", error_message=(
                        f"{self.source}: run {holder.dagster_run_id} {why} without recording its final "
                        f"status; marked failed by run {self.context.run_id}"), only_if_active=True)
                self.context.log.warning(kv("source_guard_taken_over", source=self.source,
                                            previous_run_id=holder.dagster_run_id, reason=why))
                continue
            if announced != holder.dagster_run_id:
                self.context.log.warning(kv("source_busy_waiting", source=self.source,
                                            holder_run_id=holder.dagster_run_id, holder_status=status))
                announced = holder.dagster_run_id
            if time.monotonic() > deadline:
                raise SourceBusyError(
                    f"{self.source}: run {holder.dagster_run_id} is still running after "
                    f"{self.recorder.guard_timeout_seconds:g} s; not starting a second run of the source"
                )
            time.sleep(self.recorder.guard_poll_seconds)

    def complete(self, totals: Counts) -> None:
        with self.engine.begin() as conn:
            rows.finish(conn, self.id, "completed", totals, only_if_active=True)

    def end_with(self, totals: Counts, exc: BaseException) -> str:
        """Record why the run stopped; returns the status written."""
        if isinstance(exc, DagsterExecutionInterruptedError | KeyboardInterrupt):
            status, message = "cancelled", f"{self.source}: run was terminated; committed pages are kept"
        else:
            status, message = "failed", str(exc) or type(exc).__name__
        details = "".join(traceback.format_exception(exc))
        with self.engine.begin() as conn:
            rows.finish(conn, self.id, status, totals, error_message=message, error_details=details,
                        only_if_active=True)
        return status
