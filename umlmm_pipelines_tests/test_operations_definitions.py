"""How the operations side is wired into the code location: run tags, settings, sensors, checks, metrics."""

from __future__ import annotations

import dagster as dg
import pytest

from umlmm_pipelines.config import ConfigError
from umlmm_pipelines.definitions import load_source_settings
from umlmm_pipelines.operations.metrics import METRICS_ASSET_KEY
from umlmm_pipelines_tests.helpers import make_defs, run_source
from umlmm_pipelines_tests.operations_helpers import add_run, ago, insert_fetch_run

SOURCES = ["civitai", "comfyui", "danbooru", "e621", "ollama"]


def test_every_source_job_tags_its_runs_with_the_sources_max_runtime_in_seconds():
    defs = make_defs("sqlite://")
    tags = {s: defs.resolve_job_def(f"{s}_ingestion").run_tags.get(dg.MAX_RUNTIME_SECONDS_TAG) for s in SOURCES}
    assert tags == {"civitai": "21600", "comfyui": "3600", "danbooru": "14400", "e621": "14400", "ollama": "3600"}


def test_max_runtime_minutes_is_read_from_any_sources_section_and_0_removes_the_limit():
    defs = make_defs("sqlite://", env={"Sources__Ollama__MaxRuntimeMinutes": "1.5",
                                       "Sources__E621__MaxRuntimeMinutes": "0"})
    assert defs.resolve_job_def("ollama_ingestion").run_tags[dg.MAX_RUNTIME_SECONDS_TAG] == "90"
    assert dg.MAX_RUNTIME_SECONDS_TAG not in defs.resolve_job_def("e621_ingestion").run_tags
    assert defs.resolve_job_def("e621_ingestion").run_tags["umlmm/source"] == "e621"


def test_invalid_operations_settings_name_the_variable_to_fix():
    with pytest.raises(ConfigError) as raised:
        load_source_settings({"Sources__Danbooru__MaxRuntimeMinutes": "soon", "Operations__SensorIntervalSeconds": "1",
                              "Operations__StuckAfterMinuts": "5"})
    problems = {(p.source, p.origin) for p in raised.value.problems}
    assert problems == {
        ("Danbooru", "environment variable Sources__Danbooru__MaxRuntimeMinutes"),
        ("Operations", "environment variable Operations__SensorIntervalSeconds"),
        ("Operations", "environment variable Operations__StuckAfterMinuts"),
    }


def test_a_run_of_a_source_job_carries_the_max_runtime_tag(sqlite_url, instance, fake_ollama):
    defs = make_defs(sqlite_url, env={"Sources__Ollama__BaseUrl": fake_ollama.url,
                                      "Sources__Ollama__MaxRuntimeMinutes": "45"})

    result = run_source(defs, "ollama", instance)

    assert result.success
    assert result.dagster_run.tags[dg.MAX_RUNTIME_SECONDS_TAG] == "2700"
    assert result.dagster_run.tags["umlmm/source"] == "ollama"


def test_the_code_location_has_the_operations_sensors_checks_metrics_asset_and_schedule():
    defs = make_defs("sqlite://")
    repo = defs.get_repository_def()

    assert sorted(s.name for s in repo.sensor_defs) == [
        "fetch_runs_reconciliation_sensor", "model_links_automation", "source_freshness_sensor", "source_pools_sensor",
        "stuck_runs_sensor"]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in repo.sensor_defs)
    assert sorted(s.name for s in repo.schedule_defs) == [*(f"{s}_schedule" for s in SOURCES),
                                                          "operations_metrics_schedule"]
    check_keys = {key for checks in defs.asset_checks for key in checks.check_keys}
    assert {(k.asset_key.path[0], k.name) for k in check_keys} == {(s, "freshness") for s in SOURCES}
    metrics = next(a for a in defs.assets if getattr(a, "key", None) == METRICS_ASSET_KEY)
    assert metrics.group_names_by_key[METRICS_ASSET_KEY] == "operations"


def test_the_metrics_asset_shows_the_stats_table_as_metadata(catalog_url, instance):
    defs = make_defs(catalog_url)
    insert_fetch_run(catalog_url, "danbooru", status="completed", started_at=ago(hours=1, seconds=40),
                     ended_at=ago(hours=1), records_processed=200, records_created=70)
    insert_fetch_run(catalog_url, "danbooru", status="failed", started_at=ago(minutes=30), ended_at=ago(minutes=29))
    add_run(instance, "danbooru", dg.DagsterRunStatus.QUEUED)

    result = defs.resolve_job_def("operations_metrics").execute_in_process(instance=instance)

    [materialization] = result.asset_materializations_for_node("operations__metrics")
    table = materialization.metadata["metrics"]
    assert [c.name for c in table.schema.columns][:4] == ["source", "runs", "completed", "failed"]
    rows = {r.data["source"]: r.data for r in table.records}
    assert list(rows) == SOURCES
    assert rows["danbooru"]["runs"] == 2 and rows["danbooru"]["success_rate"] == 0.5
    assert rows["danbooru"]["records_per_minute"] == 300.0 and rows["danbooru"]["created_per_day"] == 10.0
    assert rows["danbooru"]["queued"] == 1 and rows["ollama"]["runs"] == 0
    assert materialization.metadata["queued"].value == 1 and materialization.metadata["window_days"].value == 7.0
