"""Per-source freshness: the rule, the sensor that records the asset checks, and the check itself."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.remote_origin import RemoteInstigatorOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from umlmm_pipelines.config import ScheduleSettings
from umlmm_pipelines.ingestion.assets import RECORDER_KEY
from umlmm_pipelines.operations.freshness import evaluate_freshness, freshness_deadline
from umlmm_pipelines.operations.source_status import ScheduleState
from umlmm_pipelines_tests.helpers import make_defs
from umlmm_pipelines_tests.operations_helpers import ago, insert_fetch_run, repository_origin

EVERY_4H = ScheduleSettings(source="danbooru", cron="0 */4 * * *", written_as="0 0 */4 * * ?", description="",
                            enabled=True, timezone="UTC")
NOON_30 = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)
RUNNING = ScheduleState("danbooru_schedule", True, "DEFAULT_RUNNING", None)


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 26, hour, minute, tzinfo=UTC)


def test_the_deadline_is_two_whole_intervals_before_the_latest_tick():
    assert freshness_deadline("0 */4 * * *", "UTC", NOON_30) == _at(4)
    assert freshness_deadline("0 */4 * * *", "UTC", _at(12)) == _at(4)  # a tick at `now` counts
    # Daily at midnight Berlin time: ticks at 23:00 UTC in winter.
    assert freshness_deadline("0 0 * * *", "Europe/Berlin", NOON_30) == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


def test_a_success_after_the_deadline_is_fresh_and_one_before_it_is_overdue():
    fresh = evaluate_freshness("danbooru", EVERY_4H, RUNNING, _at(4, 5), NOON_30)
    assert not fresh.overdue and fresh.reason == "danbooru is fresh: last success 2026-11-26T04:05:00+00:00"
    late = evaluate_freshness("danbooru", EVERY_4H, RUNNING, _at(3, 59), NOON_30)
    assert late.overdue
    assert late.reason.startswith("danbooru is overdue: last success 2026-11-26T03:59:00+00:00, no successful run "
                                  "since 2026-11-26T04:00:00+00:00")


def test_a_stopped_schedule_is_never_overdue():
    stopped = ScheduleState("danbooru_schedule", False, "STOPPED", None)
    verdict = evaluate_freshness("danbooru", EVERY_4H, stopped, _at(0), NOON_30)
    assert not verdict.overdue and "is stopped" in verdict.reason


def test_a_source_that_never_succeeded_is_overdue_only_once_its_schedule_has_run_two_intervals():
    long_ago = ScheduleState("danbooru_schedule", True, "RUNNING", _at(1))
    recently = ScheduleState("danbooru_schedule", True, "RUNNING", _at(9))
    assert evaluate_freshness("danbooru", EVERY_4H, long_ago, None, NOON_30).overdue
    assert not evaluate_freshness("danbooru", EVERY_4H, recently, None, NOON_30).overdue
    assert not evaluate_freshness("danbooru", EVERY_4H, RUNNING, None, NOON_30).overdue  # start unknown


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None):
    """Evaluate the sensor and store its check results as the sensor daemon does."""
    sensor = defs.resolve_sensor_def("source_freshness_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={RECORDER_KEY: defs.resources[RECORDER_KEY]}) as ctx:
        data = sensor.evaluate_tick(ctx)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return data


def _latest(instance: dg.DagsterInstance, source: str, asset: str):
    key = dg.AssetCheckKey(dg.AssetKey([source, asset]), "freshness")
    return instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]


def test_the_sensor_records_a_failed_check_for_a_late_source_and_a_passed_one_for_a_fresh_source(
    catalog_url, instance
):
    defs = make_defs(catalog_url)
    # Ollama runs daily: a success three days ago misses two intervals. Danbooru (every 4 h) ran 10 min ago.
    insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(days=3, minutes=5),
                     ended_at=ago(days=3))
    insert_fetch_run(catalog_url, "danbooru", status="completed", started_at=ago(minutes=15), ended_at=ago(minutes=10))
    insert_fetch_run(catalog_url, "danbooru", status="failed", started_at=ago(days=1), ended_at=ago(days=1))

    data = _tick(defs, instance)

    assert sorted(e.asset_key.path[0] for e in data.asset_events) == ["civitai", "comfyui", "danbooru", "e621",
                                                                      "ollama"]
    late = _latest(instance, "ollama", "models")
    assert late.status == AssetCheckExecutionRecordStatus.FAILED
    evaluation = late.event.asset_check_evaluation
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR and "ollama is overdue" in evaluation.description
    assert evaluation.metadata["cron"].value == "0 0 * * * (UTC)"
    fresh = _latest(instance, "danbooru", "posts")
    assert fresh.status == AssetCheckExecutionRecordStatus.SUCCEEDED
    assert "danbooru is fresh" in fresh.event.asset_check_evaluation.description
    # never ran, but its schedule was not started by a daemon two intervals ago: not late yet
    assert _latest(instance, "comfyui", "workflows").status == AssetCheckExecutionRecordStatus.SUCCEEDED


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_the_sensor_writes_a_result_again_only_when_it_changes(catalog_url, instance):
    defs = make_defs(catalog_url)
    insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(days=3, minutes=5),
                     ended_at=ago(days=3))
    first = _tick(defs, instance)
    unchanged = _tick(defs, instance, cursor=first.cursor)
    insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(minutes=2), ended_at=ago(minutes=1))
    recovered = _tick(defs, instance, cursor=unchanged.cursor)

    assert len(first.asset_events) == 5
    assert unchanged.asset_events == []
    assert [(e.asset_key.path[0], e.passed) for e in recovered.asset_events] == [("ollama", True)]
    assert _latest(instance, "ollama", "models").status == AssetCheckExecutionRecordStatus.SUCCEEDED


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_schedule_started_long_ago_without_any_success_fails_its_check(catalog_url, instance):
    defs = make_defs(catalog_url)
    started = ago(days=2).timestamp()
    instance.add_instigator_state(InstigatorState(
        RemoteInstigatorOrigin(repository_origin(), "e621_schedule"), InstigatorType.SCHEDULE,
        InstigatorStatus.RUNNING, ScheduleInstigatorData("0 */4 * * *", start_timestamp=started)))

    _tick(defs, instance)

    record = _latest(instance, "e621", "posts")
    assert record.status == AssetCheckExecutionRecordStatus.FAILED
    assert "never succeeded since its schedule started" in record.event.asset_check_evaluation.description


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_the_check_runs_from_the_ui_like_any_asset_check(catalog_url, instance):
    defs = make_defs(catalog_url)
    key = dg.AssetCheckKey(dg.AssetKey(["ollama", "models"]), "freshness")
    insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(days=3, minutes=5),
                     ended_at=ago(days=3))
    [check] = [c for c in defs.asset_checks if key in c.check_keys]
    asset = next(a for a in defs.assets if getattr(a, "key", None) == key.asset_key)

    result = dg.materialize([asset, check], selection=dg.AssetSelection.checks(key), instance=instance,
                            resources={RECORDER_KEY: defs.resources[RECORDER_KEY]})

    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and "ollama is overdue" in evaluation.description
    assert result.get_asset_materialization_events() == []  # the check alone: nothing was ingested


def test_source_jobs_do_not_run_the_freshness_check_as_a_step():
    defs = make_defs("sqlite://")
    job = defs.resolve_job_def("ollama_ingestion")
    assert [node.name for node in job.graph.node_defs] == ["ollama__models"]
