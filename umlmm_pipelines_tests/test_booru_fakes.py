"""The fake Danbooru/e621 servers follow the real pagination rules (the ingester tests rely on them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from umlmm_pipelines_tests.fakes.booru_server import (
    DanbooruState,
    E621State,
    danbooru_state_from_fixtures,
    e621_state_from_fixtures,
    make_danbooru_post,
    make_e621_post,
    running_fake_danbooru,
    running_fake_e621,
    synthetic_danbooru_state,
    synthetic_e621_state,
)
from umlmm_pipelines_tests.fakes.corpus import (
    DANBOORU_CATEGORIES,
    SyntheticDanbooruCorpus,
    make_danbooru_posts,
    make_e621_posts,
    utc_day_of,
)

UA = {"User-Agent": "umlmm-tests/1.0 (by umlmm)"}
REPO = Path(__file__).resolve().parent.parent


def _ids(response: httpx.Response) -> list[int]:
    body = response.json()
    posts = body["posts"] if isinstance(body, dict) else body
    return [post["id"] for post in posts]


def _walk_before(client: httpx.Client, limit: int, tags: str = "") -> tuple[list[int], int]:
    """Keyset-walk /posts.json with page=b<min id> until the empty page; (ids, requests)."""
    seen: list[int] = []
    page: str | None = None
    requests = 0
    while True:
        params: dict[str, str | int] = {"limit": limit, "tags": tags}
        if page:
            params["page"] = page
        response = client.get("/posts.json", params=params)
        requests += 1
        assert response.status_code == 200
        ids = _ids(response)
        if not ids:
            return seen, requests
        assert ids == sorted(ids, reverse=True)
        seen.extend(ids)
        page = f"b{ids[-1]}"


def test_danbooru_b_paging_walks_every_post_once() -> None:
    state = synthetic_danbooru_state(1_050, "2024-01-01", lazy=True)
    state.add_posts(danbooru_state_from_fixtures().posts.values())  # older explicit posts below the corpus
    expected = sorted(state.post_ids(), reverse=True)
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        seen, requests = _walk_before(client, 200)
        assert seen == expected and len(set(seen)) == 1_053
        assert requests == 7  # 6 pages (the last one short) + the empty page
        numbered = [i for n in (1, 2, 3) for i in _ids(client.get("/posts.json", params={"limit": 200, "page": n}))]
        assert numbered == expected[:600]


def test_e621_b_paging_walks_every_post_once() -> None:
    state = synthetic_e621_state(700, "2024-01-01", lazy=False)
    with running_fake_e621(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        seen, requests = _walk_before(client, 320)
        assert seen == sorted(state.post_ids(), reverse=True) and requests == 4


def test_a_paging_returns_the_smallest_ids_above_in_desc_order() -> None:
    state = DanbooruState()
    state.add_posts(make_danbooru_post(post_id) for post_id in (10, 11, 13, 20, 25, 30, 31))
    e621 = E621State()
    e621.add_posts(make_e621_post(post_id) for post_id in (10, 11, 13, 20, 25, 30, 31))
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        assert _ids(client.get("/posts.json", params={"page": "a11", "limit": 3})) == [25, 20, 13]
        assert _ids(client.get("/posts.json", params={"page": "a25", "limit": 3})) == [31, 30]
        assert _ids(client.get("/posts.json", params={"page": "a31", "limit": 3})) == []
        assert _ids(client.get("/posts.json", params={"page": "b25", "limit": 2})) == [20, 13]
    with running_fake_e621(e621) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        assert _ids(client.get("/posts.json", params={"page": "a11", "limit": 3})) == [25, 20, 13]


def test_danbooru_clamps_limit_silently() -> None:
    state = synthetic_danbooru_state(450, "2024-01-01")
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        assert len(client.get("/posts.json", params={"limit": 500}).json()) == 200
        assert len(client.get("/posts.json", params={"limit": 0}).json()) == 1
        assert len(client.get("/posts.json", params={"limit": "abc"}).json()) == 1  # Ruby "abc".to_i == 0
        assert len(client.get("/posts.json").json()) == 20
        beyond = client.get("/posts.json", params={"page": 1001})
        assert beyond.status_code == 410
        assert beyond.json()["error"] == "PaginationExtension::PaginationError"
        assert beyond.json()["message"] == "You cannot go beyond page 1000."
        assert client.get("/posts.json", params={"page": 1000}).text == "[]"


def test_e621_rejects_out_of_range_limits_with_410() -> None:
    state = synthetic_e621_state(400, "2024-01-01")
    with running_fake_e621(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        for bad in (321, "abc", -1, 1000):
            response = client.get("/posts.json", params={"limit": bad})
            assert response.status_code == 410, bad
            assert response.json()["success"] is False and "320" in response.json()["message"]
        assert len(client.get("/posts.json", params={"limit": 320}).json()["posts"]) == 320
        assert len(client.get("/posts.json").json()["posts"]) == 75
        assert client.get("/posts.json", params={"limit": 0}).json() == {"posts": []}
        assert client.get("/posts.json", params={"page": 751}).status_code == 410
        assert client.get("/posts.json", params={"page": 750}).status_code == 200


def test_end_of_data_shapes() -> None:
    with running_fake_danbooru() as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        response = client.get("/posts.json", params={"page": "b1", "limit": 200})
        assert response.status_code == 200 and response.json() == [] and response.text == "[]"
        assert response.headers["content-type"].startswith("application/json")
    with running_fake_e621() as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        response = client.get("/posts.json", params={"page": "a99999999", "limit": 320})
        assert response.status_code == 200 and response.json() == {"posts": []}
        assert client.get("/tags.json", params={"search[name]": "nope"}).json() == {"tags": []}


def test_fixture_states_serve_the_sample_posts() -> None:
    with running_fake_danbooru() as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        posts = client.get("/posts.json", params={"limit": 200}).json()
        assert posts == json.loads((REPO / "umlmm_pipelines_tests/fixtures/danbooru/posts_page.json").read_text())
        assert client.get("/posts/4994142.json").json()["md5"] == "cd91f0000b9574bf142d125a1e886e5c"
        assert client.get("/posts/1.json").status_code == 404
    with running_fake_e621() as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        body = client.get("/posts.json", params={"limit": 320}).json()
        fixture = json.loads((REPO / "umlmm_pipelines_tests/fixtures/e621/posts_page.json").read_text())
        assert body == fixture
        assert client.get("/posts/5412345.json").json()["post"]["id"] == 5412345


def test_date_filter_uses_the_utc_day() -> None:
    state = DanbooruState()
    state.add_posts(
        [
            make_danbooru_post(1, "2023-12-31T19:30:00.000-05:00"),  # 2024-01-01 00:30 UTC
            make_danbooru_post(2, "2024-01-01T12:00:00.000-05:00"),
            make_danbooru_post(3, "2024-01-01T21:30:00.000-05:00"),  # 2024-01-02 02:30 UTC
            make_danbooru_post(4, "2024-01-02T01:00:00.000+09:00"),  # 2024-01-01 16:00 UTC
        ]
    )
    state.add_synthetic_posts(300, "2024-01-03", lazy=True)
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        assert _ids(client.get("/posts.json", params={"tags": "date:2024-01-01"})) == [4, 2, 1]
        assert _ids(client.get("/posts.json", params={"tags": "date:2024-01-02 order:id"})) == [3]
        lazy = client.get("/posts.json", params={"tags": "date:2024-01-03", "limit": 200, "page": "a0"}).json()
        assert len(lazy) == 200 and {utc_day_of(p["created_at"]) for p in lazy} == {"2024-01-03"}
        assert min(p["created_at"] for p in lazy).startswith("2024-01-02T")  # US Eastern rendering of early UTC
        assert client.get("/counts/posts.json", params={"tags": "date:2024-01-03"}).json() == {"counts": {"posts": 300}}
        assert _ids(client.get("/posts.json", params={"tags": "date:2024-01-01..2024-01-02 -date:2024-01-02"})) == [
            4,
            2,
            1,
        ]
    e621 = E621State()
    e621.add_posts([make_e621_post(7, "2023-12-31T23:59:59.999-05:00"), make_e621_post(8, "2024-01-02T00:00:00Z")])
    with running_fake_e621(e621) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        assert _ids(client.get("/posts.json", params={"tags": "date:2024-01-01"})) == [7]


def test_plain_tag_terms_and_negation() -> None:
    state = DanbooruState()
    state.add_posts(
        [
            make_danbooru_post(1, tags={"general": ["1girl", "solo"], "copyright": ["original"]}),
            make_danbooru_post(2, tags={"general": ["1girl", "smile"], "character": ["kuon_(utawarerumono)"]}),
            make_danbooru_post(3, tags={"general": ["1boy", "solo"]}),
        ]
    )
    e621 = E621State()
    e621.add_posts(
        [
            make_e621_post(1, tags={"general": ["solo"], "species": ["fox"]}),
            make_e621_post(2, tags={"general": ["duo"], "species": ["fox", "wolf"]}),
        ]
    )
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        assert _ids(client.get("/posts.json", params={"tags": "1girl"})) == [2, 1]
        assert _ids(client.get("/posts.json", params={"tags": "solo -1girl"})) == [3]
        assert _ids(client.get("/posts.json", params={"tags": "kuon_(utawarerumono) rating:s"})) == [2]
        assert _ids(client.get("/posts.json", params={"tags": "order:score id:>1"})) == [3, 2]
    with running_fake_e621(e621) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        assert _ids(client.get("/posts.json", params={"tags": "fox -wolf"})) == [1]
        assert _ids(client.get("/posts.json", params={"tags": "wolf"})) == [2]


def test_forced_responses_are_consumed_in_order() -> None:
    state = danbooru_state_from_fixtures()
    state.force(429, {"success": False, "message": "slow down"}, {"Retry-After": "1"})
    state.force(503, "<html>Cloudflare</html>")
    state.forced_responses.append((200, {}, "{not json"))
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        first = client.get("/posts.json")
        assert first.status_code == 429 and first.headers["retry-after"] == "1"
        assert first.json()["message"] == "slow down"
        assert client.get("/tags.json").status_code == 200  # forced answers are for /posts.json only
        second = client.get("/posts.json")
        assert second.status_code == 503 and second.headers["content-type"].startswith("text/html")
        third = client.get("/posts.json")
        assert third.status_code == 200 and third.text == "{not json"
        with pytest.raises(json.JSONDecodeError):
            third.json()
        assert len(client.get("/posts.json").json()) == 3
    assert [r.path for r in state.requests] == ["/posts.json", "/tags.json"] + ["/posts.json"] * 3
    assert state.forced_responses == []


def test_headers_are_recorded_and_library_user_agents_can_be_blocked() -> None:
    state = e621_state_from_fixtures()
    state.reject_default_user_agents = True
    with running_fake_e621(state) as fake:
        with httpx.Client(base_url=fake.url) as client:  # python-httpx/x.y default agent
            blocked = client.get("/posts.json")
            assert blocked.status_code == 403 and blocked.headers["cf-mitigated"] == "challenge"
            assert blocked.text.startswith("<!DOCTYPE html>")
        with httpx.Client(base_url=fake.url, headers=UA, auth=("me", "key")) as client:
            assert client.get("/posts.json", params={"tags": "fox"}).status_code == 200
    assert state.user_agents()[0].startswith("python-httpx/")
    assert state.user_agents()[1] == UA["User-Agent"]
    assert state.authorizations() == [None, "Basic bWU6a2V5"]
    assert state.requests[1].query == {"tags": "fox"}


def test_edit_add_and_remove_posts_between_runs() -> None:
    state = synthetic_danbooru_state(50, "2024-01-01", lazy=True)
    target = state.post_ids()[10]
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        before = client.get(f"/posts/{target}.json").json()
        state.edit_post(target, score=999, tag_string=before["tag_string"] + " zzz_new_tag")
        state.post(target)["fav_count"] = 12345
        after = client.get(f"/posts/{target}.json").json()
        assert (after["score"], after["fav_count"]) == (999, 12345)
        assert _ids(client.get("/posts.json", params={"tags": "zzz_new_tag"})) == [target]
        state.remove_post(target)
        assert client.get(f"/posts/{target}.json").status_code == 404
        max_before = max(state.post_ids())
        added = state.add_synthetic_posts(5, "2024-01-02")
        assert list(added) == [max_before + n for n in range(1, 6)]
        seen, _ = _walk_before(client, 200)
        assert len(seen) == 54 and target not in seen and seen[:5] == list(reversed(added))


def test_delay_knob_slows_every_answer() -> None:
    state = danbooru_state_from_fixtures()
    state.delay_s = 0.2
    with running_fake_danbooru(state) as fake, httpx.Client(base_url=fake.url, headers=UA) as client:
        started = time.monotonic()
        client.get("/posts.json")
        assert time.monotonic() - started >= 0.2


def test_synthetic_corpus_is_deterministic_and_consistent() -> None:
    posts = make_danbooru_posts(300, "2024-02-29", vocabulary=2_000, tags_per_post=25, seed=7)
    assert posts == make_danbooru_posts(300, "2024-02-29", vocabulary=2_000, tags_per_post=25, seed=7)
    assert [p["id"] for p in posts] == sorted({p["id"] for p in posts}, reverse=True)
    sample_keys = set(json.loads((REPO / "umlmm_pipelines_tests/fixtures/danbooru/posts_page.json").read_text())[0])
    for post in posts:
        assert utc_day_of(post["created_at"]) == "2024-02-29"
        by_category = [post[f"tag_string_{c}"].split() for c in DANBOORU_CATEGORIES]
        everything = sorted(t for names in by_category for t in names)
        assert everything == post["tag_string"].split() and len(set(everything)) == post["tag_count"] == 25
        assert all(post[f"tag_count_{c}"] == len(n) for c, n in zip(DANBOORU_CATEGORIES, by_category, strict=True))
        if not post["is_banned"]:
            assert set(post) == sample_keys and post["media_asset"]["md5"] == post["md5"]
            assert post["file_url"] == post["media_asset"]["variants"][-1]["url"]
    corpus = SyntheticDanbooruCorpus(300, "2024-02-29", vocabulary=2_000, seed=7)
    for post in posts[::17]:
        assert corpus.post_json(post["id"]) == json.dumps(post, separators=(",", ":"))
    e621 = make_e621_posts(50, "2024-01-01")
    assert {utc_day_of(p["created_at"]) for p in e621} == {"2024-01-01"}


@pytest.mark.timeout(120)
def test_standalone_server_process_serves_the_synthetic_corpus() -> None:
    command = [sys.executable, "-m", "umlmm_pipelines_tests.fakes.booru_server", "danbooru"]
    command += ["--port", "0", "--posts", "1000", "--day", "2024-01-01"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, headers=UA) as client:
            seen, requests = _walk_before(client, 200, tags="date:2024-01-01")
        assert len(seen) == 1000 and requests == 6
    finally:
        process.terminate()
        process.wait(timeout=10)
