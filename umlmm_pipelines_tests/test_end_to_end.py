"""End to end with the real daemon and webserver: queue, schedule ticks, termination, kills.

These start ``dagster-webserver`` and ``dagster-daemon run`` as subprocesses on a temporary
DAGSTER_HOME with the project's own dagster.yaml, launch over GraphQL as the UI does, and read
the catalog's fetch_runs rows and Dagster's run storage side by side.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import date

import dagster as dg
import pytest

from umlmm_pipelines.catalog.fetch_runs import aware
from umlmm_pipelines_tests.dagster_stack import DagsterStack, wait_for
from umlmm_pipelines_tests.fakes.booru_server import (
    FakeBooru,
    running_fake_danbooru,
    running_fake_e621,
    synthetic_danbooru_state,
    synthetic_e621_state,
)
from umlmm_pipelines_tests.fakes.ollama_server import FakeOllama, running_fake_ollama
from umlmm_pipelines_tests.helpers import fetch_runs, rows

pytestmark = pytest.mark.slow

BOORU_DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
BOORU_POSTS = 300


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOllama, FakeOllama]]:
    with running_fake_ollama() as first, running_fake_ollama() as second:
        yield first, second


@pytest.fixture(scope="module")
def boorus() -> Iterator[tuple[FakeBooru, FakeBooru]]:
    danbooru = synthetic_danbooru_state(BOORU_POSTS, BOORU_DAYS[0], lazy=False)
    e621 = synthetic_e621_state(BOORU_POSTS, BOORU_DAYS[0], lazy=False)
    for seed, day in enumerate(BOORU_DAYS[1:], start=1):
        danbooru.add_synthetic_posts(BOORU_POSTS, day, seed=seed)
        e621.add_synthetic_posts(BOORU_POSTS, day, seed=seed)
    with running_fake_danbooru(danbooru) as first, running_fake_e621(e621) as second:
        yield first, second


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fakes, boorus) -> Iterator[DagsterStack]:
    home = tmp_path_factory.mktemp("dagster_home")
    config = home / "umlmm.json"
    booru = {"StartDate": "2023-12-01", "BackoffSeconds": 0.1}
    config.write_text(json.dumps({
        # every minute (Quartz, as the seed wrote it); off until a test turns it on
        "JobSchedules": {"Ollama": {"CronSchedule": "0 * * * * ?", "Enabled": False},
                         "Danbooru": {"Enabled": False}, "E621": {"Enabled": False},
                         "CivitAI": {"Enabled": False},  # on by default; would call civitai.com at 0/6/12/18h
                         "ComfyUI": {"Enabled": False}},
        "Sources": {
            "Ollama": {"BaseUrl": f"{fakes[0].url},{fakes[1].url}", "BackoffSeconds": 0.1},
            "Danbooru": {**booru, "BaseUrl": boorus[0].url, "RequestsPerSecond": 0, "PageSize": 50,
                         "BackfillDaysPerRun": 1},
            "E621": {**booru, "BaseUrl": boorus[1].url, "RequestsPerSecond": 2, "BackfillDaysPerRun": 7},
        },
    }))
    stack = DagsterStack(home, {"UMLMM_CONFIG": str(config)})
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture
def catalog(stack) -> str:
    return f"sqlite:///{stack.home / 'umlmm_catalog.sqlite'}"


@pytest.fixture(autouse=True)
def fast_fakes(fakes, boorus):
    for fake in fakes:
        fake.state.show_delay_s = 0.0
        fake.state.new_digest_each_listing = False
    for booru in boorus:
        booru.state.delay_s = 0.0


def _wait_row(catalog: str, run_id: str, status: str, timeout: float) -> dict:
    """The run's fetch_runs row once it has the given status."""
    return wait_for(lambda: next((r for r in fetch_runs(catalog) if r["dagster_run_id"] == run_id
                                  and r["status"] == status), None), timeout, f"run {run_id} to record {status}")


