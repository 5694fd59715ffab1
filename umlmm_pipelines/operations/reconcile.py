"""Final statuses for fetch runs whose run died without writing one (kill -9, OOM, lost node).

Dagster learns of such a death through run monitoring; this compares every fetch_runs row
still ``queued``/``running`` with Dagster's run storage and closes the ones whose run is over.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import sqlalchemy as sa

from umlmm_pipelines.catalog import fetch_runs as rows
from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.ingestion.logfmt import kv

_STATUS_FOR = {
    dg.DagsterRunStatus.FAILURE: "failed",
    dg.DagsterRunStatus.CANCELED: "cancelled",
    dg.DagsterRunStatus.SUCCESS: "failed",
}


def reconcile(
    engine: sa.Engine, instance: dg.DagsterInstance, log: Any = None, stale_after_seconds: float = 3600.0
) -> list[tuple[int, str]]:
    """Close rows of finished runs; returns ``(fetch_run_id, status)`` for each one changed.

    A row whose run this instance does not know is left alone unless it has shown no progress
    for ``stale_after_seconds``: another deployment may be writing the same catalog.
    """
    changed: list[tuple[int, str]] = []
    with engine.connect() as conn:
        active = rows.active_rows(conn)
    for row in active:
        run = instance.get_run_by_id(row.dagster_run_id)
        if run is not None and run.status not in _STATUS_FOR:
            continue
        if run is None and (rows.utcnow() - rows.aware(row.heartbeat_at)).total_seconds() < stale_after_seconds:
            continue
        status = "failed" if run is None else _STATUS_FOR[run.status]
        reason = _reason(instance, run, row.dagster_run_id)
        with engine.begin() as conn:
            if rows.finish(conn, row.id, status, error_message=f"{row.source}: {reason}", only_if_active=True):
                changed.append((row.id, status))
                if log is not None:
                    log.warning(kv("fetch_run_reconciled", source=row.source, fetch_run_id=row.id,
                                   run_id=row.dagster_run_id, status=status, reason=reason))
    return changed


def _reason(instance: dg.DagsterInstance, run: dg.DagsterRun | None, run_id: str) -> str:
    if run is None:
        return f"run {run_id} is not in Dagster's run storage; it ended without recording a final status"
    message = _last_run_message(instance, run_id)
    base = f"run {run_id} ended {run.status.value} without recording its final status"
    return f"{base}: {message}" if message else base


def _last_run_message(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """What Dagster said last about the run's end: the crash explanation the code server or run
    monitoring logged (an engine event) is more useful than the generic failure message."""
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED,
                         dg.DagsterEventType.ENGINE_EVENT}, ascending=False, limit=5,
    ).records
    messages: dict[bool, str] = {}
    for record in records:
        entry = record.event_log_entry
        message = entry.dagster_event.message if entry.dagster_event else entry.user_message
        if message:
            is_engine = entry.dagster_event is not None and entry.dagster_event.event_type == (
                dg.DagsterEventType.ENGINE_EVENT)
            messages.setdefault(is_engine, message)
    return messages.get(True) or messages.get(False)


@dg.sensor(
    name="fetch_runs_reconciliation_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks fetch_runs rows failed or cancelled when their Dagster run ended without writing a "
    "final status (worker killed, machine lost).",
)
def fetch_runs_reconciliation_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    engine = open_catalog()
    try:
        changed = reconcile(engine, context.instance, context.log)
    finally:
        engine.dispose()
    if not changed:
        return dg.SkipReason("every fetch_runs row of a finished run has its final status")
    return dg.SkipReason(f"reconciled {len(changed)} fetch run(s): {changed}")
