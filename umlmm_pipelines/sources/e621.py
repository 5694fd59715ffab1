"""e621: posts and their tags, one daily partition per upload day (UTC).

``GET /posts.json`` answers ``{"posts": [...]}`` (legacy format), at most 320 per page (the
site answers 410 above that). e621 requires a descriptive User-Agent and allows 2 requests/s;
we default to 1. Deleted posts appear only with ``status:any`` (the default filter) and come
with null file URLs; they are kept with their flags.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from umlmm_pipelines.ingestion.http import DEFAULT_USER_AGENT
from umlmm_pipelines.ingestion.source import MappedRecord, Record, SourceError
from umlmm_pipelines.sources._booru import (
    BooruRun,
    BooruSettings,
    booru_source,
    mapped_post,
    whole,
)

#: e621's tag categories, in the order its ``tags`` object lists them.
CATEGORIES = ("general", "artist", "contributor", "copyright", "character", "species", "invalid", "meta", "lore")
E621_USER_AGENT = DEFAULT_USER_AGENT.replace("self-hosted", "set Sources__E621__UserAgent to add your e621 username")


class E621Settings(BooruSettings):
    base_url: str = Field("https://e621.net", alias="BaseUrl")
    tags: str = Field("status:any", alias="Tags")
    page_size: int = Field(320, alias="PageSize", ge=1, le=320)
    requests_per_second: float = Field(1.0, alias="RequestsPerSecond", gt=0, le=2)
    user_agent: str = Field(E621_USER_AGENT, alias="UserAgent", min_length=1)


class E621Run(BooruRun):
    display_name = "e621"

    def extract_posts(self, body: Any, day: str) -> list[Record]:
        found = body.get("posts") if isinstance(body, dict) else body
        if not isinstance(found, list):
            raise SourceError(f"e621: /posts.json for {day} returned no 'posts' list: {str(body)[:200]}")
        return found

    def map(self, record: Record) -> MappedRecord:
        return map_post(record)


def map_post(post: Record) -> MappedRecord:
    """Columns for one e621 post (legacy JSON), its tag links and its tags with their categories."""
    file = post.get("file") or {}
    score = post.get("score") or {}
    flags = post.get("flags") or {}
    relationships = post.get("relationships") or {}
    raw_tags = post.get("tags") or {}
    by_category = {c: list(raw_tags.get(c) or []) for c in CATEGORIES}
    by_category.update({c: list(v or []) for c, v in raw_tags.items() if c not in by_category})
    sources = post.get("sources") or []
    columns: dict[str, Any] = {
        "rating": post.get("rating"),
        "score": whole(score.get("total"), "score"),
        "up_score": whole(score.get("up"), "up_score"),
        "down_score": whole(score.get("down"), "down_score"),
        "fav_count": whole(post.get("fav_count"), "fav_count"),
        "md5": file.get("md5"),
        "file_url": file.get("url"),
        "large_file_url": (post.get("sample") or {}).get("url"),
        "preview_file_url": (post.get("preview") or {}).get("url"),
        "width": whole(file.get("width"), "width"),
        "height": whole(file.get("height"), "height"),
        "file_size": whole(file.get("size"), "file_size"),
        "file_ext": file.get("ext"),
        "duration": post.get("duration"),
        "source_url": "\n".join(sources) or None,
        "parent_id": whole(relationships.get("parent_id"), "parent_id"),
        "uploader_id": whole(post.get("uploader_id"), "uploader_id"),
        "approver_id": whole(post.get("approver_id"), "approver_id"),
        "is_deleted": flags.get("deleted"),
        "is_banned": None,  # e621 has no banned state; hidden posts are deleted ones
        "is_pending": flags.get("pending"),
        "is_flagged": flags.get("flagged"),
        "change_seq": whole(post.get("change_seq"), "change_seq"),
    }
    return mapped_post(post, by_category, columns)


SOURCE = booru_source(
    name="e621",
    display_name="e621",
    description=(
        "e621 posts and tags by upload day (UTC): /posts.json?tags=<filter> date:<day>, paged with b<id>, "
        "1 request/s by default and never above 2, with a descriptive User-Agent."
    ),
    settings_model=E621Settings,
    run_factory=E621Run,
)