def _hang_second_host(fakes) -> None:
    """The first host's page commits at once; the second host then hangs in /api/show."""
    second = fakes[1]
    second.state.new_digest_each_listing = True
    second.state.show_delay_s = 120


def _intervals_disjoint(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return all(end <= next_start for (_, end), (next_start, _) in zip(ordered, ordered[1:], strict=False))


def test_racing_launches_of_one_source_never_overlap_while_other_sources_run_alongside(
    stack, fakes, boorus, catalog
):
    first, _ = fakes
    first.state.new_digest_each_listing = True
    first.state.show_delay_s = 0.5
    boorus[0].state.delay_s = 0.3  # a Danbooru day of seven requests: about two seconds

    ollama_runs = [stack.launch("ollama_ingestion") for _ in range(5)]
    danbooru_run = stack.launch("danbooru_ingestion", tags={"dagster/partition": BOORU_DAYS[2]})
    finished = stack.wait_finished([*ollama_runs, danbooru_run], timeout=240)

    assert [r.status for r in finished] == [dg.DagsterRunStatus.SUCCESS] * 6
    records = {r.dagster_run.run_id: r for r in stack.instance.get_run_records(
        filters=dg.RunsFilter(run_ids=[*ollama_runs, danbooru_run]))}
    # Dagster's queue kept the five apart...
    assert _intervals_disjoint([(records[r].start_time, records[r].end_time) for r in ollama_runs])
    # ...and so do the catalog's own timestamps.
    rows = {row["dagster_run_id"]: row for row in fetch_runs(catalog)}
    spans = [(aware(rows[r]["started_at"]).timestamp(), aware(rows[r]["ended_at"]).timestamp()) for r in ollama_runs]
    assert _intervals_disjoint(spans)
    assert all(rows[r]["status"] == "completed" and rows[r]["records_updated"] + rows[r]["records_created"] >= 4
               for r in ollama_runs)
    # A different source was not held back by the queue: Danbooru's run was in progress while an
    # Ollama run was (Dagster's spans: the catalog's are shorter than a run-worker start, so two
    # short ingestions may fall between each other's rows even when their runs overlap).
    danbooru = rows[danbooru_run]
    assert danbooru["status"] == "completed" and danbooru["records_created"] == BOORU_POSTS
    d_start, d_end = records[danbooru_run].start_time, records[danbooru_run].end_time
    assert any(records[r].start_time < d_end and d_start < records[r].end_time for r in ollama_runs)


def test_ui_materializations_without_the_source_tag_also_run_one_at_a_time(stack, fakes, catalog):
    first, _ = fakes
    first.state.new_digest_each_listing = True
    first.state.show_delay_s = 0.5

    # The UI's "Materialize" button launches the implicit asset job, which carries no source tag.
    # The first run goes alone: in the daemon's first seconds source_pools_sensor may not have
    # given the pool its limit yet, and Dagster would create it only in the queue pass that sees
    # the pool, without holding that pass's runs; the two launched together afterwards are held apart.
    run_ids = [stack.launch("__ASSET_JOB", asset_selection=[["ollama", "models"]])]
    wait_for(lambda: stack.run(run_ids[0]).status != dg.DagsterRunStatus.QUEUED, 60, "the first run to leave the queue")
    run_ids += [stack.launch("__ASSET_JOB", asset_selection=[["ollama", "models"]]) for _ in range(2)]
    finished = stack.wait_finished(run_ids, timeout=180)

    assert [r.status for r in finished] == [dg.DagsterRunStatus.SUCCESS] * 3
    assert all("umlmm/source" not in r.tags for r in finished)
    records = stack.instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))
    assert _intervals_disjoint([(r.start_time, r.end_time) for r in records])
    rows = [r for r in fetch_runs(catalog) if r["dagster_run_id"] in run_ids]
    assert [r["status"] for r in rows] == ["completed"] * 3


