"""The health report behind ``umlmm-pipelines health``: one JSON document, one verdict.

It reads what an operator would otherwise click through in the UI: the daemon heartbeats, the
reachability of Dagster's storage and of the catalog (with round-trip times), and per source the
schedule state, the last success against the source's own cron, the last run's outcome, the
queue and any stuck run. ``healthy`` is false, and ``problems`` says why, when:

- a daemon the instance needs (scheduler, sensors, run queue, run monitoring, …) has not sent a
  heartbeat for ``Operations.DaemonHeartbeatMaxAgeSeconds`` or reports errors;
- Dagster's storage or the catalog cannot be queried;
- a source is overdue (see ``operations.freshness``), its latest finished run failed, or one of
  its runs is stuck (see ``operations.stuck_runs``).

A stopped schedule is reported but is not a problem: stopping one is a decision, not a fault.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster._daemon.controller import get_daemon_statuses

from umlmm_pipelines.catalog.database import open_catalog, redact, resolve_database_url
from umlmm_pipelines.config import Settings
from umlmm_pipelines.ingestion.inflight import runs_in_flight
from umlmm_pipelines.ingestion.source import SourceSpec
from umlmm_pipelines.operations.freshness import source_freshness
from umlmm_pipelines.operations.source_status import last_runs
from umlmm_pipelines.operations.stuck_runs import StuckRun, find_stuck_runs

_ERROR_LIMIT = 500


def daemon_report(instance: dg.DagsterInstance, now: datetime, max_age_seconds: float) -> dict[str, dict[str, Any]]:
    """Every daemon this instance requires, judged the way ``dagster-daemon liveness-check`` does,
    but with our own (much shorter) tolerance than Dagster's default of 30 minutes."""
    statuses = get_daemon_statuses(
        instance, instance.get_required_daemon_types(), curr_time_seconds=now.timestamp(),
        heartbeat_interval_seconds=0, heartbeat_tolerance_seconds=max_age_seconds,
    )
    report = {}
    for daemon_type, status in sorted(statuses.items()):
        beat = status.last_heartbeat
        report[daemon_type] = {
            "healthy": bool(status.healthy),
            "last_heartbeat_at": _iso(datetime.fromtimestamp(beat.timestamp, UTC)) if beat else None,
            "age_seconds": round(now.timestamp() - beat.timestamp, 1) if beat else None,
            "errors": [_first_line(error.message) for error in (beat.errors or [])] if beat else [],
        }
    return report


def dagster_storage_report(instance: dg.DagsterInstance) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        instance.get_run_records(limit=1)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the health check
        return {"reachable": False, "error": _first_line(str(exc)), "storage": type(instance.run_storage).__name__}
    return {"reachable": True, "round_trip_ms": _ms(started), "storage": type(instance.run_storage).__name__}


def catalog_report(catalog_url: str | None) -> tuple[dict[str, Any], sa.Engine | None]:
    """Open the catalog as a run would and time a ``SELECT 1`` round trip.

    Opening applies pending migrations exactly as the next run would (idempotent, under the
    migration lock): a catalog that cannot be brought to the code's schema is not healthy.
    """
    try:
        url = resolve_database_url(catalog_url)
    except Exception as exc:  # noqa: BLE001
        return {"reachable": False, "error": str(exc)}, None
    shown = redact(url)
    try:
        engine = open_catalog(url)
        with engine.connect() as conn:
            started = time.perf_counter()
            conn.execute(sa.text("SELECT 1")).scalar_one()
            round_trip = _ms(started)
    except Exception as exc:  # noqa: BLE001
        return {"reachable": False, "url": shown, "error": scrub_password(_first_line(str(exc)), url)}, None
    return {"reachable": True, "url": shown, "round_trip_ms": round_trip}, engine


