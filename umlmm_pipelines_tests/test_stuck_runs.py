"""The stuck-run sensor's decisions and actions, without the daemon (see test_stuck_runs_end_to_end for it)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.ingestion.assets import RECORDER_KEY
from umlmm_pipelines.operations.stuck_runs import end_stuck_run, find_stuck_runs, stuck_reason
from umlmm_pipelines_tests.helpers import make_defs
from umlmm_pipelines_tests.operations_helpers import add_run, ago, fetch_run, insert_fetch_run, now

THIRTY_MIN = 30 * 60.0


def _limits(source: str) -> int | None:
    return {"ollama": 3600, "danbooru": 14400}.get(source)


def _reason(**overrides):
    at = now()
    values = dict(source="ollama", run_id="r1", run_started_at=at - timedelta(minutes=40),
                  heartbeat_at=at - timedelta(minutes=5), pages_committed=3, has_max_runtime_tag=True, now=at,
                  stuck_after_seconds=THIRTY_MIN, max_runtime_seconds=3600)
    values.update(overrides)
    return stuck_reason(**values)


def test_a_run_with_recent_progress_is_not_stuck():
    assert _reason() is None


def test_a_run_without_progress_for_longer_than_the_limit_is_stalled_and_the_message_names_source_and_stall():
    kind, message = _reason(heartbeat_at=now() - timedelta(minutes=31))
    assert kind == "stalled"
    assert message.startswith("ollama: run r1 is stuck: no progress for 31.0 min")
    assert "3 page(s) committed" in message and "StuckAfterMinutes = 30 min" in message


def test_an_untagged_run_past_its_sources_max_runtime_is_ended_but_a_tagged_one_is_left_to_run_monitoring():
    started = now() - timedelta(minutes=61)
    kind, message = _reason(run_started_at=started, has_max_runtime_tag=False)
    assert kind == "max_runtime" and "MaxRuntimeMinutes (60 min)" in message
    assert _reason(run_started_at=started, has_max_runtime_tag=True) is None
    assert _reason(run_started_at=started, has_max_runtime_tag=False, max_runtime_seconds=None) is None


def test_only_running_rows_of_live_dagster_runs_are_found_stuck(catalog_url, instance):
    stalled = add_run(instance, "ollama", dg.DagsterRunStatus.STARTED)
    busy = add_run(instance, "danbooru", dg.DagsterRunStatus.STARTED)
    dead = add_run(instance, "e621", dg.DagsterRunStatus.FAILURE)
    ending = add_run(instance, "civitai", dg.DagsterRunStatus.CANCELING)
    waiting = add_run(instance, "ollama", dg.DagsterRunStatus.STARTED)
    stalled_row = insert_fetch_run(catalog_url, "ollama", stalled.run_id, status="running", started_at=ago(hours=1),
                                   heartbeat_at=ago(minutes=45), pages_committed=2)
    insert_fetch_run(catalog_url, "danbooru", busy.run_id, status="running", started_at=ago(hours=1),
                     heartbeat_at=ago(minutes=1))
    insert_fetch_run(catalog_url, "e621", dead.run_id, status="running", started_at=ago(hours=2),
                     heartbeat_at=ago(hours=2))  # the reconciliation sensor's business
    insert_fetch_run(catalog_url, "civitai", ending.run_id, status="running", started_at=ago(hours=2),
                     heartbeat_at=ago(hours=2))  # already being ended
    insert_fetch_run(catalog_url, "comfyui", status="running", started_at=ago(hours=2), heartbeat_at=ago(hours=2),
                     dagster_run_id="unknown-to-this-instance")  # another deployment's run
    insert_fetch_run(catalog_url, "ollama", waiting.run_id, status="queued", started_at=ago(hours=2))  # guard wait

    engine = open_catalog(catalog_url)
    try:
        with engine.connect() as conn:
            found = find_stuck_runs(conn, instance, now(), THIRTY_MIN, _limits)
    finally:
        engine.dispose()

    assert [(s.fetch_run_id, s.source, s.dagster_run_id, s.kind, s.pages_committed) for s in found] == [
        (stalled_row, "ollama", stalled.run_id, "stalled", 2)]
    assert 44 * 60 < found[0].silent_seconds < 46 * 60


def test_ending_a_stuck_run_marks_its_row_failed_first_and_ends_the_dagster_run(catalog_url, instance):
    run = add_run(instance, "ollama", dg.DagsterRunStatus.STARTED)
    row_id = insert_fetch_run(catalog_url, "ollama", run.run_id, status="running", started_at=ago(hours=1),
                              heartbeat_at=ago(minutes=45), pages_committed=1, records_created=4)
    engine = open_catalog(catalog_url)
    try:
        with engine.connect() as conn:
            [stuck] = find_stuck_runs(conn, instance, now(), THIRTY_MIN, _limits)
        action = end_stuck_run(engine, instance, stuck)
        again = end_stuck_run(engine, instance, stuck)
    finally:
        engine.dispose()

    row = fetch_run(catalog_url, row_id)
    assert row["status"] == "failed" and row["ended_at"] is not None
    assert row["error_message"] == stuck.message and "ollama" in row["error_message"]
    assert "no progress for 45" in row["error_message"]
    assert row["pages_committed"] == 1 and row["records_created"] == 4  # the committed pages' counts stay
    # No code server launched this test run, so the termination request cannot be delivered:
    # the run is reported failed instead, which frees the queue just the same.
    assert action == "reported failed"
    ended = instance.get_run_by_id(run.run_id)
    assert ended.status == dg.DagsterRunStatus.FAILURE
    messages = [r.event_log_entry.message for r in instance.get_records_for_run(run.run_id).records]
    assert stuck.message in messages
    assert again is None  # the row has ended: nothing more is done


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_the_sensor_ends_stuck_runs_with_the_configured_threshold_and_says_so(catalog_url, instance):
    defs = make_defs(catalog_url, env={"Operations__StuckAfterMinutes": "10"})
    stuck = add_run(instance, "ollama", dg.DagsterRunStatus.STARTED)
    fine = add_run(instance, "danbooru", dg.DagsterRunStatus.STARTED)
    stuck_row = insert_fetch_run(catalog_url, "ollama", stuck.run_id, status="running", started_at=ago(minutes=20),
                                 heartbeat_at=ago(minutes=11))
    fine_row = insert_fetch_run(catalog_url, "danbooru", fine.run_id, status="running", started_at=ago(minutes=20),
                                heartbeat_at=ago(minutes=9))

    sensor = defs.resolve_sensor_def("stuck_runs_sensor")
    with dg.build_sensor_context(instance=instance, resources={RECORDER_KEY: defs.resources[RECORDER_KEY]}) as ctx:
        result = sensor.evaluate_tick(ctx)

    assert result.run_requests == []
    assert result.skip_message == f"ended 1 stuck run(s): ollama run {stuck.run_id} (stalled, reported failed)"
    assert fetch_run(catalog_url, stuck_row)["status"] == "failed"
    assert fetch_run(catalog_url, fine_row)["status"] == "running"
    assert instance.get_run_by_id(fine.run_id).status == dg.DagsterRunStatus.STARTED