def test_schedule_tick_launches_then_an_overlapping_tick_is_skipped_and_a_terminated_run_is_cancelled(
    stack, fakes, catalog
):
    stack.start_schedule("ollama_schedule")
    launched = wait_for(lambda: [t for t in stack.ticks("ollama_schedule") if t["runIds"]], 75,
                        "a schedule tick that launches a run")
    [scheduled_run_id] = launched[0]["runIds"]
    [scheduled] = stack.wait_finished([scheduled_run_id])
    assert scheduled.status == dg.DagsterRunStatus.SUCCESS
    assert scheduled.tags["umlmm/source"] == "ollama" and scheduled.tags["dagster/schedule_name"] == "ollama_schedule"
    assert next(r for r in fetch_runs(catalog) if r["dagster_run_id"] == scheduled_run_id)["status"] == "completed"

    _hang_second_host(fakes)
    slow_run_id = stack.launch("ollama_ingestion")
    wait_for(lambda: stack.run(slow_run_id).status == dg.DagsterRunStatus.STARTED, 60, "the slow run to start")
    tick_seen = {t["tickId"] for t in stack.ticks("ollama_schedule")}
    skipped = wait_for(lambda: [t for t in stack.ticks("ollama_schedule")
                                if t["tickId"] not in tick_seen and t["status"] == "SKIPPED"], 75,
                       "the next tick to be skipped")
    assert f"run {slow_run_id}" in skipped[0]["skipReason"]
    assert not skipped[0]["runIds"]

    stack.client.terminate_run(slow_run_id)
    terminated_at = time.monotonic()
    row = _wait_row(catalog, slow_run_id, "cancelled", 30)
    assert time.monotonic() - terminated_at < 10
    assert row["pages_committed"] == 1 and row["records_fetched"] == 4  # the first host's page is kept
    assert stack.wait_finished([slow_run_id])[0].status == dg.DagsterRunStatus.CANCELED


def test_killed_run_worker_leaves_a_failed_row_with_the_reason(stack, fakes, catalog):
    _hang_second_host(fakes)
    run_id = stack.launch("ollama_ingestion")
    pid = stack.run_worker_pid(run_id)
    wait_for(lambda: any(r["dagster_run_id"] == run_id and r["status"] == "running" for r in fetch_runs(catalog)),
             60, "the run to take the source guard")

    os.kill(pid, signal.SIGKILL)

    assert stack.wait_finished([run_id], timeout=90)[0].status == dg.DagsterRunStatus.FAILURE
    row = _wait_row(catalog, run_id, "failed", 120)  # closed by the reconciliation sensor
    assert f"run {run_id} ended FAILURE without recording its final status" in row["error_message"]
    assert "signal 9" in row["error_message"] or "SIGKILL" in row["error_message"]


def test_sigterm_to_the_run_worker_stops_at_a_page_boundary_and_records_cancelled(stack, fakes, catalog):
    _hang_second_host(fakes)
    run_id = stack.launch("ollama_ingestion")
    pid = stack.run_worker_pid(run_id)
    wait_for(lambda: any(r["dagster_run_id"] == run_id and r["pages_committed"] == 1 for r in fetch_runs(catalog)),
             60, "the first host's page to commit")

    os.kill(pid, signal.SIGTERM)
    sent_at = time.monotonic()

    row = _wait_row(catalog, run_id, "cancelled", 30)
    assert time.monotonic() - sent_at < 10
    assert row["pages_committed"] == 1 and row["records_fetched"] == 4
    # Dagster itself calls a signal that no user asked for a failure; the catalog says what happened.
    assert stack.wait_finished([run_id])[0].status == dg.DagsterRunStatus.FAILURE


