"""Per-source run metrics over fetch_runs and Dagster's run queue, as one pandas table.

The table is computed in one place and shown in two: the ``operations/metrics`` asset (a table
in its materialization metadata, so each hourly materialization keeps that hour's figures in the
asset's history) and ``umlmm-pipelines stats``. Nothing is written to the catalog.

Columns (over the last ``window_days``, by the run's ``started_at``):

- ``runs``, ``completed``, ``failed``, ``cancelled``, ``running``: fetch_runs rows by status;
- ``success_rate``, ``failure_rate``: completed / finished and failed / finished
  (finished = completed + failed + cancelled; empty when nothing finished);
- ``p50_duration_s``, ``p95_duration_s``: durations of completed runs;
- ``records_per_minute``: records processed per minute of completed runs;
- ``created_per_day``, ``updated_per_day``: rows created / updated by every run (a failed run's
  committed pages count too), divided by the window;
- ``queued``: Dagster runs of the source waiting in the run queue right now.
"""

# No "from __future__ import annotations" here: Dagster inspects the real type of `context`.

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from umlmm_pipelines.catalog.fetch_runs import aware
from umlmm_pipelines.catalog.tables import fetch_runs
from umlmm_pipelines.ingestion.inflight import runs_in_flight
from umlmm_pipelines.ingestion.source import SourceSpec

METRICS_ASSET_KEY = dg.AssetKey(["operations", "metrics"])
METRICS_JOB_NAME = "operations_metrics"
METRICS_SCHEDULE_NAME = "operations_metrics_schedule"

COLUMNS: dict[str, str] = {
    "source": "string",
    "runs": "int",
    "completed": "int",
    "failed": "int",
    "cancelled": "int",
    "running": "int",
    "success_rate": "float",
    "failure_rate": "float",
    "p50_duration_s": "float",
    "p95_duration_s": "float",
    "records_per_minute": "float",
    "created_per_day": "float",
    "updated_per_day": "float",
    "queued": "int",
}


def load_fetch_runs(conn: sa.Connection, since: datetime) -> pd.DataFrame:
    query = sa.select(
        fetch_runs.c.source, fetch_runs.c.status, fetch_runs.c.started_at, fetch_runs.c.duration_ms,
        fetch_runs.c.records_processed, fetch_runs.c.records_created, fetch_runs.c.records_updated,
    ).where(fetch_runs.c.started_at >= since)
    frame = pd.DataFrame(conn.execute(query).all(), columns=[
        "source", "status", "started_at", "duration_ms", "records_processed", "records_created", "records_updated"])
    if not frame.empty:
        frame["started_at"] = frame["started_at"].map(aware)
    return frame


def queued_runs(instance: dg.DagsterInstance, specs: Sequence[SourceSpec]) -> dict[str, int]:
    """Runs waiting in Dagster's queue per source (by source tag, job or asset selection)."""
    return {spec.name: sum(1 for run in runs_in_flight(instance, spec) if run.status == dg.DagsterRunStatus.QUEUED)
            for spec in specs}


def compute_metrics(
    runs: pd.DataFrame, queued: dict[str, int], sources: Sequence[str], window_days: float
) -> pd.DataFrame:
    """One row per source, in ``sources`` order; sources without runs have zero counts."""
    table = []
    for source in sources:
        mine = runs[runs["source"] == source] if not runs.empty else runs
        status = mine["status"] if not mine.empty else pd.Series(dtype="object")
        completed = mine[status == "completed"] if not mine.empty else mine
        counts = {name: int((status == name).sum()) for name in ("completed", "failed", "cancelled", "running")}
        finished = counts["completed"] + counts["failed"] + counts["cancelled"]
        durations_s = completed["duration_ms"].dropna().astype(float) / 1000 if not completed.empty else pd.Series(
            dtype=float)
        minutes = durations_s.sum() / 60
        processed = float(completed["records_processed"].sum()) if not completed.empty else 0.0
        table.append({
            "source": source,
            "runs": int(len(mine)),
            **counts,
            "success_rate": counts["completed"] / finished if finished else None,
            "failure_rate": counts["failed"] / finished if finished else None,
            "p50_duration_s": float(durations_s.quantile(0.5)) if len(durations_s) else None,
            "p95_duration_s": float(durations_s.quantile(0.95)) if len(durations_s) else None,
            "records_per_minute": processed / minutes if minutes > 0 else None,
            "created_per_day": float(mine["records_created"].sum()) / window_days if not mine.empty else 0.0,
            "updated_per_day": float(mine["records_updated"].sum()) / window_days if not mine.empty else 0.0,
            "queued": int(queued.get(source, 0)),
        })
    frame = pd.DataFrame(table, columns=list(COLUMNS))
    for name, kind in COLUMNS.items():
        if kind == "float":
            frame[name] = frame[name].astype(float).round(3)
    return frame


def source_metrics(
    engine: sa.Engine, instance: dg.DagsterInstance, specs: Sequence[SourceSpec], window_days: float,
    now: datetime | None = None,
) -> pd.DataFrame:
    since = (now or datetime.now(UTC)) - timedelta(days=window_days)
    with engine.connect() as conn:
        runs = load_fetch_runs(conn, since)
    return compute_metrics(runs, queued_runs(instance, specs), [spec.name for spec in specs], window_days)


def as_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as plain Python values, missing figures as None (for JSON and table metadata)."""
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
    return records


def as_table_metadata(frame: pd.DataFrame) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord(record) for record in as_records(frame)],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in COLUMNS.items()]),
    )


class MetricsConfig(dg.Config):
    """The window can be changed for one materialization in the launchpad."""

    window_days: float | None = None


def build_metrics_asset(
    specs: Sequence[SourceSpec], default_window_days: float, recorder_key: str
) -> dg.AssetsDefinition:
    @dg.asset(
        key=METRICS_ASSET_KEY,
        group_name="operations",
        kinds={"pandas"},
        required_resource_keys={recorder_key},
        description="Per-source success and failure rates, p50/p95 durations, records per minute, rows created "
        "and updated per day, and queue depth, from fetch_runs and the Dagster run queue. Kept as "
        "materialization metadata only (nothing is written to the catalog); `umlmm-pipelines stats` prints "
        "the same table.",
    )
    def _metrics(context: dg.AssetExecutionContext, config: MetricsConfig) -> dg.MaterializeResult:
        window = config.window_days or default_window_days
        engine = getattr(context.resources, recorder_key).engine
        frame = source_metrics(engine, context.instance, specs, window)
        context.log.info("\n" + frame.to_string(index=False))
        return dg.MaterializeResult(metadata={
            "metrics": as_table_metadata(frame),
            "window_days": float(window),
            "runs": int(frame["runs"].sum()),
            "failed": int(frame["failed"].sum()),
            "queued": int(frame["queued"].sum()),
        })

    return _metrics


def build_metrics_job_and_schedule() -> tuple[UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    job = dg.define_asset_job(
        name=METRICS_JOB_NAME,
        selection=dg.AssetSelection.assets(METRICS_ASSET_KEY),
        description="Recompute the per-source operations metrics",
        executor_def=dg.in_process_executor,
    )
    schedule = dg.ScheduleDefinition(
        name=METRICS_SCHEDULE_NAME,
        job=job,
        cron_schedule="@hourly",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: recompute operations/metrics",
    )
    return job, schedule
