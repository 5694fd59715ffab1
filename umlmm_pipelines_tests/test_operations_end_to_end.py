"""Operations with the real daemon and webserver: a hung run is ended and the source's queue moves on;
freshness checks are recorded by the daemon's sensor.

The stack runs the project's dagster.yaml on a temporary DAGSTER_HOME with its catalog in SQLite
there. Ollama is served by a fake whose ``/api/show`` stops answering, so a run hangs before its
first page; ``Operations.StuckAfterMinutes`` is 15 s here so the test does not wait half an hour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from umlmm_pipelines.catalog.fetch_runs import aware
from umlmm_pipelines_tests.dagster_stack import DagsterStack, wait_for
from umlmm_pipelines_tests.fakes.ollama_server import FakeOllama, running_fake_ollama
from umlmm_pipelines_tests.helpers import fetch_runs
from umlmm_pipelines_tests.operations_helpers import insert_fetch_run

pytestmark = pytest.mark.slow

STUCK_AFTER_S = 15
YEARLY = "0 0 1 1 *"  # enabled but never ticking during the test: freshness is judged, nothing is launched


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOllama]:
    with running_fake_ollama() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fake) -> Iterator[DagsterStack]:
    home = tmp_path_factory.mktemp("dagster_home_ops")
    config = home / "umlmm.json"
    config.write_text(json.dumps({
        "JobSchedules": {"Ollama": {"CronSchedule": YEARLY, "Enabled": True},
                         "Danbooru": {"CronSchedule": YEARLY, "Enabled": True},
                         "E621": {"Enabled": False}, "CivitAI": {"Enabled": False}},
        # A hung request must hang: no read timeout to end it and no retries.
        "Sources": {"Ollama": {"BaseUrl": fake.url, "TimeoutSeconds": 600, "MaxRetries": 0}},
        "Operations": {"StuckAfterMinutes": STUCK_AFTER_S / 60, "SensorIntervalSeconds": 5},
    }))
    stack = DagsterStack(home, {"UMLMM_CONFIG": str(config)})
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture
def catalog(stack) -> str:
    return f"sqlite:///{stack.home / 'umlmm_catalog.sqlite'}"


def _row(catalog: str, run_id: str) -> dict | None:
    return next((r for r in fetch_runs(catalog) if r["dagster_run_id"] == run_id), None)


def test_a_hung_run_is_ended_by_the_stuck_run_sensor_and_the_next_queued_run_of_the_source_starts(
    stack, fake, catalog
):
    fake.state.new_digest_each_listing = True  # every model looks changed, so each one is shown...
    fake.state.show_delay_s = 600  # ...and the first /api/show never answers

    hung_id = stack.launch("ollama_ingestion")
    next_id = stack.launch("ollama_ingestion")
    wait_for(lambda: (_row(catalog, hung_id) or {}).get("status") == "running", 90, "the first run to start")
    assert stack.run(next_id).status == dg.DagsterRunStatus.QUEUED  # one run per source: it waits
    stalled_since = time.monotonic()

    failed = wait_for(lambda: (row := _row(catalog, hung_id)) and row["status"] == "failed" and row, 90,
                      "the stuck-run sensor to mark the hung run failed")
    fake.state.show_delay_s = 0  # the server recovers; the next run must get through

    waited = time.monotonic() - stalled_since
    assert STUCK_AFTER_S <= waited < STUCK_AFTER_S + 45
    assert failed["error_message"].startswith(f"ollama: run {hung_id} is stuck: no progress for ")
    assert "0 page(s) committed" in failed["error_message"]
    assert "ended by stuck_runs_sensor" in failed["error_message"]
    [hung, following] = stack.wait_finished([hung_id, next_id], timeout=120)
    assert hung.status == dg.DagsterRunStatus.CANCELED  # terminated, as the UI's Terminate button does
    messages = [r.event_log_entry.message for r in stack.instance.get_records_for_run(hung_id).records]
    assert failed["error_message"] in messages  # the reason is in the run's own log too
    assert _row(catalog, hung_id)["status"] == "failed"  # the interrupted run did not overwrite the reason

    assert following.status == dg.DagsterRunStatus.SUCCESS
    assert following.tags[dg.MAX_RUNTIME_SECONDS_TAG] == "3600"  # job tags reach GraphQL launches
    records = {r.dagster_run.run_id: r for r in stack.instance.get_run_records(
        filters=dg.RunsFilter(run_ids=[hung_id, next_id]))}
    assert records[next_id].start_time >= records[hung_id].end_time
    completed = _row(catalog, next_id)
    assert completed["status"] == "completed" and completed["records_updated"] + completed["records_created"] == 4
    assert aware(completed["started_at"]) >= aware(failed["ended_at"])


def test_the_daemon_records_failed_freshness_for_a_late_source_and_passed_for_a_fresh_one(stack, fake, catalog):
    # Danbooru's last success predates the last three yearly ticks; Ollama succeeded in the test above.
    insert_fetch_run(catalog, "danbooru", status="completed", started_at=datetime(2022, 6, 1, tzinfo=UTC),
                     ended_at=datetime(2022, 6, 1, 0, 5, tzinfo=UTC))
    fake.state.show_delay_s = 0
    if not any(r["source"] == "ollama" and r["status"] == "completed" for r in fetch_runs(catalog)):
        stack.wait_finished([stack.launch("ollama_ingestion")], timeout=120)

    def latest(source: str, asset: str):
        key = dg.AssetCheckKey(dg.AssetKey([source, asset]), "freshness")
        history = stack.instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
        return history[0] if history else None

    def recorded() -> bool:
        late, fresh = latest("danbooru", "posts"), latest("ollama", "models")
        return bool(late and fresh and late.status == AssetCheckExecutionRecordStatus.FAILED
                    and fresh.status == AssetCheckExecutionRecordStatus.SUCCEEDED
                    and "is fresh" in fresh.event.asset_check_evaluation.description)

    wait_for(recorded, 60, "the freshness sensor to record both checks")
    late = latest("danbooru", "posts").event.asset_check_evaluation
    assert late.description.startswith("danbooru is overdue: last success 2022-06-01T00:05:00+00:00")
