"""Danbooru and e621 through the real asset against fake servers that follow the sites' paging rules."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import pytest

from umlmm_pipelines_tests.fakes.booru_server import (
    FakeBooru,
    running_fake_danbooru,
    running_fake_e621,
    synthetic_danbooru_state,
    synthetic_e621_state,
)
from umlmm_pipelines_tests.helpers import fetch_runs, make_defs, rows, run_source

DAY = "2024-01-01"
POSTS = 450  # three pages of 200 (Danbooru) / two of 320 (e621)


@dataclass
class Site:
    name: str
    fake: FakeBooru
    env_prefix: str

    def env(self, **settings: str) -> dict[str, str]:
        rate = "2" if self.name == "e621" else "0"  # e621 is never asked more than 2 requests/s, even here
        base = {"BaseUrl": self.fake.url, "RequestsPerSecond": rate, "BackoffSeconds": "0.01",
                "StartDate": "2023-12-01"}
        return {f"Sources__{self.env_prefix}__{k}": v for k, v in {**base, **settings}.items()}


@pytest.fixture(params=["danbooru", "e621"])
def site(request) -> Iterator[Site]:
    if request.param == "danbooru":
        with running_fake_danbooru(synthetic_danbooru_state(POSTS, DAY, lazy=False)) as fake:
            yield Site("danbooru", fake, "Danbooru")
    else:
        with running_fake_e621(synthetic_e621_state(POSTS, DAY, lazy=False)) as fake:
            yield Site("e621", fake, "E621")


def _ingest(catalog_url, instance, site, day=DAY, **settings):
    return run_source(make_defs(catalog_url, site.env(**settings)), site.name, instance, partition_key=day)


def _count(catalog_url, table, source):
    return rows(catalog_url, f"SELECT count(*) AS n FROM {table} WHERE source = :s", s=source)[0]["n"]


def _expected_links(site) -> int:
    return sum(len(site.fake.state.tags_of(site.fake.state.post(i))) for i in site.fake.state.post_ids())


def test_partition_run_walks_every_page_with_keyset_paging(catalog_url, instance, site):
    result = _ingest(catalog_url, instance, site)

    assert result.success
    [run] = fetch_runs(catalog_url, site.name)
    assert (run["status"], run["partition_key"]) == ("completed", DAY)
    assert (run["records_fetched"], run["records_created"], run["records_failed"]) == (POSTS, POSTS, 0)
    assert _count(catalog_url, "posts", site.name) == POSTS
    assert _count(catalog_url, "post_tags", site.name) == _expected_links(site)
    pages = [r.query for r in site.fake.state.posts_requests()]
    assert pages[0]["page"] == "b2147483647" and all(p["page"].startswith("b") for p in pages)
    # The sites read date: in US Eastern (anonymous): UTC 2024-01-01 spans Eastern Dec 31 and Jan 1,
    # and the day before is searched too, so a zone further west still leaves no gap.
    assert all("date:2023-12-30..2024-01-01" in p["tags"] for p in pages)
    assert rows(catalog_url, "SELECT count(*) AS n FROM source_cursors WHERE source = :s", s=site.name)[0]["n"] == 0


def test_rerun_of_the_same_partition_counts_everything_unchanged(catalog_url, instance, site):
    _ingest(catalog_url, instance, site)
    links_before = _count(catalog_url, "post_tags", site.name)

    assert _ingest(catalog_url, instance, site).success

    second = fetch_runs(catalog_url, site.name)[-1]
    assert (second["records_fetched"], second["records_unchanged"], second["records_created"],
            second["records_updated"]) == (POSTS, POSTS, 0, 0)
    assert _count(catalog_url, "post_tags", site.name) == links_before


def test_one_edited_post_is_exactly_one_update_and_its_removed_tag_is_unlinked(sqlite_url, instance, site):
    _ingest(sqlite_url, instance, site)
    post_id = site.fake.state.post_ids()[5]
    post = site.fake.state.post(post_id)
    old_tags = sorted(site.fake.state.tags_of(post))
    dropped, kept = old_tags[0], old_tags[1:]
    if site.name == "danbooru":
        for category in ("general", "artist", "copyright", "character", "meta"):
            names = [t for t in post[f"tag_string_{category}"].split() if t != dropped]
            post[f"tag_string_{category}"] = " ".join(names)
        post["tag_string"] = " ".join(sorted(kept + ["brand_new_tag"]))
        post["tag_string_general"] = " ".join(sorted(post["tag_string_general"].split() + ["brand_new_tag"]))
    else:
        post["tags"] = {c: [t for t in names if t != dropped] for c, names in post["tags"].items()}
        post["tags"]["general"] = sorted(post["tags"]["general"] + ["brand_new_tag"])
    site.fake.state.invalidate()

    _ingest(sqlite_url, instance, site)

    latest = fetch_runs(sqlite_url, site.name)[-1]
    assert (latest["records_updated"], latest["records_unchanged"]) == (1, POSTS - 1)
    query = ("SELECT t.name AS tag FROM post_tags pt JOIN tags t ON t.id = pt.tag_id "
             "WHERE pt.source = :s AND pt.post_id = :p")
    linked = {r["tag"] for r in rows(sqlite_url, query, s=site.name, p=post_id)}
    assert dropped not in linked and "brand_new_tag" in linked and set(kept) <= linked
    [tag] = rows(sqlite_url, "SELECT category FROM tags WHERE source = :s AND name = 'brand_new_tag'", s=site.name)
    assert tag["category"] == "general"


def test_429_with_retry_after_is_waited_out(sqlite_url, instance, site):
    site.fake.state.force(429, {"success": False, "message": "Throttled: Too many requests"}, {"Retry-After": "1"})
    started = datetime.now(UTC)

    assert _ingest(sqlite_url, instance, site).success

    assert (datetime.now(UTC) - started).total_seconds() >= 1
    assert fetch_runs(sqlite_url, site.name)[-1]["records_created"] == POSTS


def test_503_burst_of_cloudflare_pages_is_retried(sqlite_url, instance, site):
    for _ in range(3):
        site.fake.state.force(503, "<html><title>Just a moment...</title></html>", {"Content-Type": "text/html"})

    assert _ingest(sqlite_url, instance, site, MaxRetries="4").success

    assert fetch_runs(sqlite_url, site.name)[-1]["records_created"] == POSTS


def test_malformed_page_fails_clearly_keeps_committed_pages_and_the_resumed_run_fills_the_rest(
    catalog_url, instance, site
):
    page_size = 200 if site.name == "danbooru" else 320
    site.fake.state.delay_s = 0
    first = _ingest(catalog_url, instance, site)  # populate nothing yet: just to learn nothing changed
    assert first.success
    # A fresh day to walk: new posts on the next day.
    day = "2024-01-02"
    site.fake.state.add_synthetic_posts(POSTS, day, seed=3)
    site.fake.state.clear_requests()
    # The second page answers with a broken body every time (more often than the retries).
    original_search = site.fake.state.search_json
    calls = {"n": 0}

    def broken_second_page(query, page, limit):
        calls["n"] += 1
        if page and page != "b2147483647":
            return b'{"posts": [ {"id": 1, '
        return original_search(query, page, limit)

    site.fake.state.search_json = broken_second_page  # type: ignore[method-assign]
    failed = _ingest(catalog_url, instance, site, day=day, MaxRetries="2")

    assert not failed.success
    run = fetch_runs(catalog_url, site.name)[-1]
    assert run["status"] == "failed"
    assert "non-JSON response" in run["error_message"] and site.fake.url in run["error_message"]
    assert run["records_created"] == page_size and run["pages_committed"] == 1
    query = "SELECT value FROM source_cursors WHERE source = :s AND scope = :d"
    [cursor] = rows(catalog_url, query, s=site.name, d=day)

    site.fake.state.search_json = original_search  # type: ignore[method-assign]
    resumed = _ingest(catalog_url, instance, site, day=day)

    assert resumed.success
    last = fetch_runs(catalog_url, site.name)[-1]
    assert last["records_created"] == POSTS - page_size and last["records_updated"] == 0
    assert site.fake.state.posts_requests()[-2].query["page"] == f"b{cursor['value']}" or any(
        r.query["page"] == f"b{cursor['value']}" for r in site.fake.state.posts_requests())
    ids = [r["post_id"] for r in rows(catalog_url, "SELECT post_id FROM posts WHERE source = :s AND upload_date = :d",
                                      s=site.name, d=datetime.fromisoformat(day).date())]
    assert len(ids) == len(set(ids)) == POSTS  # no duplicates, no gaps


def test_silently_clamped_page_size_still_walks_to_the_end(sqlite_url, instance):
    state = synthetic_danbooru_state(POSTS, DAY, lazy=False)
    state.max_limit = 100  # the site clamps our limit=200 to 100 without saying so
    with running_fake_danbooru(state) as fake:
        site = Site("danbooru", fake, "Danbooru")
        assert _ingest(sqlite_url, instance, site).success

    assert fetch_runs(sqlite_url, "danbooru")[-1]["records_created"] == POSTS
    assert len(state.posts_requests()) == 6  # 5 pages of 100 (the last one short) and the empty end page


def test_e621_page_size_is_never_above_320_and_the_user_agent_is_descriptive(sqlite_url, instance):
    with running_fake_e621(synthetic_e621_state(POSTS, DAY, lazy=False)) as fake:
        fake.state.reject_default_user_agents = True
        site = Site("e621", fake, "E621")
        assert _ingest(sqlite_url, instance, site).success

    assert {r.query["limit"] for r in fake.state.posts_requests()} == {"320"}
    assert all(ua.startswith("umlmm-pipelines/") and "e621" in ua for ua in fake.state.user_agents())


def test_credentials_travel_as_basic_auth_and_never_reach_urls_rows_or_logs(sqlite_url, instance, site, capfd):
    secret = "s3cr3t-api-key-123"

    result = _ingest(sqlite_url, instance, site, Login="someone", ApiKey=secret)

    assert result.success
    expected = "Basic " + base64.b64encode(f"someone:{secret}".encode()).decode()
    assert set(site.fake.state.authorizations()) == {expected}
    assert all(secret not in str(r.query) and secret not in r.path for r in site.fake.state.requests)
    [run] = fetch_runs(sqlite_url, site.name)
    assert secret not in str(run["parameters"]) and run["parameters"]["settings"]["ApiKey"] == "**********"
    assert secret not in capfd.readouterr().err
    records = instance.get_records_for_run(result.run_id).records
    assert all(secret not in (r.event_log_entry.message or "") for r in records)


def test_a_post_that_cannot_be_mapped_is_failed_and_logged_while_the_page_is_kept(sqlite_url, instance, site, capfd):
    broken_id = site.fake.state.post_ids()[3]
    site.fake.state.post(broken_id)["fav_count"] = "lots"
    site.fake.state.invalidate()

    assert _ingest(sqlite_url, instance, site).success

    run = fetch_runs(sqlite_url, site.name)[-1]
    assert (run["records_failed"], run["records_created"]) == (1, POSTS - 1)
    logged = [line for line in capfd.readouterr().err.splitlines() if "record_failed" in line]
    assert len(logged) == 1 and f"id={broken_id}" in logged[0] and "fav_count is 'lots'" in logged[0]


def test_deleted_and_banned_fixture_posts_are_kept_with_their_flags(sqlite_url, instance):
    with running_fake_danbooru() as fake:
        site = Site("danbooru", fake, "Danbooru")
        days = sorted({fake.state._utc_day(i, fake.state.post(i)) for i in fake.state.post_ids()})
        for day in days:
            assert _ingest(sqlite_url, instance, site, day=day, StartDate="2020-01-01").success

    posts = {r["post_id"]: r for r in rows(sqlite_url, "SELECT * FROM posts WHERE source = 'danbooru'")}
    assert len(posts) == 3
    banned = next(p for p in posts.values() if p["is_banned"])
    assert banned["md5"] is None and banned["file_url"] is None
    deleted = next(p for p in posts.values() if p["is_deleted"])
    assert deleted["file_url"] is not None


def test_a_range_of_days_runs_in_one_run_and_the_backfill_policy_chunks_by_seven(sqlite_url, instance, site):
    site.fake.state.add_synthetic_posts(30, "2024-01-02", seed=5)
    site.fake.state.add_synthetic_posts(40, "2024-01-03", seed=6)
    defs = make_defs(sqlite_url, site.env())
    job = defs.resolve_job_def(f"{site.name}_ingestion")

    result = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"})

    assert result.success
    [run] = fetch_runs(sqlite_url, site.name)
    assert run["partition_key"] == "2024-01-01...2024-01-03" and run["records_created"] == POSTS + 70
    policy = defs.resolve_assets_def(dg.AssetKey([site.name, "posts"])).backfill_policy
    assert policy.max_partitions_per_run == 7


def test_schedule_requests_today_and_yesterday_while_it_settles(sqlite_url, instance, site):
    defs = make_defs(sqlite_url, site.env(SettleHours="6"))
    schedule = defs.get_schedule_def(f"{site.name}_schedule")

    def tick(hour):
        return schedule.evaluate_tick(dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(),
            scheduled_execution_time=datetime(2024, 3, 5, hour, 0, tzinfo=UTC)))

    early, late = tick(4), tick(8)

    assert [r.partition_key for r in early.run_requests] == ["2024-03-05", "2024-03-04"]
    assert [r.partition_key for r in late.run_requests] == ["2024-03-05"]
    assert all(r.tags["umlmm/source"] == site.name for r in early.run_requests)


def _three_utc_days_in_eastern(site: Site) -> dict[str, set[int]]:
    """Posts on the UTC days around DAY (ids rising with time), served with date: read in US Eastern."""
    state = site.fake.state
    state.date_zone = "America/New_York"
    first = min(state.post_ids())
    before = set(state.add_synthetic_posts(100, "2023-12-31", seed=3, first_id=first - 100))
    after = set(state.add_synthetic_posts(100, "2024-01-02", seed=4))
    return {"2023-12-31": before, DAY: set(state.post_ids()) - before - after, "2024-01-02": after}


def _stored_days(catalog_url, source) -> dict[int, str]:
    found = rows(catalog_url, "SELECT post_id, upload_date FROM posts WHERE source = :s", s=source)
    return {r["post_id"]: str(r["upload_date"]) for r in found}


def test_a_partition_keeps_exactly_its_utc_day_when_the_site_reads_dates_in_eastern_time(
    sqlite_url, instance, site
):
    days = _three_utc_days_in_eastern(site)

    result = _ingest(sqlite_url, instance, site, PageSize="100")

    assert result.success
    stored = _stored_days(sqlite_url, site.name)
    assert set(stored) == days[DAY] and set(stored.values()) == {DAY}
    [run] = fetch_runs(sqlite_url, site.name)
    assert (run["records_fetched"], run["records_created"]) == (POSTS, POSTS)
    [materialization] = result.asset_materializations_for_node(f"{site.name}__posts")
    # Jan 2 before 05:00 UTC is still Jan 1 in Eastern time: returned by the search, skipped by the run.
    assert materialization.metadata["posts_outside_day"].value > 0
    # The walk stops at the first page entirely before the day instead of paging through Dec 30 and 31.
    assert len(site.fake.state.posts_requests()) <= POSTS // 100 + 4


def test_neighbouring_partitions_cover_every_post_exactly_once(sqlite_url, instance, site):
    days = _three_utc_days_in_eastern(site)

    for day in days:
        assert _ingest(sqlite_url, instance, site, day=day, PageSize="100").success

    stored = _stored_days(sqlite_url, site.name)
    assert {day: {i for i, d in stored.items() if d == day} for day in days} == days
    assert sum(r["records_fetched"] for r in fetch_runs(sqlite_url, site.name)) == sum(map(len, days.values()))


def test_a_site_writing_times_in_another_zone_than_configured_is_warned_about(sqlite_url, instance, site, capfd):
    result = _ingest(sqlite_url, instance, site, SiteTimeZone="Asia/Tokyo")

    assert result.success
    err = capfd.readouterr().err
    assert "writes times with offset -0500 but SiteTimeZone is Asia/Tokyo" in err
    assert err.count("SiteTimeZone is Asia/Tokyo") == 1


def test_an_unknown_site_time_zone_is_a_configuration_error(sqlite_url, site):
    with pytest.raises(Exception, match="'Mars/Olympus' is not an IANA time zone"):
        make_defs(sqlite_url, site.env(SiteTimeZone="Mars/Olympus"))


def test_no_page_is_committed_after_one_whose_write_failed(sqlite_url, instance, site, monkeypatch):
    """Pages are prepared ahead of the write; a failed write must stop every later page, or the
    resume cursor would jump over the failed page's posts."""
    from umlmm_pipelines.ingestion import pages

    real_write = pages.PageLoop.write
    calls = []

    def failing_second_write(self, prepared):
        calls.append(prepared.page.label)
        if len(calls) == 2:
            time.sleep(0.5)  # the next page is prepared and queued meanwhile
            raise RuntimeError("disk full")
        return real_write(self, prepared)

    monkeypatch.setattr(pages.PageLoop, "write", failing_second_write)

    result = _ingest(sqlite_url, instance, site, PageSize="100")

    assert not result.success
    stored = _count(sqlite_url, "posts", site.name)
    assert stored == 100 and len(calls) == 2  # page 1 only; page 3 was never written
    [run] = fetch_runs(sqlite_url, site.name)
    assert (run["status"], run["records_created"], run["pages_committed"]) == ("failed", 100, 1)
    assert "disk full" in run["error_message"]
