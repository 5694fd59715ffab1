"""Pruning run history keeps Dagster's run storage and fetch_runs in agreement."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from umlmm_pipelines.catalog import fetch_runs as rows
from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.operations.cli import main
from umlmm_pipelines.operations.retention import prune_history
from umlmm_pipelines_tests.helpers import fetch_runs, make_defs, run_source


def _finished_at(instance: dg.DagsterInstance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    return record.end_time


def test_prune_deletes_finished_runs_and_their_rows_before_the_cutoff_and_keeps_the_rest(
    instance, fake_ollama, catalog_url
):
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})
    old = run_source(defs, "ollama", instance).run_id
    time.sleep(0.2)
    recent = run_source(defs, "ollama", instance).run_id
    engine = open_catalog(catalog_url)
    try:
        with engine.begin() as conn:  # a row still running (another source's run in flight) is never pruned
            in_flight = rows.insert_queued(conn, "danbooru", "run-in-flight", None, {})
        assert rows.try_mark_running(engine, in_flight)
        # The cut-off falls between the two runs.
        cutoff = datetime.fromtimestamp((_finished_at(instance, old) + _finished_at(instance, recent)) / 2, UTC)
        now, older_than = cutoff + timedelta(days=30), timedelta(days=30)

        preview = prune_history(instance, engine, older_than, now=now, dry_run=True)
        assert preview.dagster_run_ids == [old] and len(fetch_runs(catalog_url)) == 3
        assert instance.has_run(old)

        report = prune_history(instance, engine, older_than, now=now)
    finally:
        engine.dispose()

    assert report.dagster_run_ids == [old] and report.fetch_run_ids == preview.fetch_run_ids
    assert not instance.has_run(old) and instance.has_run(recent)
    remaining = {(r["dagster_run_id"], r["status"]) for r in fetch_runs(catalog_url)}
    assert remaining == {(recent, "completed"), ("run-in-flight", "running")}


def test_rows_whose_run_is_gone_are_pruned_by_their_own_end_time(instance, sqlite_url):
    """A row of a run pruned earlier (or of another instance) goes once it is old enough, not before."""
    engine = open_catalog(sqlite_url)
    try:
        with engine.begin() as conn:
            orphan = rows.insert_queued(conn, "ollama", "run-pruned-long-ago", None, {})
            rows.finish(conn, orphan, "failed", error_message="x")
        assert prune_history(instance, engine, timedelta(days=1)).fetch_run_ids == []
        report = prune_history(instance, engine, timedelta(days=1), now=datetime.now(UTC) + timedelta(days=2))
    finally:
        engine.dispose()
    assert report.fetch_run_ids == [orphan] and fetch_runs(sqlite_url) == []


def test_command_line_reports_a_dry_run_without_deleting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("UMLMM_DATABASE_URL", raising=False)

    assert main(["prune", "--older-than-days", "90", "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "would delete 0 Dagster run(s) and 0 fetch_runs row(s)" in out
    assert f"sqlite:///{tmp_path.resolve()}" in out


def test_negative_age_is_refused(instance, sqlite_url):
    engine = open_catalog(sqlite_url)
    try:
        with pytest.raises(ValueError, match="must not be negative"):
            prune_history(instance, engine, timedelta(days=-1))
    finally:
        engine.dispose()