def test_ui_lists_each_source_with_its_job_schedule_cron_and_description(stack):
    data = stack.graphql("""{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
        jobs { name } schedules { name cronSchedule executionTimezone description }
        assetNodes { assetKey { path } } sensors { name } } } } }""")
    [repo] = data["repositoriesOrError"]["nodes"]

    sources = ["civitai", "comfyui", "danbooru", "e621", "ollama"]
    assert repo["location"]["name"] == "umlmm_pipelines"
    assert {f"{s}_ingestion" for s in sources} <= {j["name"] for j in repo["jobs"]}
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert sorted(schedules) == [*(f"{s}_schedule" for s in sources), "operations_metrics_schedule"]
    assert schedules["ollama_schedule"]["cronSchedule"] == "* * * * *"  # from the test's UMLMM_CONFIG
    assert schedules["civitai_schedule"]["cronSchedule"] == "0 */6 * * *"
    assert "'0 0 */6 * * ?'" in schedules["civitai_schedule"]["description"]
    assert {s["executionTimezone"] for s in repo["schedules"]} == {"UTC"}
    assert sorted(tuple(a["assetKey"]["path"]) for a in repo["assetNodes"]) == [
        ("catalog", "model_links"), ("civitai", "models"), ("comfyui", "workflows"), ("danbooru", "posts"),
        ("e621", "posts"), ("ollama", "models"), ("operations", "metrics")]
    assert sorted(s["name"] for s in repo["sensors"]) == [
        "fetch_runs_reconciliation_sensor", "model_links_automation", "source_freshness_sensor", "source_pools_sensor",
        "stuck_runs_sensor"]


def test_terminated_partition_run_keeps_its_pages_and_the_next_run_resumes_without_duplicates_or_gaps(
    stack, boorus, catalog
):
    danbooru = boorus[0]
    danbooru.state.delay_s = 0.5  # 50 posts a page: six pages, slow enough to terminate mid-way
    day = BOORU_DAYS[0]
    run_id = stack.launch("danbooru_ingestion", tags={"dagster/partition": day})
    wait_for(lambda: any(r["dagster_run_id"] == run_id and r["pages_committed"] >= 2 for r in fetch_runs(catalog)),
             60, "two committed pages")

    stack.client.terminate_run(run_id)

    cancelled = _wait_row(catalog, run_id, "cancelled", 30)
    committed = cancelled["records_created"]
    assert 100 <= committed < BOORU_POSTS
    danbooru.state.delay_s = 0
    resumed_id = stack.launch("danbooru_ingestion", tags={"dagster/partition": day})
    [resumed] = stack.wait_finished([resumed_id])
    assert resumed.status == dg.DagsterRunStatus.SUCCESS
    row = _wait_row(catalog, resumed_id, "completed", 10)
    assert row["records_created"] == BOORU_POSTS - committed and row["records_updated"] == 0
    query = "SELECT post_id FROM posts WHERE source = 'danbooru' AND upload_date = :day"
    ids = [r["post_id"] for r in rows(catalog, query, day=date.fromisoformat(day))]
    assert len(ids) == len(set(ids)) == BOORU_POSTS


def test_backfill_runs_one_run_at_a_time_per_source_or_in_chunks_by_policy(stack, boorus, catalog):
    # Both sources' backfills at once (the backfill daemon works every 30 s, so one after the
    # other would only add waiting): one source's runs never overlap, the two sources' may.
    danbooru_backfill, e621_backfill = (
        stack.launch_backfill(assetSelection=[{"path": [source, "posts"]}], partitionNames=BOORU_DAYS,
                              title=f"{source} e2e")
        for source in ("danbooru", "e621"))
    # Danbooru is configured with one day per run: three runs, one at a time.
    danbooru_runs = stack.wait_backfill(danbooru_backfill)
    assert len(danbooru_runs) == 3 and {r.status for r in danbooru_runs} == {dg.DagsterRunStatus.SUCCESS}
    records = stack.instance.get_run_records(filters=dg.RunsFilter(run_ids=[r.run_id for r in danbooru_runs]))
    assert _intervals_disjoint([(r.start_time, r.end_time) for r in records])
    # e621 keeps the default policy, seven days per run: the three days arrive in one run.
    [e621_run] = stack.wait_backfill(e621_backfill)
    assert e621_run.status == dg.DagsterRunStatus.SUCCESS
    [row] = [r for r in fetch_runs(catalog, "e621") if r["dagster_run_id"] == e621_run.run_id]
    assert row["partition_key"] == f"{BOORU_DAYS[0]}...{BOORU_DAYS[-1]}"
    assert row["records_created"] == BOORU_POSTS * 3
