"""Schedules skip their tick while their source is queued, running or being backfilled."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from umlmm_pipelines.ingestion.source import SOURCE_TAG
from umlmm_pipelines_tests.helpers import make_defs


def _add_run(instance, status, tags=None, job_name="ollama_ingestion", asset_selection=None):
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("umlmm_pipelines"), "__repository__"), job_name
    )
    return instance.add_run(
        dg.DagsterRun(job_name=job_name, tags=tags or {}, status=status, remote_job_origin=origin,
                      asset_selection=asset_selection)
    )


@pytest.fixture
def ollama_schedule(sqlite_url):
    return make_defs(sqlite_url).get_schedule_def("ollama_schedule")


def _tick(schedule, instance):
    return schedule.evaluate_tick(dg.build_schedule_context(instance=instance))


@pytest.mark.parametrize(
    "status", [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING],
)
def test_tick_is_skipped_while_a_run_of_the_source_is_in_flight(ollama_schedule, instance, status):
    run = _add_run(instance, status, tags={SOURCE_TAG: "ollama"})

    data = _tick(ollama_schedule, instance)

    assert data.run_requests == []
    assert f"source ollama already in flight: run {run.run_id} ({status.value})" == data.skip_message


def test_skipped_tick_logs_a_warning_naming_the_run(ollama_schedule, instance, capfd):
    run = _add_run(instance, dg.DagsterRunStatus.STARTED, tags={SOURCE_TAG: "ollama"})

    ollama_schedule(dg.build_schedule_context(instance=instance))

    warnings = [line for line in capfd.readouterr().err.splitlines() if " WARNING - tick_skipped" in line]
    assert len(warnings) == 1 and run.run_id in warnings[0] and "source=ollama" in warnings[0]


def test_tick_requests_a_tagged_run_when_the_source_is_idle(ollama_schedule, instance):
    _add_run(instance, dg.DagsterRunStatus.SUCCESS, tags={SOURCE_TAG: "ollama"})
    _add_run(instance, dg.DagsterRunStatus.FAILURE, tags={SOURCE_TAG: "ollama"})

    data = _tick(ollama_schedule, instance)

    [request] = data.run_requests
    assert request.tags[SOURCE_TAG] == "ollama"
    assert data.skip_message is None


def test_another_source_in_flight_does_not_block_the_tick(ollama_schedule, instance):
    _add_run(instance, dg.DagsterRunStatus.STARTED, tags={SOURCE_TAG: "civitai"}, job_name="civitai_ingestion")

    assert len(_tick(ollama_schedule, instance).run_requests) == 1


def test_ui_materialization_of_the_asset_blocks_the_tick_without_the_tag(ollama_schedule, instance):
    run = _add_run(instance, dg.DagsterRunStatus.STARTED, job_name="__ASSET_JOB",
                   asset_selection=frozenset({dg.AssetKey(["ollama", "models"])}))

    data = _tick(ollama_schedule, instance)

    assert data.run_requests == [] and run.run_id in data.skip_message


def test_tick_is_skipped_while_a_backfill_of_the_source_is_launching(ollama_schedule, instance):
    instance.add_backfill(
        PartitionBackfill(backfill_id="bf1", status=BulkActionStatus.REQUESTED, from_failure=False, tags={},
                          backfill_timestamp=0.0, asset_selection=[dg.AssetKey(["ollama", "models"])],
                          serialized_asset_backfill_data="{}")
    )
    assert instance.get_backfill("bf1").status == BulkActionStatus.REQUESTED

    data = _tick(ollama_schedule, instance)

    assert data.run_requests == [] and "backfill in progress: bf1" in data.skip_message


def test_schedule_shows_the_configured_and_the_translated_cron(ollama_schedule):
    assert ollama_schedule.cron_schedule == "0 0 * * *"
    assert ollama_schedule.execution_timezone == "UTC"
    assert "'0 0 0 * * ?'" in ollama_schedule.description and "'0 0 * * *'" in ollama_schedule.description
    assert ollama_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
