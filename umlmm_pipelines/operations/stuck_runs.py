"""Ending runs that hang, so the source's queue moves again.

A run writes its fetch_runs row with every committed page (``heartbeat_at``, ``pages_committed``).
A run that is alive to Dagster but whose row has not moved for ``Operations.StuckAfterMinutes`` is
hung (a server that stopped answering mid-walk, a dead connection without a timeout): the run
queue allows one run per source, so every later run of that source waits behind it for good.

The ``stuck_runs_sensor`` marks such a row ``failed`` with a message naming the source and the
stall, then terminates the Dagster run the way the UI's *Terminate* button does (the run
coordinator's ``cancel_run``): the run worker is interrupted, the run ends CANCELED, its pool slot
and its place in the queue are released, and the next queued run of the source starts. The row
is marked first so that the message survives: the interrupted run only writes its own final
status to a row that is still active.

Dagster's run monitoring already ends runs tagged ``dagster/max_runtime`` (every run of a source's
job carries it). Runs launched without the tag (the UI's *Materialize* button launches the
implicit asset job, which has no job tags) are held to the same ``MaxRuntimeMinutes`` here.
"""

# No "from __future__ import annotations" here: Dagster inspects the real type of `context`.

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from umlmm_pipelines.catalog import fetch_runs as rows
from umlmm_pipelines.catalog.tables import fetch_runs
from umlmm_pipelines.config import Settings
from umlmm_pipelines.ingestion.logfmt import kv
from umlmm_pipelines.ingestion.source import SourceSpec

STUCK_SENSOR_NAME = "stuck_runs_sensor"
#: Dagster statuses of a run that is alive and can be ended; CANCELING is already being ended.
ENDABLE_STATUSES = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


@dataclass(frozen=True)
class StuckRun:
    """A running fetch run that the sensor ends, and why."""

    fetch_run_id: int
    source: str
    dagster_run_id: str
    kind: str  # "stalled" or "max_runtime"
    message: str
    silent_seconds: float
    pages_committed: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def stuck_reason(
    *,
    source: str,
    run_id: str,
    run_started_at: datetime,
    heartbeat_at: datetime,
    pages_committed: int,
    has_max_runtime_tag: bool,
    now: datetime,
    stuck_after_seconds: float,
    max_runtime_seconds: int | None,
) -> tuple[str, str] | None:
    """``(kind, message)`` when a live run must be ended, else None. Pure, for direct tests."""
    silent = (now - heartbeat_at).total_seconds()
    if silent > stuck_after_seconds:
        return "stalled", (
            f"{source}: run {run_id} is stuck: no progress for {silent / 60:.1f} min (fetch_runs heartbeat "
            f"{heartbeat_at.astimezone(UTC).isoformat(timespec='seconds')}, {pages_committed} page(s) committed; "
            f"limit Operations.StuckAfterMinutes = {stuck_after_seconds / 60:g} min); ended by {STUCK_SENSOR_NAME} "
            f"so that the source's queue moves again"
        )
    running = (now - run_started_at).total_seconds()
    if not has_max_runtime_tag and max_runtime_seconds and running > max_runtime_seconds:
        return "max_runtime", (
            f"{source}: run {run_id} has run for {running / 60:.1f} min, longer than the source's "
            f"MaxRuntimeMinutes ({max_runtime_seconds / 60:g} min); it was launched without the "
            f"{dg.MAX_RUNTIME_SECONDS_TAG} tag, so {STUCK_SENSOR_NAME} ended it"
        )
    return None


