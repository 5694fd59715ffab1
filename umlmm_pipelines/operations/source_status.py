"""What the catalog and Dagster's storage say about one source right now.

The health report, the freshness checks and the metrics all start from these few facts: the
source's last successful run (from ``fetch_runs``, which every run writes whatever launched it),
its latest finished run, and whether its schedule is running in this Dagster instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa
from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType

from umlmm_pipelines.catalog.fetch_runs import aware
from umlmm_pipelines.catalog.tables import fetch_runs
from umlmm_pipelines.config import ScheduleSettings

#: The code location name (pyproject ``[tool.dagster]``, workspace.yaml); a schedule state of
#: this location wins over one of the same name left by another location.
CODE_LOCATION = "umlmm_pipelines"
FINISHED_ROW_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class LastRuns:
    """A source's last success and its latest finished run, from fetch_runs."""

    last_success_at: datetime | None
    last_status: str | None
    last_ended_at: datetime | None
    last_dagster_run_id: str | None
    last_error: str | None

    @property
    def last_run_failed(self) -> bool:
        return self.last_status == "failed"


def last_runs(conn: sa.Connection, source: str) -> LastRuns:
    success = conn.execute(
        sa.select(sa.func.max(fetch_runs.c.ended_at))
        .where(fetch_runs.c.source == source, fetch_runs.c.status == "completed")
    ).scalar_one_or_none()
    latest = conn.execute(
        sa.select(fetch_runs.c.status, fetch_runs.c.ended_at, fetch_runs.c.dagster_run_id, fetch_runs.c.error_message)
        .where(fetch_runs.c.source == source, fetch_runs.c.status.in_(FINISHED_ROW_STATUSES),
               fetch_runs.c.ended_at.is_not(None))
        .order_by(fetch_runs.c.ended_at.desc(), fetch_runs.c.id.desc())
        .limit(1)
    ).first()
    return LastRuns(
        last_success_at=aware(success) if success is not None else None,
        last_status=latest.status if latest else None,
        last_ended_at=aware(latest.ended_at) if latest else None,
        last_dagster_run_id=latest.dagster_run_id if latest else None,
        last_error=latest.error_message if latest else None,
    )


@dataclass(frozen=True)
class ScheduleState:
    """Whether a source's schedule runs in this instance, as the UI would show it."""

    name: str
    running: bool
    #: "RUNNING"/"STOPPED" when set in the UI or CLI, else "DEFAULT_RUNNING"/"DEFAULT_STOPPED" from the code.
    status: str
    #: When the schedule was last started (known once the daemon or a user has stored its state).
    started_at: datetime | None


def schedule_state(instance: dg.DagsterInstance, schedule_name: str, schedule: ScheduleSettings) -> ScheduleState:
    """The stored state of the schedule if a user changed it, else its default from the config.

    A state stored as ``DECLARED_IN_CODE`` follows the code, exactly as Dagster itself reads it.
    """
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
              if s.instigator_name == schedule_name]
    state = _preferred(states)
    started = None
    if state is not None and state.instigator_data is not None:
        timestamp = getattr(state.instigator_data, "start_timestamp", None)
        started = datetime.fromtimestamp(timestamp, UTC) if timestamp else None
    if state is not None and state.status in (InstigatorStatus.RUNNING, InstigatorStatus.STOPPED):
        return ScheduleState(schedule_name, state.status == InstigatorStatus.RUNNING, state.status.value, started)
    default = "DEFAULT_RUNNING" if schedule.enabled else "DEFAULT_STOPPED"
    return ScheduleState(schedule_name, schedule.enabled, default, started)


def _preferred(states: list[InstigatorState]) -> InstigatorState | None:
    ours = [s for s in states if s.origin.repository_origin.code_location_origin.location_name == CODE_LOCATION]
    candidates = ours or states
    return candidates[0] if candidates else None
