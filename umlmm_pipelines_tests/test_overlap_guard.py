"""Racing launches of one source never overlap inside the catalog, even past the run queue."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from umlmm_pipelines.catalog.fetch_runs import aware
from umlmm_pipelines_tests.helpers import fetch_runs
from umlmm_pipelines_tests.race_worker import run_ollama_once


@pytest.mark.slow
def test_five_racing_processes_run_one_at_a_time(catalog_url, fake_ollama, tmp_path):
    fake_ollama.state.new_digest_each_listing = True
    fake_ollama.state.show_delay_s = 0.2
    instance_dir = tmp_path / "dagster_home"
    instance_dir.mkdir()
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(instance_dir))):
        pass  # create Dagster's own storage once, before five processes open it at the same time
    context = multiprocessing.get_context("spawn")

    with ProcessPoolExecutor(max_workers=5, mp_context=context) as pool:
        futures = [pool.submit(run_ollama_once, str(instance_dir), catalog_url, fake_ollama.url) for _ in range(5)]
        outcomes = [future.result() for future in futures]

    assert outcomes == [True] * 5
    runs = sorted(fetch_runs(catalog_url, "ollama"), key=lambda r: aware(r["started_at"]))
    assert [r["status"] for r in runs] == ["completed"] * 5
    assert all(r["records_updated"] + r["records_created"] == 4 for r in runs)
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert aware(earlier["ended_at"]) <= aware(later["started_at"]), (earlier, later)
