"""Per-source freshness: is the source's last success more than two of its own cron intervals old?

One rule serves the ``health`` command and the UI. In the UI every source asset has an asset
check named ``freshness``; the ``source_freshness_sensor`` evaluates it for every source and
records the result without launching a run, so a late source turns red on its asset (and in the
asset catalog) within a sensor interval. The check can also be executed from the UI by hand.

The rule: a source is *overdue* when its schedule is running and no run has completed since the
third-latest tick of its cron, i.e. the runs of two whole intervals are missing. A run from any
launcher counts (schedule, UI, backfill): what matters is that the catalog is current.
"""

# No "from __future__ import annotations" here: Dagster inspects the real type of `context`.

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster._utils.schedules import reverse_cron_string_iterator

from umlmm_pipelines.config import ScheduleSettings, Settings
from umlmm_pipelines.ingestion.logfmt import kv
from umlmm_pipelines.ingestion.source import SourceSpec
from umlmm_pipelines.operations.source_status import LastRuns, ScheduleState, last_runs, schedule_state

FRESHNESS_CHECK_NAME = "freshness"
FRESHNESS_SENSOR_NAME = "source_freshness_sensor"
#: How many whole cron intervals may pass without a success before a source is overdue.
OVERDUE_AFTER_INTERVALS = 2


@dataclass(frozen=True)
class Freshness:
    """The freshness verdict for one source, with everything needed to explain it."""

    source: str
    cron: str
    timezone: str
    schedule: ScheduleState
    last_success_at: datetime | None
    #: A success after this instant keeps the source fresh (the third-latest cron tick).
    deadline: datetime
    overdue: bool
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "timezone": self.timezone,
            "last_success_at": _iso(self.last_success_at),
            "fresh_if_success_after": _iso(self.deadline),
            "overdue": self.overdue,
            "reason": self.reason,
        }

    def check_metadata(self) -> dict[str, dg.MetadataValue]:
        metadata: dict[str, dg.MetadataValue] = {
            "cron": dg.MetadataValue.text(f"{self.cron} ({self.timezone})"),
            "schedule_status": dg.MetadataValue.text(self.schedule.status),
            "fresh_if_success_after": dg.MetadataValue.timestamp(self.deadline),
        }
        if self.last_success_at is not None:
            metadata["last_success_at"] = dg.MetadataValue.timestamp(self.last_success_at)
        return metadata


def freshness_deadline(cron: str, timezone: str, now: datetime) -> datetime:
    """The third-latest tick of ``cron`` at or before ``now``: two whole intervals before the latest."""
    ticks = reverse_cron_string_iterator(now.timestamp(), cron, timezone)
    return next(itertools.islice(ticks, OVERDUE_AFTER_INTERVALS, None)).astimezone(UTC)


def evaluate_freshness(
    source: str, schedule: ScheduleSettings, state: ScheduleState, last_success_at: datetime | None, now: datetime
) -> Freshness:
    """The verdict from the facts alone (no I/O), so the rule is tested directly."""
    deadline = freshness_deadline(schedule.cron, schedule.timezone, now)

    def verdict(overdue: bool, reason: str) -> Freshness:
        return Freshness(source, schedule.cron, schedule.timezone, state, last_success_at, deadline, overdue, reason)

    missed = f"no successful run since {_iso(deadline)}: the runs of {OVERDUE_AFTER_INTERVALS} intervals of " \
             f"'{schedule.cron}' ({schedule.timezone}) are missing"
    if not state.running:
        return verdict(False, f"schedule {state.name} is stopped; {source} is not expected to be fresh")
    if last_success_at is not None:
        if last_success_at < deadline:
            return verdict(True, f"{source} is overdue: last success {_iso(last_success_at)}, {missed}")
        return verdict(False, f"{source} is fresh: last success {_iso(last_success_at)}")
    if state.started_at is not None and state.started_at < deadline:
        return verdict(True, f"{source} is overdue: never succeeded since its schedule started at "
                             f"{_iso(state.started_at)}; {missed}")
    return verdict(False, f"{source} has not succeeded yet; its schedule started less than "
                          f"{OVERDUE_AFTER_INTERVALS} intervals ago (or was never started by the daemon)")