def find_stuck_runs(
    conn: sa.Connection,
    instance: dg.DagsterInstance,
    now: datetime,
    stuck_after_seconds: float,
    max_runtime_seconds: Callable[[str], int | None],
) -> list[StuckRun]:
    """Running fetch runs whose Dagster run is alive but must be ended.

    Rows of runs this instance does not know (another deployment writing the same catalog) and
    of runs that are over (the reconciliation sensor closes those) are left alone.
    """
    running = conn.execute(
        sa.select(fetch_runs.c.id, fetch_runs.c.source, fetch_runs.c.dagster_run_id, fetch_runs.c.started_at,
                  fetch_runs.c.heartbeat_at, fetch_runs.c.pages_committed)
        .where(fetch_runs.c.status == "running")
        .order_by(fetch_runs.c.id)
    ).all()
    found = []
    for row in running:
        record = instance.get_run_record_by_id(row.dagster_run_id)
        if record is None or record.dagster_run.status not in ENDABLE_STATUSES:
            continue
        run = record.dagster_run
        run_started = datetime.fromtimestamp(record.start_time, UTC) if record.start_time else rows.aware(
            row.started_at)
        heartbeat = rows.aware(row.heartbeat_at)
        verdict = stuck_reason(
            source=row.source, run_id=run.run_id, run_started_at=run_started, heartbeat_at=heartbeat,
            pages_committed=row.pages_committed, has_max_runtime_tag=_has_max_runtime_tag(run), now=now,
            stuck_after_seconds=stuck_after_seconds, max_runtime_seconds=max_runtime_seconds(row.source),
        )
        if verdict is not None:
            found.append(StuckRun(row.id, row.source, run.run_id, verdict[0], verdict[1],
                                  (now - heartbeat).total_seconds(), row.pages_committed))
    return found


def _has_max_runtime_tag(run: dg.DagsterRun) -> bool:
    return bool(run.tags.get(dg.MAX_RUNTIME_SECONDS_TAG) or run.tags.get("dagster/max_runtime_seconds"))


def end_stuck_run(engine: sa.Engine, instance: dg.DagsterInstance, stuck: StuckRun, log: Any = None) -> str | None:
    """Mark the row failed, then terminate the run; returns what was done, or None if the row had ended.

    When the termination request cannot be delivered (the code server that launched the run is
    gone), the run is reported failed instead, so the queue still moves.
    """
    with engine.begin() as conn:
        if not rows.finish(conn, stuck.fetch_run_id, "failed", error_message=stuck.message, only_if_active=True):
            return None
    run = instance.get_run_by_id(stuck.dagster_run_id)
    if run is None or run.is_finished:
        return "row marked failed"
    instance.report_engine_event(stuck.message, run)
    try:
        terminated = instance.run_coordinator.cancel_run(stuck.dagster_run_id)
    except Exception as exc:  # noqa: BLE001 - an unreachable code server must not stop the fallback
        terminated = False
        if log is not None:
            log.warning(kv("stuck_run_terminate_failed", source=stuck.source, run_id=stuck.dagster_run_id,
                           error=str(exc)))
    action = "terminated"
    if not terminated:
        run = instance.get_run_by_id(stuck.dagster_run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, f"{stuck.message} (the termination request could not be delivered; "
                                            f"reported failed)")
        action = "reported failed"
    if log is not None:
        log.warning(kv("stuck_run_ended", source=stuck.source, run_id=stuck.dagster_run_id, kind=stuck.kind,
                       fetch_run_id=stuck.fetch_run_id, action=action))
    return action


def build_stuck_runs_sensor(specs: Sequence[SourceSpec], settings: Settings, recorder_key: str) -> dg.SensorDefinition:
    stuck_after = settings.operations.stuck_after_seconds
    known = {spec.name for spec in specs}

    def limit(source: str) -> int | None:
        return settings.max_runtime_seconds(source) if source in known else None

    @dg.sensor(
        name=STUCK_SENSOR_NAME,
        minimum_interval_seconds=settings.operations.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={recorder_key},
        description=f"Ends runs whose fetch_runs row has shown no progress for "
        f"{settings.operations.stuck_after_minutes:g} min (Operations.StuckAfterMinutes), and runs launched "
        f"without the {dg.MAX_RUNTIME_SECONDS_TAG} tag that outlive their source's MaxRuntimeMinutes; marks "
        f"their rows failed so the source's queue moves again.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        engine = getattr(context.resources, recorder_key).engine
        with engine.connect() as conn:
            stuck = find_stuck_runs(conn, context.instance, datetime.now(UTC), stuck_after, limit)
        ended = []
        for run in stuck:
            action = end_stuck_run(engine, context.instance, run, context.log)
            if action is not None:
                ended.append(f"{run.source} run {run.dagster_run_id} ({run.kind}, {action})")
        if not ended:
            return dg.SkipReason("no stuck runs")
        return dg.SkipReason(f"ended {len(ended)} stuck run(s): " + "; ".join(ended))

    return _sensor
