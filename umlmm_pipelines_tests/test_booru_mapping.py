"""Danbooru and e621 mapping: every column of every sample post, tag links, settled days, settings."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from umlmm_pipelines.sources._booru import post_tags, posts, scheduled_days, tags
from umlmm_pipelines.sources.danbooru import DanbooruRun, DanbooruSettings
from umlmm_pipelines.sources.danbooru import map_post as map_danbooru
from umlmm_pipelines.sources.e621 import E621Run, E621Settings
from umlmm_pipelines.sources.e621 import map_post as map_e621

FIXTURES = Path(__file__).parent / "fixtures"

DANBOORU_DELETED = 5101234
DANBOORU_BANNED = 5055555
DANBOORU_NORMAL = 4994142
E621_VIDEO = 5412399
E621_IMAGE = 5412345
E621_DELETED = 5410001

DANBOORU_CATEGORIES = ("general", "artist", "copyright", "character", "meta")
E621_CATEGORIES = ("general", "artist", "contributor", "copyright", "character", "species", "invalid", "meta", "lore")
#: Columns of the posts table filled by the mapping (the rest belong to the shared page loop).
ENTITY_COLUMNS = {
    "id",
    "source",
    "external_id",
    "content_hash",
    "raw",
    "first_seen_at",
    "updated_at",
    "removed_at",
    "fetch_run_id",
}

DANBOORU_ROWS: dict[int, dict[str, Any]] = {
    DANBOORU_DELETED: {
        "post_id": 5101234,
        "upload_date": date(2022, 2, 27),
        "posted_at": datetime(2022, 2, 27, 19, 11, 52, 318000, tzinfo=UTC),
        "edited_at": datetime(2022, 3, 2, 14, 40, 11, 6000, tzinfo=UTC),
        "rating": "g",
        "score": 3,
        "up_score": 3,
        "down_score": 0,
        "fav_count": 4,
        "md5": "3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f",
        "file_url": "https://cdn.donmai.us/original/3f/9c/3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f.jpg",
        "large_file_url": "https://cdn.donmai.us/sample/3f/9c/sample-3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f.jpg",
        "preview_file_url": "https://cdn.donmai.us/180x180/3f/9c/3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f.jpg",
        "width": 1200,
        "height": 1600,
        "file_size": 412233,
        "file_ext": "jpg",
        "duration": None,
        "source_url": "https://twitter.com/example_artist/status/1497990000000000000",
        "parent_id": None,
        "uploader_id": 601234,
        "approver_id": None,
        "tag_count": 9,
        "is_deleted": True,
        "is_banned": False,
        "is_pending": False,
        "is_flagged": False,
        "change_seq": None,
    },
    DANBOORU_BANNED: {
        "post_id": 5055555,
        "upload_date": date(2022, 1, 30),
        "posted_at": datetime(2022, 1, 30, 8, 25, 7, 771000, tzinfo=UTC),
        "edited_at": datetime(2024, 11, 8, 23, 2, 55, 410000, tzinfo=UTC),
        "rating": "s",
        "score": 41,
        "up_score": 43,
        "down_score": -2,
        "fav_count": 52,
        "md5": None,
        "file_url": None,
        "large_file_url": None,
        "preview_file_url": None,
        "width": 2480,
        "height": 3508,
        "file_size": 9120455,
        "file_ext": "png",
        "duration": None,
        "source_url": "https://i.pximg.net/img-original/img/2022/01/29/21/00/01/95812345_p0.png",
        "parent_id": None,
        "uploader_id": 499001,
        "approver_id": 508806,
        "tag_count": 7,
        "is_deleted": False,
        "is_banned": True,
        "is_pending": False,
        "is_flagged": False,
        "change_seq": None,
    },
    DANBOORU_NORMAL: {
        "post_id": 4994142,
        "upload_date": date(2021, 12, 21),
        "posted_at": datetime(2021, 12, 21, 13, 2, 13, 706000, tzinfo=UTC),
        "edited_at": datetime(2024, 7, 10, 16, 21, 31, 782000, tzinfo=UTC),
        "rating": "s",
        "score": 10,
        "up_score": 10,
        "down_score": 0,
        "fav_count": 10,
        "md5": "cd91f0000b9574bf142d125a1e886e5c",
        "file_url": "https://cdn.donmai.us/original/cd/91/cd91f0000b9574bf142d125a1e886e5c.png",
        "large_file_url": "https://cdn.donmai.us/sample/cd/91/sample-cd91f0000b9574bf142d125a1e886e5c.jpg",
        "preview_file_url": "https://cdn.donmai.us/180x180/cd/91/cd91f0000b9574bf142d125a1e886e5c.jpg",
        "width": 2000,
        "height": 2828,
        "file_size": 4527472,
        "file_ext": "png",
        "duration": None,
        "source_url": "https://i.pximg.net/img-original/img/2020/08/11/12/41/43/83599609_p0.png",
        "parent_id": None,
        "uploader_id": 772564,
        "approver_id": None,
        "tag_count": 23,
        "is_deleted": False,
        "is_banned": False,
        "is_pending": False,
        "is_flagged": False,
        "change_seq": None,
    },
}

E621_ROWS: dict[int, dict[str, Any]] = {
    E621_VIDEO: {
        "post_id": 5412399,
        "upload_date": date(2025, 4, 19),
        "posted_at": datetime(2025, 4, 19, 11, 12, 59, 330000, tzinfo=UTC),
        "edited_at": datetime(2025, 4, 19, 11, 40, 2, 114000, tzinfo=UTC),
        "rating": "s",
        "score": 57,
        "up_score": 57,
        "down_score": 0,
        "fav_count": 61,
        "md5": "0e5d6c7b8a9f41e2d3c4b5a69788a7b6",
        "file_url": "https://static1.e621.net/data/0e/5d/0e5d6c7b8a9f41e2d3c4b5a69788a7b6.webm",
        "large_file_url": "https://static1.e621.net/data/sample/0e/5d/0e5d6c7b8a9f41e2d3c4b5a69788a7b6.jpg",
        "preview_file_url": "https://static1.e621.net/data/preview/0e/5d/0e5d6c7b8a9f41e2d3c4b5a69788a7b6.jpg",
        "width": 1920,
        "height": 1080,
        "file_size": 18733211,
        "file_ext": "webm",
        "duration": 12.533,
        "source_url": "https://x.com/example_artist/status/1913000000000000000",
        "parent_id": 5412345,
        "uploader_id": 1180055,
        "approver_id": 171673,
        "tag_count": 14,
        "is_deleted": False,
        "is_banned": None,
        "is_pending": False,
        "is_flagged": False,
        "change_seq": 61878890,
    },
    E621_IMAGE: {
        "post_id": 5412345,
        "upload_date": date(2025, 4, 19),
        "posted_at": datetime(2025, 4, 19, 2, 41, 7, 512000, tzinfo=UTC),
        "edited_at": datetime(2025, 4, 20, 13, 3, 11, 208000, tzinfo=UTC),
        "rating": "s",
        "score": 209,
        "up_score": 212,
        "down_score": -3,
        "fav_count": 498,
        "md5": "4b2f0c8e9a1d7f36c5e4b3a2918d7c6e",
        "file_url": "https://static1.e621.net/data/4b/2f/4b2f0c8e9a1d7f36c5e4b3a2918d7c6e.png",
        "large_file_url": "https://static1.e621.net/data/sample/4b/2f/4b2f0c8e9a1d7f36c5e4b3a2918d7c6e.jpg",
        "preview_file_url": "https://static1.e621.net/data/preview/4b/2f/4b2f0c8e9a1d7f36c5e4b3a2918d7c6e.jpg",
        "width": 2400,
        "height": 3000,
        "file_size": 6120448,
        "file_ext": "png",
        "duration": None,
        "source_url": (
            "https://www.furaffinity.net/view/60123456/\n"
            "https://d.furaffinity.net/art/example_artist/1745030000/1745030000.example_artist_fox.png"
        ),
        "parent_id": None,
        "uploader_id": 1180055,
        "approver_id": 171673,
        "tag_count": 18,
        "is_deleted": False,
        "is_banned": None,
        "is_pending": False,
        "is_flagged": False,
        "change_seq": 61877231,
    },
    E621_DELETED: {
        "post_id": 5410001,
        "upload_date": date(2025, 4, 17),
        "posted_at": datetime(2025, 4, 17, 17, 5, 44, 19000, tzinfo=UTC),
        "edited_at": datetime(2025, 4, 19, 6, 16, 30, 771000, tzinfo=UTC),
        "rating": "s",
        "score": 3,
        "up_score": 4,
        "down_score": -1,
        "fav_count": 2,
        "md5": "a91c7e3d52f04b8e96d1c0f2b7a4e835",
        "file_url": None,
        "large_file_url": None,
        "preview_file_url": None,
        "width": 1280,
        "height": 1024,
        "file_size": 402118,
        "file_ext": "jpg",
        "duration": None,
        "source_url": None,
        "parent_id": None,
        "uploader_id": 998877,
        "approver_id": None,
        "tag_count": 9,
        "is_deleted": True,
        "is_banned": None,
        "is_pending": False,
        "is_flagged": False,
        "change_seq": 61879004,
    },
}

E621_TAGS: dict[int, dict[str, list[str]]] = {
    E621_VIDEO: {
        "general": ["anthro", "solo", "walking"],
        "artist": ["example_artist"],
        "character": ["example_character"],
        "species": ["canid", "canine", "fox", "mammal"],
        "meta": ["2025", "animated", "hd_(video)", "sound", "webm"],
    },
    E621_IMAGE: {
        "general": [
            "anthro",
            "blue_eyes",
            "clothed",
            "clothing",
            "fur",
            "looking_at_viewer",
            "smile",
            "solo",
            "standing",
        ],
        "artist": ["example_artist"],
        "character": ["example_character"],
        "species": ["canid", "canine", "fox", "mammal"],
        "meta": ["2025", "digital_media_(artwork)", "hi_res"],
    },
    E621_DELETED: {
        "general": ["feral", "outside", "solo"],
        "artist": ["conditional_dnp", "another_artist"],
        "species": ["felid", "feline", "mammal"],
        "meta": ["2025"],
    },
}


def load(site: str, name: str) -> Any:
    return json.loads((FIXTURES / site / name).read_text(encoding="utf-8"))


def danbooru_post(post_id: int) -> dict[str, Any]:
    [post] = [p for p in load("danbooru", "posts_page.json") if p["id"] == post_id]
    return post


def e621_post(post_id: int) -> dict[str, Any]:
    [post] = [p for p in load("e621", "posts_page.json")["posts"] if p["id"] == post_id]
    return post


def link_pairs(mapped: Any) -> list[tuple[str, str]]:
    """The post's tag links as sorted (tag, category) pairs; a duplicate link stays visible.

    A link names its tag; the tag's category travels with the tag row it resolves to.
    """
    category = {row["name"]: row["category"] for row in mapped.reference_rows(tags)}
    return sorted((link["tag"], category[link["tag"]]) for link in mapped.child_rows(post_tags))


def tag_pairs(mapped: Any) -> list[tuple[str, str]]:
    return sorted((row["name"], row["category"]) for row in mapped.reference_rows(tags))


def expected_pairs(by_category: dict[str, list[str]]) -> list[tuple[str, str]]:
    return sorted((name, category) for category, names in by_category.items() for name in names)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 5, 10, hour, minute, tzinfo=UTC)


# --- Danbooru: each sample post, every column -------------------------------------------------------


@pytest.mark.parametrize("post_id", [DANBOORU_DELETED, DANBOORU_BANNED, DANBOORU_NORMAL])
def test_danbooru_sample_post_maps_every_column_exactly(post_id: int) -> None:
    assert map_danbooru(danbooru_post(post_id)).row == DANBOORU_ROWS[post_id]


def test_danbooru_row_fills_every_mapped_column_of_the_posts_table() -> None:
    row = map_danbooru(danbooru_post(DANBOORU_NORMAL)).row
    assert set(row) == {c.name for c in posts.columns} - ENTITY_COLUMNS


def test_danbooru_page_keeps_all_three_posts_in_page_order() -> None:
    mapped = [map_danbooru(p) for p in load("danbooru", "posts_page.json")]
    assert [m.row["post_id"] for m in mapped] == [DANBOORU_DELETED, DANBOORU_BANNED, DANBOORU_NORMAL]


def test_danbooru_deleted_post_is_flagged_deleted_and_keeps_its_urls() -> None:
    row = map_danbooru(danbooru_post(DANBOORU_DELETED)).row
    assert row["is_deleted"] is True
    assert row["md5"] == "3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f"
    assert row["file_url"] == "https://cdn.donmai.us/original/3f/9c/3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f.jpg"
    assert row["large_file_url"] == "https://cdn.donmai.us/sample/3f/9c/sample-3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f.jpg"
    assert row["preview_file_url"] == "https://cdn.donmai.us/180x180/3f/9c/3f9c2b7e1d0a4c5b8e6f7a9d0c1b2e3f.jpg"


def test_danbooru_banned_post_without_md5_or_urls_is_still_mapped() -> None:
    post = danbooru_post(DANBOORU_BANNED)
    assert "md5" not in post and "file_url" not in post and "md5" not in post["media_asset"]
    mapped = map_danbooru(post)
    assert mapped.row["is_banned"] is True
    assert (
        mapped.row["md5"],
        mapped.row["file_url"],
        mapped.row["large_file_url"],
        mapped.row["preview_file_url"],
    ) == (None, None, None, None)
    assert mapped.row["post_id"] == 5055555
    assert mapped.row["width"] == 2480 and mapped.row["height"] == 3508
    assert len(mapped.child_rows(post_tags)) == 7


def test_danbooru_banned_post_trimmed_to_id_and_flag_never_raises() -> None:
    mapped = map_danbooru({"id": 77, "is_banned": True})
    assert mapped.row["post_id"] == 77
    assert mapped.row["is_banned"] is True
    assert mapped.row["md5"] is None and mapped.row["file_url"] is None
    assert mapped.row["posted_at"] is None and mapped.row["upload_date"] is None
    assert mapped.child_rows(post_tags) == []
    assert mapped.reference_rows(tags) == []


def test_danbooru_md5_falls_back_to_the_media_asset() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    del post["md5"]
    assert map_danbooru(post).row["md5"] == "cd91f0000b9574bf142d125a1e886e5c"


@pytest.mark.parametrize("post_id", [DANBOORU_DELETED, DANBOORU_BANNED, DANBOORU_NORMAL])
def test_danbooru_timestamps_are_utc_aware(post_id: int) -> None:
    row = map_danbooru(danbooru_post(post_id)).row
    for column in ("posted_at", "edited_at"):
        assert row[column].tzinfo is not None
        assert row[column].utcoffset() == timedelta(0)
    assert row["upload_date"] == row["posted_at"].date()


def test_danbooru_evening_us_eastern_upload_falls_on_the_next_utc_day() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["created_at"] = "2021-12-21T21:30:05.250-05:00"
    row = map_danbooru(post).row
    assert row["posted_at"] == datetime(2021, 12, 22, 2, 30, 5, 250000, tzinfo=UTC)
    assert row["posted_at"].utcoffset() == timedelta(0)
    assert row["upload_date"] == date(2021, 12, 22)


def test_danbooru_summer_offset_is_converted_to_utc() -> None:
    row = map_danbooru(danbooru_post(DANBOORU_NORMAL)).row
    # updated_at is "2024-07-10T12:21:31.782-04:00" (EDT)
    assert row["edited_at"] == datetime(2024, 7, 10, 16, 21, 31, 782000, tzinfo=UTC)


def test_danbooru_created_at_without_timezone_is_taken_as_utc() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["created_at"] = "2021-12-21T23:30:00.000"
    row = map_danbooru(post).row
    assert row["posted_at"] == datetime(2021, 12, 21, 23, 30, tzinfo=UTC)
    assert row["posted_at"].utcoffset() == timedelta(0)
    assert row["upload_date"] == date(2021, 12, 21)


def test_danbooru_width_and_height_come_from_image_dimensions() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["image_width"], post["image_height"] = 640, 480
    row = map_danbooru(post).row
    assert (row["width"], row["height"]) == (640, 480)


def test_danbooru_duration_comes_from_the_media_asset() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["file_ext"] = "mp4"
    post["media_asset"]["duration"] = 8.366
    row = map_danbooru(post).row
    assert row["duration"] == 8.366
    assert row["file_ext"] == "mp4"


def test_danbooru_empty_source_becomes_none() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["source"] = ""
    assert map_danbooru(post).row["source_url"] is None


def test_danbooru_non_url_source_is_kept_verbatim() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["source"] = "scanned from a magazine"
    assert map_danbooru(post).row["source_url"] == "scanned from a magazine"


def test_danbooru_parent_and_approver_ids_are_mapped() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["parent_id"], post["approver_id"] = 4994000, 508806
    row = map_danbooru(post).row
    assert (row["parent_id"], row["approver_id"]) == (4994000, 508806)


def test_danbooru_pending_and_flagged_flags_are_mapped() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["is_pending"], post["is_flagged"] = True, True
    row = map_danbooru(post).row
    assert (row["is_pending"], row["is_flagged"], row["is_deleted"], row["is_banned"]) == (True, True, False, False)


def test_danbooru_has_no_change_seq() -> None:
    for post in load("danbooru", "posts_page.json"):
        assert map_danbooru(post).row["change_seq"] is None


# --- Danbooru: tags -----------------------------------------------------------------------------------


def test_danbooru_normal_post_links_each_tag_with_its_category() -> None:
    mapped = map_danbooru(danbooru_post(DANBOORU_NORMAL))
    assert link_pairs(mapped) == expected_pairs(
        {
            "general": [
                "1girl",
                "animal_ears",
                "black_eyes",
                "black_hair",
                "coat",
                "grabbing_own_breast",
                "hair_ornament",
                "hairband",
                "holding",
                "holding_mask",
                "japanese_clothes",
                "long_hair",
                "looking_at_viewer",
                "mask",
                "ponytail",
                "smile",
                "solo",
            ],
            "artist": ["shirokuro_neko_(ouma_haruka)"],
            "copyright": ["utawarerumono", "utawarerumono:_itsuwari_no_kamen"],
            "character": ["kuon_(utawarerumono)"],
            "meta": ["absurdres", "highres"],
        }
    )


def test_danbooru_deleted_post_links_each_tag_with_its_category() -> None:
    mapped = map_danbooru(danbooru_post(DANBOORU_DELETED))
    assert link_pairs(mapped) == expected_pairs(
        {
            "general": ["1girl", "blue_eyes", "long_hair", "school_uniform", "smile", "solo"],
            "artist": ["example_artist"],
            "copyright": ["original"],
            "meta": ["translation_request"],
        }
    )


def test_danbooru_banned_post_links_each_tag_with_its_category() -> None:
    mapped = map_danbooru(danbooru_post(DANBOORU_BANNED))
    assert link_pairs(mapped) == expected_pairs(
        {
            "general": ["1boy", "black_hair", "jacket", "male_focus", "solo"],
            "artist": ["banned_artist_x"],
            "meta": ["highres"],
        }
    )


@pytest.mark.parametrize("post_id", [DANBOORU_DELETED, DANBOORU_BANNED, DANBOORU_NORMAL])
def test_danbooru_links_follow_the_tag_string_category_fields(post_id: int) -> None:
    post = danbooru_post(post_id)
    expected = {c: post[f"tag_string_{c}"].split() for c in DANBOORU_CATEGORIES}
    assert link_pairs(map_danbooru(post)) == expected_pairs(expected)


@pytest.mark.parametrize("post_id", [DANBOORU_DELETED, DANBOORU_BANNED, DANBOORU_NORMAL])
def test_danbooru_linked_tags_are_exactly_the_tag_string(post_id: int) -> None:
    post = danbooru_post(post_id)
    linked = [tag for tag, _ in link_pairs(map_danbooru(post))]
    assert linked == sorted(post["tag_string"].split())
    assert len(linked) == post["tag_count"]


@pytest.mark.parametrize("post_id", [DANBOORU_DELETED, DANBOORU_BANNED, DANBOORU_NORMAL])
def test_danbooru_tag_rows_match_the_links(post_id: int) -> None:
    mapped = map_danbooru(danbooru_post(post_id))
    assert tag_pairs(mapped) == link_pairs(mapped)
    assert set(mapped.references) == {tags}
    assert set(mapped.children) == {post_tags}


def test_danbooru_link_and_tag_rows_carry_only_their_columns() -> None:
    mapped = map_danbooru(danbooru_post(DANBOORU_NORMAL))
    assert all(set(link) == {"tag"} for link in mapped.child_rows(post_tags))
    assert all(set(row) == {"name", "category"} for row in mapped.reference_rows(tags))


def test_danbooru_without_category_strings_maps_tag_string_as_general() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    for category in DANBOORU_CATEGORIES:
        del post[f"tag_string_{category}"]
    mapped = map_danbooru(post)
    expected = sorted((tag, "general") for tag in post["tag_string"].split())
    assert link_pairs(mapped) == expected
    assert tag_pairs(mapped) == expected
    assert len(expected) == 23


def test_danbooru_tag_in_two_categories_is_linked_once_with_the_first() -> None:
    post = danbooru_post(DANBOORU_NORMAL)
    post["tag_string_general"] = "solo shared_tag"
    post["tag_string_artist"] = ""
    post["tag_string_copyright"] = ""
    post["tag_string_character"] = ""
    post["tag_string_meta"] = "shared_tag highres"
    mapped = map_danbooru(post)
    expected = [("highres", "meta"), ("shared_tag", "general"), ("solo", "general")]
    assert link_pairs(mapped) == expected
    assert tag_pairs(mapped) == expected


# --- e621: each sample post, every column --------------------------------------------------------------


@pytest.mark.parametrize("post_id", [E621_VIDEO, E621_IMAGE, E621_DELETED])
def test_e621_sample_post_maps_every_column_exactly(post_id: int) -> None:
    assert map_e621(e621_post(post_id)).row == E621_ROWS[post_id]


def test_e621_row_fills_every_mapped_column_of_the_posts_table() -> None:
    row = map_e621(e621_post(E621_IMAGE)).row
    assert set(row) == {c.name for c in posts.columns} - ENTITY_COLUMNS


def test_e621_page_is_read_from_the_legacy_posts_wrapper() -> None:
    body = load("e621", "posts_page.json")
    records = E621Run.extract_posts(None, body, "2025-04-19")  # type: ignore[arg-type]
    assert [map_e621(r).row["post_id"] for r in records] == [E621_VIDEO, E621_IMAGE, E621_DELETED]


def test_e621_video_maps_webm_duration_and_sample_url() -> None:
    row = map_e621(e621_post(E621_VIDEO)).row
    assert row["file_ext"] == "webm"
    assert row["duration"] == 12.533
    assert row["file_url"] == "https://static1.e621.net/data/0e/5d/0e5d6c7b8a9f41e2d3c4b5a69788a7b6.webm"
    assert row["large_file_url"] == "https://static1.e621.net/data/sample/0e/5d/0e5d6c7b8a9f41e2d3c4b5a69788a7b6.jpg"
    assert (row["width"], row["height"], row["file_size"]) == (1920, 1080, 18733211)


def test_e621_image_has_no_duration() -> None:
    row = map_e621(e621_post(E621_IMAGE)).row
    assert row["duration"] is None
    assert row["file_ext"] == "png"


def test_e621_preview_url_is_the_jpg_preview() -> None:
    row = map_e621(e621_post(E621_IMAGE)).row
    assert row["preview_file_url"] == "https://static1.e621.net/data/preview/4b/2f/4b2f0c8e9a1d7f36c5e4b3a2918d7c6e.jpg"


def test_e621_deleted_post_is_kept_with_null_urls_and_its_md5() -> None:
    row = map_e621(e621_post(E621_DELETED)).row
    assert row["is_deleted"] is True
    assert row["md5"] == "a91c7e3d52f04b8e96d1c0f2b7a4e835"
    assert (row["file_url"], row["large_file_url"], row["preview_file_url"]) == (None, None, None)
    assert (row["width"], row["height"], row["file_size"], row["file_ext"]) == (1280, 1024, 402118, "jpg")


def test_e621_score_total_up_and_down_are_mapped() -> None:
    row = map_e621(e621_post(E621_IMAGE)).row
    assert (row["score"], row["up_score"], row["down_score"], row["fav_count"]) == (209, 212, -3, 498)


def test_e621_sources_are_joined_with_newlines() -> None:
    row = map_e621(e621_post(E621_IMAGE)).row
    assert row["source_url"] == (
        "https://www.furaffinity.net/view/60123456/\n"
        "https://d.furaffinity.net/art/example_artist/1745030000/1745030000.example_artist_fox.png"
    )


def test_e621_no_sources_becomes_none() -> None:
    assert map_e621(e621_post(E621_DELETED)).row["source_url"] is None


def test_e621_parent_id_comes_from_relationships() -> None:
    assert map_e621(e621_post(E621_VIDEO)).row["parent_id"] == 5412345
    assert map_e621(e621_post(E621_IMAGE)).row["parent_id"] is None


def test_e621_change_seq_is_mapped() -> None:
    changes = [map_e621(e621_post(i)).row["change_seq"] for i in (E621_VIDEO, E621_IMAGE, E621_DELETED)]
    assert changes == [61878890, 61877231, 61879004]


def test_e621_pending_flagged_and_deleted_flags_are_mapped() -> None:
    post = e621_post(E621_IMAGE)
    post["flags"].update(pending=True, flagged=True, deleted=False)
    row = map_e621(post).row
    assert (row["is_pending"], row["is_flagged"], row["is_deleted"]) == (True, True, False)


def test_e621_has_no_banned_state() -> None:
    for post in load("e621", "posts_page.json")["posts"]:
        assert map_e621(post).row["is_banned"] is None


def test_e621_upload_date_is_the_utc_day_of_an_evening_us_eastern_upload() -> None:
    row = map_e621(e621_post(E621_IMAGE)).row
    # created_at is "2025-04-18T22:41:07.512-04:00"
    assert row["posted_at"] == datetime(2025, 4, 19, 2, 41, 7, 512000, tzinfo=UTC)
    assert row["posted_at"].utcoffset() == timedelta(0)
    assert row["upload_date"] == date(2025, 4, 19)


@pytest.mark.parametrize("post_id", [E621_VIDEO, E621_IMAGE, E621_DELETED])
def test_e621_timestamps_are_utc_aware(post_id: int) -> None:
    row = map_e621(e621_post(post_id)).row
    for column in ("posted_at", "edited_at"):
        assert row[column].utcoffset() == timedelta(0)


# --- e621: tags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("post_id", [E621_VIDEO, E621_IMAGE, E621_DELETED])
def test_e621_sample_post_links_each_tag_with_its_category(post_id: int) -> None:
    mapped = map_e621(e621_post(post_id))
    assert link_pairs(mapped) == expected_pairs(E621_TAGS[post_id])
    assert tag_pairs(mapped) == link_pairs(mapped)


@pytest.mark.parametrize("post_id", [E621_VIDEO, E621_IMAGE, E621_DELETED])
def test_e621_tag_count_is_the_number_of_tags(post_id: int) -> None:
    mapped = map_e621(e621_post(post_id))
    assert mapped.row["tag_count"] == len(mapped.child_rows(post_tags))
    assert mapped.row["tag_count"] == sum(len(v) for v in e621_post(post_id)["tags"].values())


def test_e621_links_tags_of_all_nine_categories() -> None:
    post = e621_post(E621_IMAGE)
    post["tags"] = {category: [f"{category}_tag"] for category in E621_CATEGORIES}
    mapped = map_e621(post)
    expected = sorted((f"{c}_tag", c) for c in E621_CATEGORIES)
    assert link_pairs(mapped) == expected
    assert tag_pairs(mapped) == expected
    assert mapped.row["tag_count"] == 9


def test_e621_tag_in_two_categories_is_linked_once_with_the_first() -> None:
    post = e621_post(E621_IMAGE)
    post["tags"] = {c: [] for c in E621_CATEGORIES}
    post["tags"]["artist"] = ["shared_name"]
    post["tags"]["lore"] = ["shared_name", "lore_only"]
    mapped = map_e621(post)
    expected = [("lore_only", "lore"), ("shared_name", "artist")]
    assert link_pairs(mapped) == expected
    assert tag_pairs(mapped) == expected


# --- external ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", [DanbooruRun, E621Run])
def test_integer_post_id_is_the_external_id(run: type) -> None:
    assert run.external_id(None, {"id": 5101234}) == "5101234"


@pytest.mark.parametrize("run", [DanbooruRun, E621Run])
@pytest.mark.parametrize("bad_id", ["5101234", 5101234.0, None])
def test_non_integer_post_id_makes_external_id_raise(run: type, bad_id: Any) -> None:
    with pytest.raises(ValueError, match="not an integer"):
        run.external_id(None, {"id": bad_id})


def test_sample_posts_external_ids() -> None:
    danbooru = [DanbooruRun.external_id(None, p) for p in load("danbooru", "posts_page.json")]  # type: ignore[arg-type]
    e621 = [E621Run.external_id(None, p) for p in load("e621", "posts_page.json")["posts"]]  # type: ignore[arg-type]
    assert danbooru == ["5101234", "5055555", "4994142"]
    assert e621 == ["5412399", "5412345", "5410001"]


# --- scheduled days ----------------------------------------------------------------------------------------


def test_scheduled_days_settle_6h_at_3am_includes_yesterday() -> None:
    settings = DanbooruSettings(StartDate=date(2024, 1, 1), SettleHours=6)
    assert scheduled_days(settings, at(3)) == ["2024-05-10", "2024-05-09"]


def test_scheduled_days_settle_6h_at_8am_is_only_today() -> None:
    settings = DanbooruSettings(StartDate=date(2024, 1, 1), SettleHours=6)
    assert scheduled_days(settings, at(8)) == ["2024-05-10"]


def test_scheduled_days_drop_yesterday_once_exactly_settle_hours_passed() -> None:
    settings = DanbooruSettings(StartDate=date(2024, 1, 1), SettleHours=6)
    assert scheduled_days(settings, at(5, 59)) == ["2024-05-10", "2024-05-09"]
    assert scheduled_days(settings, at(6)) == ["2024-05-10"]


def test_scheduled_days_settle_30h_at_3am_includes_two_earlier_days() -> None:
    settings = DanbooruSettings(StartDate=date(2024, 1, 1), SettleHours=30)
    assert scheduled_days(settings, at(3)) == ["2024-05-10", "2024-05-09", "2024-05-08"]


def test_scheduled_days_settle_0h_is_only_today() -> None:
    settings = DanbooruSettings(StartDate=date(2024, 1, 1), SettleHours=0)
    assert scheduled_days(settings, at(0, 1)) == ["2024-05-10"]


def test_scheduled_days_never_go_before_start_date() -> None:
    settings = DanbooruSettings(StartDate=date(2024, 5, 9), SettleHours=30)
    assert scheduled_days(settings, at(3)) == ["2024-05-10", "2024-05-09"]
    settings = DanbooruSettings(StartDate=date(2024, 5, 10), SettleHours=30)
    assert scheduled_days(settings, at(3)) == ["2024-05-10"]


def test_scheduled_days_are_empty_before_start_date() -> None:
    settings = DanbooruSettings(StartDate=date(2024, 5, 11), SettleHours=30)
    assert scheduled_days(settings, at(3)) == []


def test_scheduled_days_use_the_utc_day_of_a_non_utc_now() -> None:
    settings = E621Settings(StartDate=date(2024, 1, 1), SettleHours=6)
    eastern_evening = datetime(2024, 5, 9, 23, 0, tzinfo=timezone(timedelta(hours=-4)))  # 03:00 UTC on the 10th
    assert scheduled_days(settings, eastern_evening) == ["2024-05-10", "2024-05-09"]


# --- settings ---------------------------------------------------------------------------------------------------


def test_danbooru_page_size_above_200_is_refused() -> None:
    assert DanbooruSettings(PageSize=200).page_size == 200
    with pytest.raises(ValidationError):
        DanbooruSettings(PageSize=201)


def test_e621_page_size_above_320_is_refused() -> None:
    assert E621Settings(PageSize=320).page_size == 320
    with pytest.raises(ValidationError):
        E621Settings(PageSize=321)


def test_e621_requests_per_second_above_2_is_refused() -> None:
    assert E621Settings(RequestsPerSecond=2).requests_per_second == 2
    with pytest.raises(ValidationError):
        E621Settings(RequestsPerSecond=3)


@pytest.mark.parametrize("settings_model", [DanbooruSettings, E621Settings])
@pytest.mark.parametrize("tag_filter", ["date:2024-01-01", "rating:g date:>=2024-01-01", "status:any date:today"])
def test_tag_filter_with_a_date_term_is_refused(settings_model: type, tag_filter: str) -> None:
    with pytest.raises(ValidationError, match="date:"):
        settings_model(Tags=tag_filter)


@pytest.mark.parametrize("settings_model", [DanbooruSettings, E621Settings])
def test_tag_filter_without_a_date_term_is_accepted(settings_model: type) -> None:
    assert settings_model(Tags="rating:g  -status:deleted ").tags == "rating:g  -status:deleted"


def test_e621_default_user_agent_names_the_project_and_e621() -> None:
    user_agent = E621Settings().user_agent
    assert user_agent.startswith("umlmm-pipelines/")
    assert "e621" in user_agent


@pytest.mark.parametrize("settings_model", [DanbooruSettings, E621Settings])
def test_api_key_is_a_secret_never_dumped(settings_model: type) -> None:
    secret = "k3y-0f-7he-u5er-abcdef"
    settings = settings_model(Login="someone", ApiKey=secret)
    assert isinstance(settings.api_key, SecretStr)
    assert settings.api_key.get_secret_value() == secret
    for dumped in (settings.model_dump(mode="json"), settings.model_dump(mode="json", by_alias=True)):
        assert secret not in json.dumps(dumped)
    assert secret not in repr(settings)
    assert secret not in str(settings)
