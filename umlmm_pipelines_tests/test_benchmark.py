"""The benchmark script stays runnable: a small corpus through it, end to end, on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from umlmm_pipelines_tests.dagster_stack import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_the_benchmark_loads_then_reloads_a_small_corpus_and_reports_medians(postgres_server):
    done = subprocess.run(
        [sys.executable, "benchmarks/danbooru_ingest.py", "--posts", "600", "--repeat", "2",
         "--postgres", postgres_server],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    [report] = [line for line in done.stdout.splitlines() if line.startswith("[{")]
    [result] = json.loads(report)
    # measure() itself asserts that the first load created every post and the re-run found all unchanged.
    assert (result["posts"], result["runs"]) == (600, 2)
    assert result["first_posts_per_s_min"] <= result["first_posts_per_s"] <= result["first_posts_per_s_max"]
    assert 0 < result["first_peak_rss_mb"] < 1000 and result["rerun_posts_per_s"] > 0
