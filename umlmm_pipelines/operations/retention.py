"""Pruning old run history: Dagster runs (with their event logs) and fetch_runs rows, together.

Dagster's ``retention`` settings only purge schedule and sensor ticks; runs and their events stay
forever, and fetch_runs grows by one row per run. Pruning both with one cut-off keeps the two
records in agreement: every fetch_runs row of a deleted run goes with it, and a row is only
deleted on its own when its run is no longer in Dagster's storage (pruned before, or never
there). Runs still in flight and rows still queued/running are never touched.

    umlmm-pipelines prune --older-than-days 180 --dry-run
    umlmm-pipelines prune --older-than-days 180
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from umlmm_pipelines.catalog.tables import ACTIVE_STATUSES, fetch_runs

FINISHED_RUN_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclass
class PruneReport:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    cutoff: datetime
    dry_run: bool
    dagster_run_ids: list[str] = field(default_factory=list)
    fetch_run_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {len(self.dagster_run_ids)} Dagster run(s) and {len(self.fetch_run_ids)} fetch_runs row(s) "
                f"that ended before {self.cutoff.isoformat(timespec='seconds')}")


def prune_history(
    instance: dg.DagsterInstance,
    engine: sa.Engine,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = 200,
) -> PruneReport:
    """Delete finished Dagster runs and final fetch_runs rows that ended more than ``older_than`` ago."""
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    cutoff = (now or datetime.now(UTC)) - older_than
    report = PruneReport(cutoff=cutoff, dry_run=dry_run)

    cursor: str | None = None
    while True:
        # created_before narrows the scan in storage; the end time decides.
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=FINISHED_RUN_STATUSES, created_before=cutoff),
            limit=batch_size, cursor=cursor, ascending=True,
        )
        if not records:
            break
        cursor = records[-1].dagster_run.run_id
        for record in records:
            if record.end_time is not None and record.end_time < cutoff.timestamp():
                report.dagster_run_ids.append(record.dagster_run.run_id)
                if not dry_run:
                    instance.delete_run(record.dagster_run.run_id)

    deleted_runs = set(report.dagster_run_ids)
    with engine.connect() as conn:
        candidates = conn.execute(
            sa.select(fetch_runs.c.id, fetch_runs.c.dagster_run_id, fetch_runs.c.ended_at)
            .where(fetch_runs.c.status.not_in(ACTIVE_STATUSES))
            .order_by(fetch_runs.c.id)
        ).all()
    for row_id, run_id, ended_at in candidates:
        if run_id in deleted_runs:
            report.fetch_run_ids.append(row_id)
        elif ended_at is not None and _utc(ended_at) < cutoff and not instance.has_run(run_id):
            report.fetch_run_ids.append(row_id)
    if not dry_run:
        for start in range(0, len(report.fetch_run_ids), batch_size):
            chunk = report.fetch_run_ids[start:start + batch_size]
            with engine.begin() as conn:
                conn.execute(sa.delete(fetch_runs).where(fetch_runs.c.id.in_(chunk)))
    return report


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive timestamps; every one we write is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
