"""fetch_runs rows: the overlap guard, final statuses on failure and cancellation, reconciliation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError

from umlmm_pipelines.catalog import fetch_runs as rows
from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.ingestion.assets import RECORDER_KEY, build_source_asset
from umlmm_pipelines.ingestion.recorder import FetchRunRecorder
from umlmm_pipelines.ingestion.source import MappedRecord, Page, Record, SourceRun, SourceSpec
from umlmm_pipelines.operations.reconcile import reconcile
from umlmm_pipelines.sources.ollama import OllamaSettings, map_model, ollama_models
from umlmm_pipelines_tests.fakes.ollama_server import load_fixture
from umlmm_pipelines_tests.helpers import fetch_runs
from umlmm_pipelines_tests.helpers import rows as query

MODELS = load_fixture("api_tags.json")["models"]


class ScriptedRun(SourceRun):
    """Two pages of Ollama-shaped records; then whatever ``after_first_page`` raises."""

    after_first_page: BaseException | None = None

    def pages(self) -> Iterator[Page]:
        yield Page([{"host": "h1", "listing": m} for m in MODELS[:2]], "page 1")
        if self.after_first_page is not None:
            raise self.after_first_page
        yield Page([{"host": "h1", "listing": m} for m in MODELS[2:]], "page 2")

    def external_id(self, record: Record) -> str:
        return f"{record['host']}|{record['listing']['name']}"

    def map(self, record: Record) -> MappedRecord:
        return MappedRecord(map_model(record["host"], record["listing"], None))


def _materialize(catalog_url, instance, after_first_page=None, **recorder):
    run_class = type("Run", (ScriptedRun,), {"after_first_page": after_first_page})
    spec = SourceSpec(name="ollama", display_name="Ollama", asset_name="models", description="scripted",
                      settings_model=OllamaSettings, table=ollama_models, run_factory=run_class)
    asset = build_source_asset(spec, OllamaSettings())
    return dg.materialize([asset], instance=instance, raise_on_error=False,
                          resources={RECORDER_KEY: FetchRunRecorder(database_url=catalog_url, **recorder)})


def _add_run(instance, status):
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("umlmm_pipelines"), "__repository__"), "ollama_ingestion"
    )
    return instance.add_run(dg.DagsterRun(job_name="ollama_ingestion", status=status, remote_job_origin=origin))


def _running_row(catalog_url, dagster_run_id, source="ollama"):
    engine = open_catalog(catalog_url)
    with engine.begin() as conn:
        fetch_run_id = rows.insert_queued(conn, source, dagster_run_id, None, {})
    assert rows.try_mark_running(engine, fetch_run_id)
    return engine, fetch_run_id


def test_database_allows_one_running_row_per_source(catalog_url):
    engine = open_catalog(catalog_url)
    with engine.begin() as conn:
        first = rows.insert_queued(conn, "ollama", "run-a", None, {})
        second = rows.insert_queued(conn, "ollama", "run-b", None, {})
        other_source = rows.insert_queued(conn, "civitai", "run-c", None, {})

    assert rows.try_mark_running(engine, first)
    assert not rows.try_mark_running(engine, second)
    assert rows.try_mark_running(engine, other_source)
    statuses = {r["dagster_run_id"]: r["status"] for r in fetch_runs(catalog_url)}
    assert statuses == {"run-a": "running", "run-b": "queued", "run-c": "running"}


def test_run_waits_for_a_live_holder_and_starts_after_it_ends(catalog_url, instance):
    holder_run = _add_run(instance, dg.DagsterRunStatus.STARTED)
    engine, holder_id = _running_row(catalog_url, holder_run.run_id)

    def finish_holder_later():
        time.sleep(1.5)
        with engine.begin() as conn:
            rows.finish(conn, holder_id, "completed")

    threading.Thread(target=finish_holder_later).start()
    result = _materialize(catalog_url, instance, guard_poll_seconds=0.2)

    assert result.success
    holder, mine = fetch_runs(catalog_url, "ollama")
    assert mine["status"] == "completed"
    assert mine["started_at"] >= holder["ended_at"]


def test_holder_whose_dagster_run_is_over_is_marked_failed_and_taken_over(catalog_url, instance):
    dead = _add_run(instance, dg.DagsterRunStatus.FAILURE)
    _running_row(catalog_url, dead.run_id)

    result = _materialize(catalog_url, instance, guard_poll_seconds=0.2)

    assert result.success
    holder, mine = fetch_runs(catalog_url, "ollama")
    assert holder["status"] == "failed"
    assert f"run {dead.run_id} ended (FAILURE) without recording its final status" in holder["error_message"]
    assert mine["status"] == "completed" and mine["records_created"] == 4


def test_run_gives_up_when_the_holder_stays_busy_past_the_guard_timeout(catalog_url, instance):
    live = _add_run(instance, dg.DagsterRunStatus.STARTED)
    _running_row(catalog_url, live.run_id)

    result = _materialize(catalog_url, instance, guard_poll_seconds=0.1, guard_timeout_seconds=0.5)

    assert not result.success
    holder, mine = fetch_runs(catalog_url, "ollama")
    assert holder["status"] == "running"
    assert mine["status"] == "failed"
    assert f"run {live.run_id} is still running" in mine["error_message"]


def test_terminated_run_is_cancelled_with_the_committed_page_kept(catalog_url, instance):
    result = _materialize(catalog_url, instance, after_first_page=DagsterExecutionInterruptedError())

    assert not result.success
    [run] = fetch_runs(catalog_url, "ollama")
    assert run["status"] == "cancelled"
    assert (run["records_fetched"], run["records_created"], run["pages_committed"]) == (2, 2, 1)
    assert "terminated" in run["error_message"] and run["ended_at"] is not None
    assert query(catalog_url, "SELECT count(*) AS n FROM ollama_models")[0]["n"] == 2


def test_error_mid_run_fails_the_row_with_message_and_stack_and_keeps_committed_pages(catalog_url, instance):
    result = _materialize(catalog_url, instance, after_first_page=ValueError("page 2 is malformed"))

    assert not result.success
    [run] = fetch_runs(catalog_url, "ollama")
    assert run["status"] == "failed"
    assert run["error_message"] == "page 2 is malformed"
    assert "Traceback" in run["error_details"] and "ValueError: page 2 is malformed" in run["error_details"]
    assert (run["records_created"], run["pages_committed"]) == (2, 1)


def test_parameters_record_the_settings_the_run_used(catalog_url, instance):
    _materialize(catalog_url, instance)

    [run] = fetch_runs(catalog_url, "ollama")
    parameters = run["parameters"]
    assert parameters["settings"]["BaseUrl"] == ["http://127.0.0.1:11434"]
    assert parameters["settings"]["MaxRetries"] == 3


@pytest.mark.parametrize(
    ("dagster_status", "expected"),
    [(dg.DagsterRunStatus.FAILURE, "failed"), (dg.DagsterRunStatus.CANCELED, "cancelled")],
)
def test_reconciliation_closes_rows_of_runs_that_died(catalog_url, instance, dagster_status, expected):
    run = _add_run(instance, dagster_status)
    engine, fetch_run_id = _running_row(catalog_url, run.run_id)

    changed = reconcile(engine, instance)

    assert changed == [(fetch_run_id, expected)]
    [row] = fetch_runs(catalog_url)
    assert row["status"] == expected and row["ended_at"] is not None
    assert f"run {run.run_id} ended {dagster_status.value} without recording its final status" in row["error_message"]


def test_reconciliation_leaves_live_and_unknown_fresh_runs_alone(catalog_url, instance):
    live = _add_run(instance, dg.DagsterRunStatus.STARTED)
    engine, _ = _running_row(catalog_url, live.run_id)
    _running_row(catalog_url, "run-from-another-deployment", source="civitai")

    assert reconcile(engine, instance) == []
    assert {r["status"] for r in fetch_runs(catalog_url)} == {"running"}


def test_reconciliation_includes_dagster_failure_message(catalog_url, instance):
    run = _add_run(instance, dg.DagsterRunStatus.STARTED)
    engine, _ = _running_row(catalog_url, run.run_id)
    instance.report_run_failed(run, "Run worker died unexpectedly (exit code -9)")

    reconcile(engine, instance)

    [row] = fetch_runs(catalog_url)
    assert row["status"] == "failed"
    assert "Run worker died unexpectedly (exit code -9)" in row["error_message"]
