"""What the shared page loop leaves behind besides rows: its log lines and its statistics work."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from umlmm_pipelines.catalog.database import open_catalog
from umlmm_pipelines.ingestion import pages
from umlmm_pipelines.ingestion.pages import PageLoop
from umlmm_pipelines.ingestion.source import SourceRun
from umlmm_pipelines.sources._booru import posts
from umlmm_pipelines_tests.fakes.booru_server import running_fake_danbooru, synthetic_danbooru_state
from umlmm_pipelines_tests.helpers import fetch_runs, make_defs, run_source

DAY = "2024-01-01"


class _NoPages(SourceRun):
    def __init__(self) -> None:  # no inputs: the loop's statistics work is all this test drives
        pass

    def pages(self):
        return iter(())

    def external_id(self, record):
        return record["id"]

    def map(self, record):
        raise NotImplementedError


def _page_lines(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if "page_committed" in (e.user_message or "")]


def _run_ten_pages(sqlite_url, instance):
    with running_fake_danbooru(synthetic_danbooru_state(100, DAY, lazy=False)) as fake:
        env = {"Sources__Danbooru__BaseUrl": fake.url, "Sources__Danbooru__RequestsPerSecond": "0",
               "Sources__Danbooru__PageSize": "10", "Sources__Danbooru__StartDate": "2023-12-01"}
        return run_source(make_defs(sqlite_url, env), "danbooru", instance, partition_key=DAY)


def test_committed_pages_are_logged_at_most_every_interval_starting_with_the_first(
    sqlite_url, instance, monkeypatch
):
    monkeypatch.setattr(pages, "PAGE_LOG_INTERVAL_S", 3600.0)

    result = _run_ten_pages(sqlite_url, instance)

    assert result.success
    [line] = _page_lines(instance, result.run_id)
    assert "page=1 " in line
    [run] = fetch_runs(sqlite_url, "danbooru")
    assert run["pages_committed"] == 11  # ten pages of posts and the empty page that ends the walk


def test_with_no_interval_every_committed_page_is_logged(sqlite_url, instance, monkeypatch):
    monkeypatch.setattr(pages, "PAGE_LOG_INTERVAL_S", 0.0)

    result = _run_ten_pages(sqlite_url, instance)

    assert len(_page_lines(instance, result.run_id)) == 11


@pytest.mark.postgres
def test_an_analyze_still_running_when_the_pages_are_done_is_cancelled_not_waited_for(postgres_url):
    engine = open_catalog(postgres_url)
    warnings: list[str] = []
    log = SimpleNamespace(warning=warnings.append, debug=lambda _: None, info=lambda _: None)
    spec = SimpleNamespace(table=posts, name="danbooru", display_name="Danbooru")
    loop = PageLoop(spec, run=_NoPages(), engine=engine, fetch_run_id=1, log=log)  # type: ignore[arg-type]
    try:
        with engine.connect() as holder:
            # ANALYZE needs this lock too: it waits, as a long ANALYZE of millions of links would run on.
            holder.execute(sa.text("LOCK TABLE posts IN SHARE UPDATE EXCLUSIVE MODE"))
            loop._analyzer = threading.Thread(target=loop._analyze, args=([posts],))
            loop._analyzer.start()
            wait_until = time.monotonic() + 10
            while loop._analyzer_pid is None and time.monotonic() < wait_until:
                time.sleep(0.01)
            time.sleep(0.2)  # the ANALYZE statement is now waiting for the lock

            stopper = threading.Thread(target=loop._stop_analyzing)
            stopper.start()
            stopper.join(timeout=5)
            stopped_in_time = not stopper.is_alive()
            holder.rollback()  # lets a waited-for ANALYZE end, so that a failure here does not hang
            stopper.join()

            assert stopped_in_time
            assert not loop._analyzer.is_alive()
        assert warnings == []  # a cancelled ANALYZE is not a failure worth a warning
    finally:
        engine.dispose()
