"""Danbooru: posts and their tags, one daily partition per upload day (UTC).

``GET /posts.json?tags=<filter> date:<day>&page=b<id>&limit=200`` returns a bare array, newest
first; ``[]`` ends the day. Banned posts come without md5 and file URLs and are kept with their
flags; deleted posts are included by the site and keep their URLs.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from umlmm_pipelines.ingestion.source import MappedRecord, Record, SourceError
from umlmm_pipelines.sources._booru import (
    BooruRun,
    BooruSettings,
    booru_source,
    mapped_post,
    whole,
)

#: Danbooru's tag categories, in the order of its tag_string_<category> fields.
CATEGORIES = ("general", "artist", "copyright", "character", "meta")
_TAG_STRING_KEYS = tuple((category, f"tag_string_{category}") for category in CATEGORIES)


class DanbooruSettings(BooruSettings):
    base_url: str = Field("https://danbooru.donmai.us", alias="BaseUrl")
    page_size: int = Field(200, alias="PageSize", ge=1, le=200)
    requests_per_second: float = Field(1.0, alias="RequestsPerSecond", ge=0)


class DanbooruRun(BooruRun):
    display_name = "Danbooru"

    def extract_posts(self, body: Any, day: str) -> list[Record]:
        if not isinstance(body, list):
            raise SourceError(f"Danbooru: /posts.json for {day} returned {type(body).__name__}, not a list of posts")
        return body

    def map(self, record: Record) -> MappedRecord:
        return map_post(record)


def map_post(post: Record) -> MappedRecord:
    """Columns for one Danbooru post, its tag links and its tags with their categories."""
    by_category = {c: str(post.get(key) or "").split() for c, key in _TAG_STRING_KEYS}
    if not any(by_category.values()) and post.get("tag_string"):
        by_category = {"general": str(post["tag_string"]).split()}
    media = post.get("media_asset") or {}
    columns: dict[str, Any] = {
        "rating": post.get("rating"),
        "score": whole(post.get("score"), "score"),
        "up_score": whole(post.get("up_score"), "up_score"),
        "down_score": whole(post.get("down_score"), "down_score"),
        "fav_count": whole(post.get("fav_count"), "fav_count"),
        "md5": post.get("md5") or media.get("md5"),
        "file_url": post.get("file_url"),
        "large_file_url": post.get("large_file_url"),
        "preview_file_url": post.get("preview_file_url"),
        "width": whole(post.get("image_width"), "width"),
        "height": whole(post.get("image_height"), "height"),
        "file_size": whole(post.get("file_size"), "file_size"),
        "file_ext": post.get("file_ext"),
        "duration": media.get("duration"),
        "source_url": post.get("source") or None,
        "parent_id": whole(post.get("parent_id"), "parent_id"),
        "uploader_id": whole(post.get("uploader_id"), "uploader_id"),
        "approver_id": whole(post.get("approver_id"), "approver_id"),
        "tag_count": whole(post.get("tag_count"), "tag_count"),
        "is_deleted": post.get("is_deleted"),
        "is_banned": post.get("is_banned"),
        "is_pending": post.get("is_pending"),
        "is_flagged": post.get("is_flagged"),
        "change_seq": None,
    }
    return mapped_post(post, by_category, columns)


SOURCE = booru_source(
    name="danbooru",
    display_name="Danbooru",
    description=(
        "Danbooru posts and tags by upload day (UTC): /posts.json?tags=<filter> date:<day>, paged with b<id>. "
        "Deleted and banned posts are kept with their flags."
    ),
    settings_model=DanbooruSettings,
    run_factory=DanbooruRun,
)
