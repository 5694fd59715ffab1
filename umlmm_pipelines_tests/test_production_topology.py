"""The production topology on PostgreSQL, end to end.

A gRPC code server (``dagster code-server start``), ``dagster-daemon`` and ``dagster-webserver`` run
as separate processes, as in ``deploy/compose.yaml`` and on Kubernetes: the webserver and daemon
load ``deploy/workspace.grpc.yaml`` and ``deploy/dagster.postgres.yaml``, so Dagster's storage is a
fresh PostgreSQL database and the catalog (``UMLMM_DATABASE_URL``) another one. Every source's
job is launched over GraphQL against fake servers on 127.0.0.1, a partition backfill runs, one
run is terminated; then the catalog's fetch_runs and Dagster's run storage must tell the same
story, run by run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from umlmm_pipelines.catalog.fetch_runs import aware
from umlmm_pipelines.links.asset import MODEL_LINKS_KEY
from umlmm_pipelines_tests.conftest import fresh_postgres_database
from umlmm_pipelines_tests.dagster_stack import LOCATION, REPO, ROOT, DagsterStack, wait_for
from umlmm_pipelines_tests.fakes.booru_server import FakeBooru
from umlmm_pipelines_tests.fakes.civitai_server import CivitAIState, make_model
from umlmm_pipelines_tests.fakes.sources import SourceFakes, running_source_fakes
from umlmm_pipelines_tests.helpers import fetch_runs, rows

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
POSTS_PER_DAY = 120
CIVITAI_MODELS = {"LORA": 7, "Checkpoint": 3}
SOURCE_TAG = "umlmm/source"

#: Dagster's final run status for each final fetch_runs status.
DAGSTER_STATUS = {
    "completed": dg.DagsterRunStatus.SUCCESS,
    "failed": dg.DagsterRunStatus.FAILURE,
    "cancelled": dg.DagsterRunStatus.CANCELED,
}
FETCH_STATUS = {dagster: fetch for fetch, dagster in DAGSTER_STATUS.items()}


@dataclass(frozen=True)
class SourceCase:
    """One launch of one source's job and what it must leave behind."""

    source: str
    config_key: str  # its key under "Sources" and "JobSchedules" in UMLMM_CONFIG
    settings: Callable[[SourceFakes], dict[str, Any]]
    fetch_status: str
    partition: str | None = None
    min_created: int = 0
    error_contains: str | None = None


def _booru(fake: FakeBooru, **overrides: Any) -> dict[str, Any]:
    return {"BaseUrl": fake.url, "StartDate": "2023-12-01", "BackoffSeconds": 0.1, "BackfillDaysPerRun": 1,
            **overrides}


SOURCE_CASES = [
    SourceCase("ollama", "Ollama", lambda f: {"BaseUrl": f.ollama.url, "BackoffSeconds": 0.1}, "completed",
               min_created=4),
    SourceCase("danbooru", "Danbooru", lambda f: _booru(f.danbooru, RequestsPerSecond=0, PageSize=50), "completed",
               partition=DAYS[0], min_created=POSTS_PER_DAY),
    SourceCase("e621", "E621", lambda f: _booru(f.e621, RequestsPerSecond=2, PageSize=20), "completed",
               partition=DAYS[0], min_created=POSTS_PER_DAY),
    SourceCase("civitai", "CivitAI",
               lambda f: {"BaseUrl": f.civitai.url, "Types": list(CIVITAI_MODELS), "RequestsPerSecond": 0,
                          "PageSize": 5, "BackoffSeconds": 0.1},
               "completed", partition="LORA", min_created=CIVITAI_MODELS["LORA"]),
    SourceCase("comfyui", "ComfyUI",
               lambda f: {"BaseUrl": f.comfyui.url, "WorkflowDirs": [str(f.workflows)],
                          "BackoffSeconds": 0.1},
               "completed", min_created=2),
]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> Iterator[SourceFakes]:
    civitai = CivitAIState()
    first_id = 1000
    for model_type, count in CIVITAI_MODELS.items():
        civitai.add_models([make_model(first_id + n, model_type) for n in range(count)])
        first_id += 100
    workflows = tmp_path_factory.mktemp("source_files") / "workflows"
    with running_source_fakes(dict.fromkeys(DAYS, POSTS_PER_DAY), civitai, workflows) as fakes:
        yield fakes


