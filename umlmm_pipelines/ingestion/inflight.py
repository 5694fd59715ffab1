"""Which runs and backfills of a source are queued or in flight, from Dagster's own storage.

Used by schedules (skip a tick rather than queue behind a running ingestion) and by the
overlap guard (is the run that holds the guard still alive?).
"""

from __future__ import annotations

import dagster as dg
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus, PartitionBackfill

from umlmm_pipelines.ingestion.source import SOURCE_TAG, SourceSpec

IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FINISHED_STATUSES = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def runs_in_flight(instance: dg.DagsterInstance, spec: SourceSpec) -> list[dg.DagsterRun]:
    """Runs of the source that are queued or running, whichever job launched them.

    A run counts when it carries the source tag, or when it selects the source's asset (the UI's
    "Materialize" button launches the implicit asset job, which has no job-level tags).
    """
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=IN_FLIGHT_STATUSES))
    found = []
    for record in records:
        run = record.dagster_run
        selection = run.asset_selection or frozenset()
        if run.tags.get(SOURCE_TAG) == spec.name or spec.asset_key in selection or run.job_name == spec.job_name:
            found.append(run)
    return found


def backfills_in_flight(instance: dg.DagsterInstance, spec: SourceSpec) -> list[PartitionBackfill]:
    """Backfills of the source still launching runs (between two runs nothing is queued)."""
    backfills = instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED]))
    return [
        b for b in backfills
        if b.job_name == spec.job_name or spec.asset_key in (b.asset_selection or ())
    ]


def describe_blockers(instance: dg.DagsterInstance, spec: SourceSpec) -> str | None:
    """Why a new run of the source should not start now, or None when nothing blocks it."""
    runs = runs_in_flight(instance, spec)
    if runs:
        run = runs[0]
        more = f" (and {len(runs) - 1} more)" if len(runs) > 1 else ""
        return f"source {spec.name} already in flight: run {run.run_id} ({run.status.value}){more}"
    backfills = backfills_in_flight(instance, spec)
    if backfills:
        return f"source {spec.name} has a backfill in progress: {backfills[0].backfill_id}"
    return None


def run_has_finished(instance: dg.DagsterInstance | None, run_id: str) -> tuple[bool, str]:
    """Whether a Dagster run is over, and its status for messages.

    A run this instance does not know (another deployment writing the same catalog) is not
    assumed over; the guard falls back to the row's heartbeat for those.
    """
    run = instance.get_run_by_id(run_id) if instance is not None else None
    if run is None:
        return False, "not in this Dagster instance"
    return run.status in FINISHED_STATUSES, run.status.value