def source_report(
    conn: sa.Connection, instance: dg.DagsterInstance, spec: SourceSpec, settings: Settings, now: datetime,
    stuck: Sequence[StuckRun],
) -> dict[str, Any]:
    schedule = settings.schedules[spec.name]
    runs = last_runs(conn, spec.name)
    freshness = source_freshness(conn, instance, spec, schedule, now, runs=runs)
    in_flight = runs_in_flight(instance, spec)
    stuck_here = [s for s in stuck if s.source == spec.name]
    problems = []
    if freshness.overdue:
        problems.append(freshness.reason)
    if runs.last_run_failed:
        problems.append(f"{spec.name}: last run {runs.last_dagster_run_id} failed: "
                        f"{_first_line(runs.last_error or 'no message')}")
    problems += [s.message for s in stuck_here]
    return {
        "healthy": not problems,
        "problems": problems,
        "schedule": {"name": freshness.schedule.name, "running": freshness.schedule.running,
                     "status": freshness.schedule.status},
        "freshness": freshness.as_json(),
        "last_run": {
            "status": runs.last_status,
            "ended_at": _iso(runs.last_ended_at),
            "dagster_run_id": runs.last_dagster_run_id,
            "error_message": _first_line(runs.last_error) if runs.last_error else None,
        },
        "last_run_failed": runs.last_run_failed,
        "runs_queued": sum(1 for r in in_flight if r.status == dg.DagsterRunStatus.QUEUED),
        "runs_in_flight": len(in_flight),
        "max_runtime_seconds": settings.max_runtime_seconds(spec.name),
        "stuck_runs": [s.as_json() for s in stuck_here],
    }


def health_report(
    instance: dg.DagsterInstance | None,
    settings: Settings,
    specs: Sequence[SourceSpec],
    catalog_url: str | None = None,
    instance_error: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole report; ``instance`` is None when the Dagster instance could not be loaded."""
    now = now or datetime.now(UTC)
    ops = settings.operations
    problems: list[str] = []
    report: dict[str, Any] = {"checked_at": _iso(now)}

    if instance is None:
        report["daemons"] = {}
        report["dagster_storage"] = {"reachable": False, "error": instance_error or "no Dagster instance"}
    else:
        report["dagster_storage"] = dagster_storage_report(instance)
        if report["dagster_storage"]["reachable"]:
            report["daemons"] = daemon_report(instance, now, ops.daemon_heartbeat_max_age_seconds)
        else:
            report["daemons"] = {}
    if not report["dagster_storage"]["reachable"]:
        problems.append(f"Dagster storage is not reachable: {report['dagster_storage']['error']}")
    for daemon_type, daemon in report["daemons"].items():
        if not daemon["healthy"]:
            if daemon["last_heartbeat_at"] is None:
                problems.append(f"daemon {daemon_type}: no heartbeat (is `dagster-daemon run` running?)")
            elif daemon["errors"]:
                problems.append(f"daemon {daemon_type}: reports errors: {daemon['errors'][0]}")
            else:
                problems.append(f"daemon {daemon_type}: last heartbeat {daemon['age_seconds']:.0f} s ago "
                                f"(limit {ops.daemon_heartbeat_max_age_seconds:g} s)")

    catalog, engine = catalog_report(catalog_url)
    report["catalog"] = catalog
    if not catalog["reachable"]:
        problems.append(f"catalog is not reachable: {catalog['error']}")

    report["sources"] = {}
    if engine is not None and instance is not None and report["dagster_storage"]["reachable"]:
        try:
            with engine.connect() as conn:
                stuck = find_stuck_runs(conn, instance, now, ops.stuck_after_seconds, settings.max_runtime_seconds)
                for spec in specs:
                    source = source_report(conn, instance, spec, settings, now, stuck)
                    report["sources"][spec.name] = source
                    problems += source["problems"]
        finally:
            engine.dispose()
    elif engine is not None:
        engine.dispose()
    if not report["sources"]:
        problems.append("sources not checked: both Dagster's storage and the catalog are needed")

    report["healthy"] = not problems
    report["problems"] = problems
    return {"healthy": report.pop("healthy"), "problems": report.pop("problems"), **report}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment is not None else None


def _first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line[:_ERROR_LIMIT]


def scrub_password(text: str, url: str | None) -> str:
    """Driver errors may echo parts of the URL; never let its password through."""
    password = sa.make_url(url).password if url else None
    return text.replace(str(password), "***") if password else text
