"""CivitAI through the real asset against a fake server that follows the API's cursor paging rules."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.catalog.tables import source_cursors
from umlmm_pipelines.ingestion.source import SOURCE_TAG
from umlmm_pipelines_tests.fakes.civitai_server import FakeCivitAI, make_model, running_fake_civitai
from umlmm_pipelines_tests.fakes.ollama_server import unused_local_url
from umlmm_pipelines_tests.helpers import fetch_runs, make_defs, rows, run_source

TYPE = "LORA"
MODELS = 250  # three pages of 100
SECRET = "civitai-s3cr3t-token-42"


@pytest.fixture
def fake() -> Iterator[FakeCivitAI]:
    with running_fake_civitai() as server:
        server.state.add_models([make_model(i, TYPE) for i in range(1, MODELS + 1)])
        yield server


def _env(fake: FakeCivitAI, **settings: str) -> dict[str, str]:
    base = {"BaseUrl": fake.url, "RequestsPerSecond": "0", "BackoffSeconds": "0.01", "MaxRetries": "2",
            "TimeoutSeconds": "5"}
    return {f"Sources__CivitAI__{k}": str(v) for k, v in {**base, **settings}.items()}


def _ingest(catalog_url: str, instance: dg.DagsterInstance, fake: FakeCivitAI, partition: str = TYPE,
            **settings: str) -> dg.ExecuteInProcessResult:
    return run_source(make_defs(catalog_url, _env(fake, **settings)), "civitai", instance, partition_key=partition)


def _count(catalog_url: str, table: str, where: str = "1 = 1", **params) -> int:
    return rows(catalog_url, f"SELECT count(*) AS n FROM {table} WHERE {where}", **params)[0]["n"]


def _walks(result: dg.ExecuteInProcessResult) -> str:
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata["walks"].value


def _walk_state(catalog_url: str, model_type: str = TYPE) -> dict | None:
    found = rows(catalog_url, "SELECT value FROM source_cursors WHERE source = 'civitai' AND scope = :s",
                 s=f"models:{model_type}")
    return json.loads(found[0]["value"]) if found else None


def _age_last_full_walk(catalog_url: str, days: float) -> None:
    """Pretend the last full walk of the type completed ``days`` ago."""
    state = _walk_state(catalog_url)
    state["full_walk_completed_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    engine = open_catalog(catalog_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.update(source_cursors)
                         .where(source_cursors.c.source == "civitai", source_cursors.c.scope == f"models:{TYPE}")
                         .values(value=json.dumps(state)))
    finally:
        engine.dispose()


def test_a_first_run_walks_every_page_by_next_cursor_and_never_by_page_number(catalog_url, instance, fake):
    result = _ingest(catalog_url, instance, fake)

    assert result.success
    [run] = fetch_runs(catalog_url, "civitai")
    assert (run["status"], run["partition_key"]) == ("completed", TYPE)
    assert (run["records_fetched"], run["records_created"], run["records_failed"], run["pages_committed"]) == (
        MODELS, MODELS, 0, 3)
    requests = fake.state.models_requests()
    assert [r.param("cursor") for r in requests][0] is None
    cursors = [r.param("cursor") for r in requests[1:]]
    assert len(cursors) == 2 and all(cursors) and len(set(cursors)) == 2
    assert all(r.param("page") is None for r in requests)
    assert {(r.param("types"), r.param("sort"), r.param("limit"), r.param("nsfw")) for r in requests} == {
        (TYPE, "Newest", "100", "true")}
    assert _count(catalog_url, "civitai_models") == MODELS
    assert _count(catalog_url, "civitai_model_versions") == 2 * MODELS
    assert _count(catalog_url, "civitai_model_files") == 2 * MODELS
    assert _count(catalog_url, "civitai_model_images") == 2 * MODELS
    state = _walk_state(catalog_url)
    assert state["resume_cursor"] is None and state["full_walk_completed_at"] is not None
    assert _walks(result) == "LORA: full walk, 3 page(s), reached the end"


def test_catalogued_files_can_be_found_by_hash_and_by_file_name(catalog_url, instance, fake):
    _ingest(catalog_url, instance, fake)
    served = fake.state.model(7)["modelVersions"][1]["files"][0]

    by_hash = rows(catalog_url, "SELECT model_id, version_id, name FROM civitai_model_files WHERE sha256 = :h",
                   h=served["hashes"]["SHA256"])
    by_name = rows(catalog_url, "SELECT file_id FROM civitai_model_files WHERE name = :n", n=served["name"])

    assert by_hash == [{"model_id": 7, "version_id": 71, "name": served["name"]}]
    assert by_name == [{"file_id": served["id"]}]


def test_a_rerun_with_nothing_new_reads_one_page_counts_it_unchanged_and_stops(catalog_url, instance, fake):
    _ingest(catalog_url, instance, fake)
    fake.state.clear_requests()

    result = _ingest(catalog_url, instance, fake)

    assert result.success
    run = fetch_runs(catalog_url, "civitai")[-1]
    assert (run["records_fetched"], run["records_unchanged"], run["records_created"], run["records_updated"]) == (
        100, 100, 0, 0)
    assert len(fake.state.models_requests()) == 1
    assert _walks(result) == "LORA: incremental, 1 page(s), stopped after a page with nothing new"
    assert _count(catalog_url, "civitai_model_versions") == 2 * MODELS


def test_a_full_rerun_is_idempotent_every_model_unchanged_and_no_child_row_duplicated(catalog_url, instance, fake):
    _ingest(catalog_url, instance, fake, FullRefreshDays="0")

    assert _ingest(catalog_url, instance, fake, FullRefreshDays="0").success

    run = fetch_runs(catalog_url, "civitai")[-1]
    assert (run["records_fetched"], run["records_unchanged"], run["records_created"], run["records_updated"]) == (
        MODELS, MODELS, 0, 0)
    assert _count(catalog_url, "civitai_models") == MODELS
    assert (_count(catalog_url, "civitai_model_versions"), _count(catalog_url, "civitai_model_files"),
            _count(catalog_url, "civitai_model_images")) == (2 * MODELS, 2 * MODELS, 2 * MODELS)


def test_an_incremental_run_takes_the_new_models_and_stops_after_a_page_with_nothing_new(catalog_url, instance, fake):
    _ingest(catalog_url, instance, fake)
    newer = datetime(2026, 6, 1, tzinfo=UTC)
    fake.state.add_models([make_model(1000 + i, TYPE, newer + timedelta(minutes=i)) for i in range(1, 151)])
    fake.state.model(150)["stats"]["downloadCount"] += 5000  # on the third page: counters alone are nothing new
    fake.state.clear_requests()

    result = _ingest(catalog_url, instance, fake)

    assert result.success
    # page 1: 100 new; page 2: 50 new and 50 known; page 3: 100 known -> stop (a fourth page exists and is not read)
    assert len(fake.state.models_requests()) == 3
    run = fetch_runs(catalog_url, "civitai")[-1]
    assert (run["records_fetched"], run["records_created"], run["records_unchanged"], run["records_updated"]) == (
        300, 150, 150, 0)
    assert _count(catalog_url, "civitai_models") == MODELS + 150
    [row] = rows(catalog_url, "SELECT download_count FROM civitai_models WHERE model_id = 150")
    assert row["download_count"] == 1150  # refreshed by the next full walk, not by an incremental one


def test_a_full_walk_when_due_walks_everything_refreshing_counters_and_counting_real_changes(
    catalog_url, instance, fake
):
    _ingest(catalog_url, instance, fake)
    fake.state.model(10)["stats"]["downloadCount"] = 99_999
    fake.state.model(20)["name"] = "Renamed"
    _age_last_full_walk(catalog_url, days=8)
    fake.state.clear_requests()

    result = _ingest(catalog_url, instance, fake)

    assert result.success
    assert len(fake.state.models_requests()) == 3
    run = fetch_runs(catalog_url, "civitai")[-1]
    assert (run["records_fetched"], run["records_updated"], run["records_unchanged"]) == (MODELS, 1, MODELS - 1)
    [counted] = rows(catalog_url, "SELECT download_count, fetch_run_id FROM civitai_models WHERE model_id = 10")
    assert counted == {"download_count": 99_999, "fetch_run_id": run["id"]}
    assert rows(catalog_url, "SELECT name FROM civitai_models WHERE model_id = 20") == [{"name": "Renamed"}]
    assert _count(catalog_url, "civitai_model_versions") == 2 * MODELS
    completed = datetime.fromisoformat(_walk_state(catalog_url)["full_walk_completed_at"])
    assert datetime.now(UTC) - completed < timedelta(minutes=5)
    assert _walks(result) == "LORA: full walk, 3 page(s), reached the end"


def test_a_full_walk_that_fails_midway_resumes_from_its_saved_cursor(catalog_url, instance, fake):
    fake.state.serve_normally(1)
    fake.state.force(500, {"error": "Failed to fetch models"})

    failed = _ingest(catalog_url, instance, fake, MaxRetries="0")

    assert not failed.success
    run = fetch_runs(catalog_url, "civitai")[-1]
    assert run["status"] == "failed"
    assert run["error_message"] == (f"CivitAI at {fake.url}: GET /api/v1/models failed: HTTP 500: "
                                    "Failed to fetch models (gave up after 1 attempts)")
    assert (run["records_created"], run["pages_committed"]) == (100, 1)
    saved = _walk_state(catalog_url)["resume_cursor"]
    assert saved == fake.state.models_requests()[1].param("cursor")
    fake.state.clear_requests()

    resumed = _ingest(catalog_url, instance, fake)

    assert resumed.success
    assert fake.state.models_requests()[0].param("cursor") == saved
    last = fetch_runs(catalog_url, "civitai")[-1]
    assert (last["records_created"], last["records_updated"], last["pages_committed"]) == (MODELS - 100, 0, 2)
    assert _count(catalog_url, "civitai_models") == MODELS
    assert _walk_state(catalog_url)["resume_cursor"] is None
    assert _walks(resumed) == "LORA: full walk (resumed), 2 page(s), reached the end"


def test_a_saved_cursor_the_api_refuses_restarts_the_full_walk(sqlite_url, instance, fake):
    fake.state.serve_normally(1)
    fake.state.force(500, {"error": "Failed to fetch models"})
    _ingest(sqlite_url, instance, fake, MaxRetries="0")
    fake.state.force(400, {"error": {"name": "ZodError", "issues": [{"path": ["cursor"], "message": "Invalid"}]}})
    fake.state.clear_requests()

    result = _ingest(sqlite_url, instance, fake)

    assert result.success
    assert [r.param("cursor") is None for r in fake.state.models_requests()] == [False, True, False, False]
    assert _walks(result) == "LORA: full walk (restarted), 3 page(s), reached the end"
    assert _count(sqlite_url, "civitai_models") == MODELS


@pytest.mark.parametrize(
    "status, body",
    [(429, {"error": "Too Many Requests"}),
     (503, {"error": "Model search is temporarily overloaded — please retry."})],
)
def test_a_429_or_503_with_retry_after_is_waited_out(sqlite_url, instance, fake, status, body):
    fake.state.serve_normally(1)
    fake.state.force(status, body, {"Retry-After": "1", "Cache-Control": "no-store"})
    started = time.monotonic()

    result = _ingest(sqlite_url, instance, fake)

    assert result.success
    assert time.monotonic() - started >= 1
    assert len(fake.state.models_requests()) == 4  # three pages and the one retry
    assert fetch_runs(sqlite_url, "civitai")[-1]["records_created"] == MODELS


def test_a_model_that_cannot_be_mapped_is_failed_and_logged_with_its_id_while_its_page_is_kept(
    catalog_url, instance, fake, capfd
):
    fake.state.model(42)["nsfwLevel"] = "very"

    assert _ingest(catalog_url, instance, fake).success

    run = fetch_runs(catalog_url, "civitai")[-1]
    assert (run["records_fetched"], run["records_failed"], run["records_created"]) == (MODELS, 1, MODELS - 1)
    assert _count(catalog_url, "civitai_models", "model_id = 42") == 0
    logged = [line for line in capfd.readouterr().err.splitlines() if "record_failed" in line]
    assert len(logged) == 1 and "id=42" in logged[0] and "nsfwLevel is 'very', not an integer" in logged[0]


def test_a_known_model_that_can_no_longer_be_mapped_in_a_full_walk_keeps_its_row_and_is_logged(
    sqlite_url, instance, fake, capfd
):
    _ingest(sqlite_url, instance, fake)
    fake.state.model(42)["stats"]["downloadCount"] = "hidden"  # counters are not in the fingerprint: "unchanged"
    _age_last_full_walk(sqlite_url, days=8)

    assert _ingest(sqlite_url, instance, fake).success

    run = fetch_runs(sqlite_url, "civitai")[-1]
    assert (run["records_unchanged"], run["records_failed"]) == (MODELS, 0)
    assert rows(sqlite_url, "SELECT download_count FROM civitai_models WHERE model_id = 42") == [
        {"download_count": 1042}]
    logged = [line for line in capfd.readouterr().err.splitlines() if "record_refresh_failed" in line]
    assert len(logged) == 1 and "id=42" in logged[0] and "stats.downloadCount is 'hidden'" in logged[0]


def test_the_token_travels_as_a_bearer_header_and_never_reaches_urls_rows_or_logs(sqlite_url, instance, fake, capfd):
    fake.state.valid_token, fake.state.token_required = SECRET, True

    result = _ingest(sqlite_url, instance, fake, ApiToken=SECRET)

    assert result.success
    assert {r.authorization for r in fake.state.requests} == {f"Bearer {SECRET}"}
    assert all(SECRET not in r.raw_query and "token" not in r.query for r in fake.state.requests)
    [run] = fetch_runs(sqlite_url, "civitai")
    assert run["parameters"]["settings"]["ApiToken"] == "**********" and SECRET not in json.dumps(run["parameters"])
    assert SECRET not in capfd.readouterr().err
    records = instance.get_records_for_run(result.run_id).records
    assert all(SECRET not in (r.event_log_entry.message or "") for r in records)


def test_a_refused_token_fails_the_run_with_the_api_error_and_the_token_masked(sqlite_url, instance, fake, capfd):
    fake.state.force(401, {"error": f"Unauthorized: API key {SECRET} is not valid"})

    result = _ingest(sqlite_url, instance, fake, ApiToken=SECRET)

    assert not result.success
    run = fetch_runs(sqlite_url, "civitai")[-1]
    assert run["error_message"] == (f"CivitAI at {fake.url}: GET /api/v1/models failed: HTTP 401: "
                                    "Unauthorized: API key *** is not valid")
    assert SECRET not in (run["error_details"] or "") and SECRET not in capfd.readouterr().err
    assert len(fake.state.models_requests()) == 1  # a 401 is not retried


def test_the_token_may_come_from_civitai_api_token(sqlite_url, instance, fake, monkeypatch):
    monkeypatch.setenv("CIVITAI_API_TOKEN", SECRET)
    fake.state.valid_token, fake.state.token_required = SECRET, True

    assert _ingest(sqlite_url, instance, fake).success

    assert {r.authorization for r in fake.state.requests} == {f"Bearer {SECRET}"}
    assert fetch_runs(sqlite_url, "civitai")[-1]["parameters"]["settings"]["ApiToken"] is None


def test_a_taken_down_model_keeps_its_versions_files_and_images_until_it_comes_back(catalog_url, instance, fake):
    _ingest(catalog_url, instance, fake, FullRefreshDays="0")
    model = fake.state.model(3)
    original_versions = model["modelVersions"]
    model.update(mode="TakenDown", modelVersions=[])

    assert _ingest(catalog_url, instance, fake, FullRefreshDays="0").success

    run = fetch_runs(catalog_url, "civitai")[-1]
    assert (run["records_updated"], run["records_unchanged"]) == (1, MODELS - 1)
    [row] = rows(catalog_url, "SELECT mode, version_count FROM civitai_models WHERE model_id = 3")
    assert row == {"mode": "TakenDown", "version_count": 0}
    kept = {t: _count(catalog_url, t, "model_id = 3") for t in
            ("civitai_model_versions", "civitai_model_files", "civitai_model_images")}
    assert kept == {"civitai_model_versions": 2, "civitai_model_files": 2, "civitai_model_images": 2}

    model.pop("mode")
    model["modelVersions"] = original_versions[:1]  # back, with one version left
    assert _ingest(catalog_url, instance, fake, FullRefreshDays="0").success

    assert _count(catalog_url, "civitai_model_versions", "model_id = 3") == 1
    assert _count(catalog_url, "civitai_model_files", "model_id = 3") == 1
    assert _count(catalog_url, "civitai_model_versions") == 2 * MODELS - 1


def test_a_partition_run_fetches_only_its_own_type(catalog_url, instance, fake):
    fake.state.add_models([make_model(5000 + i, "Checkpoint") for i in range(1, 21)])

    assert _ingest(catalog_url, instance, fake, partition="Checkpoint").success

    assert {r.param("types") for r in fake.state.models_requests()} == {"Checkpoint"}
    assert rows(catalog_url, "SELECT type, count(*) AS n FROM civitai_models GROUP BY type") == [
        {"type": "Checkpoint", "n": 20}]
    assert _walk_state(catalog_url, "Checkpoint") is not None and _walk_state(catalog_url, TYPE) is None
    assert fetch_runs(catalog_url, "civitai")[-1]["partition_key"] == "Checkpoint"


def test_nsfw_models_are_asked_for_unless_switched_off(sqlite_url, instance, fake):
    fake.state.add_models([make_model(7000 + i, "VAE", nsfw=True) for i in range(3)] + [make_model(7100, "VAE")])

    assert _ingest(sqlite_url, instance, fake, partition="VAE", IncludeNsfw="false").success
    assert _count(sqlite_url, "civitai_models") == 1
    assert _ingest(sqlite_url, instance, fake, partition="VAE", FullRefreshDays="0").success
    assert _count(sqlite_url, "civitai_models") == 4


def test_an_unreachable_server_fails_naming_civitai_and_the_cause(sqlite_url, instance, fake):
    url = unused_local_url()

    result = _ingest(sqlite_url, instance, fake, BaseUrl=url, MaxRetries="1")

    assert not result.success
    run = fetch_runs(sqlite_url, "civitai")[-1]
    assert run["error_message"] == (f"CivitAI at {url}: GET /api/v1/models failed: connection refused "
                                    "(gave up after 2 attempts)")


@pytest.mark.parametrize(
    "status, body, headers, message",
    [
        (200, b"<html>Just a moment...</html>", {"Content-Type": "text/html"}, "non-JSON response (text/html)"),
        (400, {"error": {"name": "ZodError", "issues": [{"path": ["limit"]}]}}, {}, "HTTP 400: {'name': 'ZodError'"),
        (200, {"error": "Model search is unavailable"}, {}, "returned no 'items' list: Model search is unavailable"),
    ],
)
def test_bad_answers_fail_the_run_naming_civitai_and_the_cause(sqlite_url, instance, fake, status, body, headers,
                                                               message):
    fake.state.force(status, body, headers)

    result = _ingest(sqlite_url, instance, fake, MaxRetries="0")

    assert not result.success
    error = fetch_runs(sqlite_url, "civitai")[-1]["error_message"]
    assert error.startswith(f"CivitAI at {fake.url}: GET /api/v1/models") and message in error


def test_a_schedule_tick_asks_for_one_run_per_configured_type(sqlite_url, instance, fake):
    defs = make_defs(sqlite_url, _env(fake, Types="LORA,Checkpoint,VAE"))
    schedule = defs.get_schedule_def("civitai_schedule")

    data = schedule.evaluate_tick(dg.build_schedule_context(
        instance=instance, repository_def=defs.get_repository_def(),
        scheduled_execution_time=datetime(2026, 1, 1, tzinfo=UTC)))

    assert [r.partition_key for r in data.run_requests] == ["LORA", "Checkpoint", "VAE"]
    assert all(r.tags[SOURCE_TAG] == "civitai" for r in data.run_requests)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