def source_freshness(
    conn: sa.Connection, instance: dg.DagsterInstance, spec: SourceSpec, schedule: ScheduleSettings, now: datetime,
    runs: LastRuns | None = None,
) -> Freshness:
    runs = runs if runs is not None else last_runs(conn, spec.name)
    state = schedule_state(instance, spec.schedule_name, schedule)
    return evaluate_freshness(spec.name, schedule, state, runs.last_success_at, now)


def check_evaluation(spec: SourceSpec, freshness: Freshness) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=spec.asset_key,
        check_name=FRESHNESS_CHECK_NAME,
        passed=not freshness.overdue,
        severity=dg.AssetCheckSeverity.ERROR,
        description=freshness.reason,
        metadata=freshness.check_metadata(),
    )


def build_freshness_check(spec: SourceSpec, schedule: ScheduleSettings, recorder_key: str) -> dg.AssetChecksDefinition:
    """The ``freshness`` check on the source's asset; the sensor records it, a user may run it."""

    @dg.asset_check(
        asset=spec.asset_key,
        name=FRESHNESS_CHECK_NAME,
        description=f"Fails when {spec.display_name} has had no successful run for {OVERDUE_AFTER_INTERVALS} "
        f"intervals of its schedule ('{schedule.cron}', {schedule.timezone}). Evaluated by "
        f"{FRESHNESS_SENSOR_NAME}.",
        required_resource_keys={recorder_key},
        blocking=False,
    )
    def _freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        engine = getattr(context.resources, recorder_key).engine
        with engine.connect() as conn:
            freshness = source_freshness(conn, context.instance, spec, schedule, datetime.now(UTC))
        return dg.AssetCheckResult(passed=not freshness.overdue, severity=dg.AssetCheckSeverity.ERROR,
                                   description=freshness.reason, metadata=freshness.check_metadata())

    return _freshness


def build_freshness_sensor(specs: Sequence[SourceSpec], settings: Settings, recorder_key: str) -> dg.SensorDefinition:
    """Records every source's freshness check without a run.

    A result is written when it changes (fresh/overdue, a new success, the schedule started or
    stopped) or when the last one is ``FreshnessReemitMinutes`` old, not on every tick: each
    evaluation is an event in Dagster's event log.
    """
    reemit_seconds = settings.operations.freshness_reemit_minutes * 60

    @dg.sensor(
        name=FRESHNESS_SENSOR_NAME,
        minimum_interval_seconds=settings.operations.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={recorder_key},
        description=f"Evaluates the freshness check of every source asset: failed when a source's last success is "
        f"older than {OVERDUE_AFTER_INTERVALS} intervals of its cron.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = datetime.now(UTC)
        previous: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        engine = getattr(context.resources, recorder_key).engine
        events: list[dg.AssetCheckEvaluation] = []
        cursor: dict[str, Any] = {}
        with engine.connect() as conn:
            for spec in specs:
                freshness = source_freshness(conn, context.instance, spec, settings.schedules[spec.name], now)
                signature = [freshness.overdue, _iso(freshness.last_success_at), freshness.schedule.running]
                before = previous.get(spec.name)
                if before and before["signature"] == signature and now.timestamp() - before["at"] < reemit_seconds:
                    cursor[spec.name] = before
                    continue
                events.append(check_evaluation(spec, freshness))
                cursor[spec.name] = {"signature": signature, "at": now.timestamp()}
                if freshness.overdue:
                    context.log.warning(kv("source_overdue", source=spec.name, reason=freshness.reason))
        return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True))

    return _sensor


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment is not None else None