@pytest.fixture(scope="module")
def databases(postgres_server: str) -> Iterator[tuple[str, str]]:
    """Two fresh databases: Dagster's storage and the catalog."""
    with fresh_postgres_database(postgres_server) as dagster_db, fresh_postgres_database(postgres_server) as catalog:
        yield dagster_db, catalog


def dagster_pg_env(url: str) -> dict[str, str]:
    """The variables deploy/dagster.postgres.yaml reads, for one database URL."""
    parsed = sa.make_url(url)
    return {"DAGSTER_PG_USER": parsed.username or "", "DAGSTER_PG_PASSWORD": parsed.password or "",
            "DAGSTER_PG_HOST": parsed.host or "127.0.0.1", "DAGSTER_PG_DB": parsed.database or "",
            "DAGSTER_PG_PORT": str(parsed.port or 5432)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fakes: SourceFakes, databases: tuple[str, str]) -> Iterator[DagsterStack]:
    dagster_db, catalog = databases
    home = tmp_path_factory.mktemp("dagster_home_pg")
    config = home / "umlmm.json"
    config.write_text(json.dumps({
        "JobSchedules": {case.config_key: {"Enabled": False} for case in SOURCE_CASES},
        "Sources": {case.config_key: case.settings(fakes) for case in SOURCE_CASES},
    }))
    env = {**dagster_pg_env(dagster_db), "UMLMM_DATABASE_URL": catalog, "UMLMM_CONFIG": str(config)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():  # this process reads the same instance file
            patch.setenv(name, value)
        stack = DagsterStack(home, env, instance_yaml=ROOT / "deploy" / "dagster.postgres.yaml",
                             workspace=ROOT / "deploy" / "workspace.grpc.yaml", code_server=True)
        try:
            yield stack.start()
        finally:
            stack.stop()


@pytest.fixture
def catalog(databases: tuple[str, str]) -> str:
    return databases[1]


def _row_of(catalog: str, run_id: str) -> dict[str, Any]:
    [row] = [r for r in fetch_runs(catalog) if r["dagster_run_id"] == run_id]
    return row


def _materialization_metadata(stack: DagsterStack, run_id: str) -> dict[str, Any]:
    records = stack.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    [record] = records
    materialization = record.event_log_entry.asset_materialization
    assert materialization is not None
    return {key: value.value for key, value in materialization.metadata.items()}


def assert_fetch_runs_agree_with_run_storage(stack: DagsterStack, catalog: str) -> list[dg.DagsterRun]:
    """One fetch_runs row per source run and none without one, with the same source, status, partition,
    a span inside the run's own, and (for successes) the figures the materialization carries.

    The daemon may also have rebuilt ``catalog/model_links`` after the sources' new data (its automation
    sensor runs in this topology too): such a run is no source's and leaves no fetch_runs row."""
    all_runs = stack.instance.get_runs()
    runs = [run for run in all_runs if SOURCE_TAG in run.tags]
    others = [run for run in all_runs if SOURCE_TAG not in run.tags]
    assert all(run.asset_selection == {MODEL_LINKS_KEY} for run in others), [
        (run.job_name, run.asset_selection) for run in others]
    rows_by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in fetch_runs(catalog):
        rows_by_run[row["dagster_run_id"]].append(row)
    assert set(rows_by_run) == {run.run_id for run in runs}
    records = {r.dagster_run.run_id: r for r in stack.instance.get_run_records()}
    for run in runs:
        [row] = rows_by_run[run.run_id]
        assert row["source"] == run.tags[SOURCE_TAG]
        assert row["status"] == FETCH_STATUS[run.status], (run.run_id, row["error_message"])
        assert row["partition_key"] == run.tags.get("dagster/partition")
        record = records[run.run_id]
        assert record.start_time is not None and record.end_time is not None
        assert record.start_time - 1 <= aware(row["started_at"]).timestamp()
        assert aware(row["ended_at"]).timestamp() <= record.end_time + 1
        if run.status == dg.DagsterRunStatus.SUCCESS:
            metadata = _materialization_metadata(stack, run.run_id)
            assert metadata["fetch_run_id"] == row["id"]
            for counter in ("records_fetched", "records_created", "records_updated", "records_unchanged"):
                assert metadata[counter] == row[counter], counter
    return runs


def test_the_code_location_runs_in_the_grpc_code_server_and_dagster_stores_in_postgresql(stack):
    data = stack.graphql("""{ workspaceOrError { ... on Workspace { locationEntries { name
        displayMetadata { key value } } } } }""")
    [entry] = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == LOCATION
    metadata = {m["key"]: m["value"] for m in entry["displayMetadata"]}
    assert metadata["port"] == str(stack.code_server_port) and metadata["host"] == "127.0.0.1"
    assert isinstance(stack.instance.run_storage, PostgresRunStorage)
    assert isinstance(stack.instance.event_log_storage, PostgresEventLogStorage)


def test_every_source_a_backfill_and_a_terminated_run_leave_fetch_runs_and_run_storage_in_agreement(
    stack, fakes, catalog
):
    # Every source's job, launched over GraphQL as the UI does; sources run side by side.
    launched = {case.source: stack.launch(f"{case.source}_ingestion",
                                          tags={"dagster/partition": case.partition} if case.partition else None)
                for case in SOURCE_CASES}
    finished = dict(zip(launched, stack.wait_finished(list(launched.values()), timeout=240), strict=True))
    for case in SOURCE_CASES:
        run, row = finished[case.source], _row_of(catalog, launched[case.source])
        assert (row["status"], run.status) == (case.fetch_status, DAGSTER_STATUS[case.fetch_status]), (
            case.source, row["error_message"])
        assert row["records_created"] >= case.min_created, case.source
        if case.error_contains:
            assert case.error_contains in row["error_message"]
        # Launched by the code server named in deploy/workspace.grpc.yaml, not by a process the webserver spawned.
        origin = run.remote_job_origin.repository_origin.code_location_origin
        assert isinstance(origin, GrpcServerCodeLocationOrigin) and origin.port == stack.code_server_port

    # A three-day Danbooru backfill (one day per run) and, meanwhile, an e621 run that is terminated mid-way.
    backfill_id = stack.launch_backfill(
        selector={"partitionSetName": "danbooru_ingestion_partition_set",
                  "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": REPO}},
        partitionNames=DAYS)
    fakes.e621.state.delay_s = 1.0  # 20 posts a page, a second each: about seven seconds for the day
    doomed = stack.launch("e621_ingestion", tags={"dagster/partition": DAYS[1]})
    wait_for(lambda: any(r["dagster_run_id"] == doomed and r["pages_committed"] >= 1 for r in fetch_runs(catalog)),
             90, "the e621 run to commit a page")
    stack.client.terminate_run(doomed)
    [terminated] = stack.wait_finished([doomed], timeout=60)
    assert terminated.status == dg.DagsterRunStatus.CANCELED
    cancelled = _row_of(catalog, doomed)
    assert cancelled["status"] == "cancelled" and 0 < cancelled["records_created"] < POSTS_PER_DAY

    backfill_runs = stack.wait_backfill(backfill_id)
    assert sorted(r.tags["dagster/partition"] for r in backfill_runs) == DAYS
    assert {r.status for r in backfill_runs} == {dg.DagsterRunStatus.SUCCESS}
    by_day = {r.tags["dagster/partition"]: _row_of(catalog, r.run_id) for r in backfill_runs}
    # The first day was already ingested by the single launch above: unchanged, not created twice.
    assert (by_day[DAYS[0]]["records_created"], by_day[DAYS[0]]["records_unchanged"]) == (0, POSTS_PER_DAY)
    assert [by_day[d]["records_created"] for d in DAYS[1:]] == [POSTS_PER_DAY, POSTS_PER_DAY]
    posts = {r["source"]: r["n"] for r in rows(catalog, "SELECT source, count(*) AS n FROM posts GROUP BY source")}
    assert posts["danbooru"] == POSTS_PER_DAY * 3

    # A run that fails: Ollama answers HTTP 500 to every listing until the retries give up.
    fakes.ollama.state.tags_failures = [500] * 20
    broken = stack.launch("ollama_ingestion")
    [failed] = stack.wait_finished([broken], timeout=120)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert _row_of(catalog, broken)["status"] == "failed" and "HTTP 500" in _row_of(catalog, broken)["error_message"]

    # And run by run, the two records agree: every status of the mapping occurred.
    runs = assert_fetch_runs_agree_with_run_storage(stack, catalog)
    assert len(runs) == len(SOURCE_CASES) + 1 + len(DAYS) + 1
    assert {r.status for r in runs} == set(FETCH_STATUS)
    assert {r.tags[SOURCE_TAG] for r in runs} == {case.source for case in SOURCE_CASES}
