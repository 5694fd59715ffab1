"""``umlmm-pipelines health`` and ``stats``: JSON fields, tables and exit codes on a real instance and catalog."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import dagster as dg
import pytest

from umlmm_pipelines.operations.cli import EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE, main
from umlmm_pipelines_tests.operations_helpers import add_run, ago, beat_daemons, insert_fetch_run, now


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _health(catalog_url: str) -> tuple[int, dict]:
    code, out, _ = _cli("health", "--catalog-url", catalog_url)
    return code, json.loads(out)


def test_health_exits_0_with_every_part_reported_when_all_is_well(catalog_url, instance, monkeypatch):
    monkeypatch.setenv("JobSchedules__ComfyUI__Enabled", "false")
    beat_daemons(instance, ago(seconds=20))
    insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(hours=2), ended_at=ago(hours=1))

    code, report = _health(catalog_url)

    assert code == EXIT_OK and report["healthy"] is True and report["problems"] == []
    assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"} <= set(report["daemons"])
    assert all(d["healthy"] and 15 < d["age_seconds"] < 60 for d in report["daemons"].values())
    assert report["dagster_storage"]["reachable"] and report["dagster_storage"]["round_trip_ms"] >= 0
    assert report["catalog"]["reachable"] and report["catalog"]["round_trip_ms"] >= 0
    assert sorted(report["sources"]) == ["civitai", "comfyui", "danbooru", "e621", "ollama"]
    ollama = report["sources"]["ollama"]
    assert ollama["schedule"] == {"name": "ollama_schedule", "running": True, "status": "DEFAULT_RUNNING"}
    assert ollama["last_run"]["status"] == "completed" and ollama["freshness"]["overdue"] is False
    assert ollama["freshness"]["last_success_at"] is not None and ollama["max_runtime_seconds"] == 3600
    assert report["sources"]["comfyui"]["schedule"]["running"] is False  # turned off in the environment


def test_health_exits_1_when_the_scheduler_heartbeat_is_stale(catalog_url, instance):
    beat_daemons(instance, ago(seconds=10))
    beat_daemons(instance, ago(minutes=10), only={"SCHEDULER"})

    code, report = _health(catalog_url)

    assert code == EXIT_UNHEALTHY and report["healthy"] is False
    scheduler = report["daemons"]["SCHEDULER"]
    assert scheduler["healthy"] is False and 595 < scheduler["age_seconds"] < 660
    assert report["daemons"]["SENSOR"]["healthy"] is True
    assert report["problems"] == [
        f"daemon SCHEDULER: last heartbeat {scheduler['age_seconds']:.0f} s ago (limit 120 s)"]


def test_health_reports_a_daemon_that_never_beat_and_one_with_errors(catalog_url, instance):
    beat_daemons(instance, now(), only=set(instance.get_required_daemon_types()) - {"QUEUED_RUN_COORDINATOR"},
                 errors={"SENSOR": "sensor loop crashed"})

    code, report = _health(catalog_url)

    assert code == EXIT_UNHEALTHY
    assert "daemon QUEUED_RUN_COORDINATOR: no heartbeat (is `dagster-daemon run` running?)" in report["problems"]
    assert "daemon SENSOR: reports errors: sensor loop crashed" in report["problems"]
    assert report["daemons"]["QUEUED_RUN_COORDINATOR"]["last_heartbeat_at"] is None


def test_health_exits_1_for_a_failed_last_run_an_overdue_source_and_a_stuck_run_and_counts_the_queue(
    catalog_url, instance
):
    beat_daemons(instance, now())
    insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(days=5), ended_at=ago(days=5))
    insert_fetch_run(catalog_url, "danbooru", status="completed", started_at=ago(hours=2), ended_at=ago(hours=2))
    failed = insert_fetch_run(catalog_url, "danbooru", "run-failed", status="failed", started_at=ago(hours=1),
                              ended_at=ago(minutes=50), error_message="Danbooru: GET /posts.json answered 500\nstack")
    assert failed
    hung = add_run(instance, "e621", dg.DagsterRunStatus.STARTED)
    insert_fetch_run(catalog_url, "e621", hung.run_id, status="running", started_at=ago(hours=1),
                     heartbeat_at=ago(minutes=40))
    add_run(instance, "e621", dg.DagsterRunStatus.QUEUED)
    add_run(instance, "e621", dg.DagsterRunStatus.QUEUED)

    code, report = _health(catalog_url)

    assert code == EXIT_UNHEALTHY
    sources = report["sources"]
    assert sources["ollama"]["freshness"]["overdue"] is True and sources["ollama"]["healthy"] is False
    assert sources["danbooru"]["last_run_failed"] is True
    assert sources["danbooru"]["last_run"]["error_message"] == "Danbooru: GET /posts.json answered 500"
    assert sources["danbooru"]["problems"] == [
        "danbooru: last run run-failed failed: Danbooru: GET /posts.json answered 500"]
    [stuck] = sources["e621"]["stuck_runs"]
    assert stuck["dagster_run_id"] == hung.run_id and stuck["kind"] == "stalled"
    assert sources["e621"]["runs_queued"] == 2 and sources["e621"]["runs_in_flight"] == 3
    assert sources["civitai"]["healthy"] is True
    assert len(report["problems"]) == 3


def test_health_never_prints_the_catalog_password_and_exits_1_when_the_catalog_is_unreachable(instance):
    beat_daemons(instance, now())

    code, out, _ = _cli("health", "--catalog-url", "postgresql://umlmm:s3cret-pw@127.0.0.1:1/catalog")

    report = json.loads(out)
    assert code == EXIT_UNHEALTHY and report["catalog"]["reachable"] is False
    assert report["catalog"]["url"] == "postgresql+psycopg2://umlmm:***@127.0.0.1:1/catalog"
    assert report["problems"][0].startswith("catalog is not reachable: ")
    assert "s3cret-pw" not in out


def test_health_exits_1_when_dagster_home_is_not_set(monkeypatch, sqlite_url):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    code, report = _health(sqlite_url)

    assert code == EXIT_UNHEALTHY and report["dagster_storage"]["reachable"] is False
    assert "DAGSTER_HOME" in report["dagster_storage"]["error"]


def test_bad_usage_and_invalid_settings_exit_2(monkeypatch, instance):
    assert _cli("bogus")[0] == EXIT_USAGE
    assert _cli("stats", "--format", "xml")[0] == EXIT_USAGE
    monkeypatch.setenv("Operations__StuckAfterMinutes", "-1")
    code, out, err = _cli("health")
    assert code == EXIT_USAGE and out == ""
    assert "environment variable Operations__StuckAfterMinutes" in err


def _seed_stats(catalog_url: str, instance: dg.DagsterInstance) -> None:
    for seconds, processed in ((10, 100), (20, 300), (30, 200)):
        insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(hours=3),
                         ended_at=ago(hours=3) + timedelta(seconds=seconds),
                         records_processed=processed, records_created=7, records_updated=14)
    insert_fetch_run(catalog_url, "ollama", status="failed", started_at=ago(hours=2), ended_at=ago(hours=2),
                     records_created=7)
    insert_fetch_run(catalog_url, "ollama", status="completed", started_at=ago(days=9), ended_at=ago(days=9),
                     records_created=1000)  # outside the 7-day window
    insert_fetch_run(catalog_url, "danbooru", status="cancelled", started_at=ago(hours=1), ended_at=ago(hours=1))
    add_run(instance, "ollama", dg.DagsterRunStatus.QUEUED)


def test_stats_json_gives_rates_percentiles_throughput_daily_rows_and_queue_depth(catalog_url, instance):
    _seed_stats(catalog_url, instance)

    code, out, _ = _cli("stats", "--format", "json", "--catalog-url", catalog_url)

    assert code == EXIT_OK
    data = json.loads(out)
    assert data["window_days"] == 7
    rows = {row["source"]: row for row in data["sources"]}
    assert list(rows) == ["civitai", "comfyui", "danbooru", "e621", "ollama"]
    assert rows["ollama"] == {
        "source": "ollama", "runs": 4, "completed": 3, "failed": 1, "cancelled": 0, "running": 0,
        "success_rate": 0.75, "failure_rate": 0.25, "p50_duration_s": 20.0, "p95_duration_s": 29.0,
        "records_per_minute": 600.0,  # 600 records in one minute of completed runs
        "created_per_day": 4.0, "updated_per_day": 6.0, "queued": 1,
    }
    assert rows["danbooru"]["cancelled"] == 1 and rows["danbooru"]["success_rate"] == 0.0
    assert rows["civitai"]["runs"] == 0 and rows["civitai"]["success_rate"] is None


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_stats_text_prints_one_line_per_source_and_days_widens_the_window(catalog_url, instance):
    _seed_stats(catalog_url, instance)

    code, out, _ = _cli("stats", "--days", "30", "--catalog-url", catalog_url)

    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == "UMLMM run metrics, last 30 day(s)"
    assert lines[1].split()[:4] == ["source", "runs", "completed", "failed"]
    ollama = next(line.split() for line in lines if line.split()[0] == "ollama")
    assert ollama[:5] == ["ollama", "5", "4", "1", "0"]
    assert next(line.split() for line in lines if line.split()[0] == "civitai")[6] == "-"  # no rate without runs


def test_stats_exits_1_with_one_line_and_no_password_when_the_catalog_is_unreachable(instance):
    code, out, err = _cli("stats", "--catalog-url", "postgresql://umlmm:s3cret-pw@127.0.0.1:1/catalog")

    assert code == EXIT_UNHEALTHY and out == ""
    assert err.startswith("cannot read the catalog at postgresql+psycopg2://umlmm:***@127.0.0.1:1/catalog: ")
    assert "s3cret-pw" not in err and len(err.strip().splitlines()) == 1
