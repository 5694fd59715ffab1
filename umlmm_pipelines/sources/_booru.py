"""What Danbooru and e621 share: the posts/tags tables, daily partitions, b<id> paging, settings.

Both sites page a search with ``page=b<id>`` (posts with smaller ids, newest first) and have
no page cap on that keyset, so one partition (an upload day) is walked from the top until the
site answers with no posts. The lowest id committed is the resume cursor; it is cleared once
the day's walk completes, so the next run of the same day starts from the top again.

Partitions are UTC days, but both sites read ``date:`` in the account's time zone (US Eastern
when anonymous). A run therefore asks for every site day that overlaps its UTC day, plus the
day before (so a zone further west than configured still leaves no gap), keeps the posts whose
``created_at`` falls on the UTC day, skips the newer ones and stops at the first page that is
entirely older.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
import httpx
import sqlalchemy as sa
from pydantic import Field, SecretStr, field_validator

from umlmm_pipelines.catalog.tables import Timestamp, child_table, entity_table, reference_table
from umlmm_pipelines.ingestion.http import HttpSettings, PoliteClient
from umlmm_pipelines.ingestion.source import MappedRecord, Page, Record, RunInputs, SourceError, SourceRun, SourceSpec
from umlmm_pipelines.ingestion.timestamps import parse_timestamp, parse_timestamp_as_written

#: Above any real post id: the first page of a walk is ``b<this>``, so every page is keyset-paged.
TOP_OF_KEYSET = 2_147_483_647

posts = entity_table(
    "posts",
    sa.Column("post_id", sa.BigInteger, nullable=False),
    sa.Column("upload_date", sa.Date, nullable=True),
    sa.Column("posted_at", Timestamp, nullable=True),
    sa.Column("edited_at", Timestamp, nullable=True),
    sa.Column("rating", sa.String(1), nullable=True),
    sa.Column("score", sa.Integer, nullable=True),
    sa.Column("up_score", sa.Integer, nullable=True),
    sa.Column("down_score", sa.Integer, nullable=True),
    sa.Column("fav_count", sa.Integer, nullable=True),
    sa.Column("md5", sa.String(32), nullable=True),
    sa.Column("file_url", sa.Text, nullable=True),
    sa.Column("large_file_url", sa.Text, nullable=True),
    sa.Column("preview_file_url", sa.Text, nullable=True),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("file_size", sa.BigInteger, nullable=True),
    sa.Column("file_ext", sa.String(16), nullable=True),
    sa.Column("duration", sa.Float, nullable=True),
    sa.Column("source_url", sa.Text, nullable=True),
    sa.Column("parent_id", sa.BigInteger, nullable=True),
    sa.Column("uploader_id", sa.BigInteger, nullable=True),
    sa.Column("approver_id", sa.BigInteger, nullable=True),
    sa.Column("tag_count", sa.Integer, nullable=True),
    sa.Column("is_deleted", sa.Boolean, nullable=True),
    sa.Column("is_banned", sa.Boolean, nullable=True),
    sa.Column("is_pending", sa.Boolean, nullable=True),
    sa.Column("is_flagged", sa.Boolean, nullable=True),
    sa.Column("change_seq", sa.BigInteger, nullable=True),
    sa.Index("ix_posts_source_upload_date", "source", "upload_date"),
    sa.Index("ix_posts_md5", "md5"),
)

tags = reference_table(
    "tags",
    ("name",),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
)

#: One row per (post, tag). Integer keys: a first load writes ~25 links per post, and narrow rows
#: with integer indexes are what keeps that affordable. ``tag_id`` implies the source (tags are
#: per source), so (post_id, tag_id) is unique across sites.
post_tags = child_table(
    "post_tags",
    "post_id",
    sa.Column("tag_id", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("post_id", "tag_id"),
    sa.Index("ix_post_tags_tag_id", "tag_id"),
    parent_type=sa.BigInteger(),
    resolve={"tag": (tags, "tag_id")},
)


class BooruSettings(HttpSettings):
    """Settings both image boards take (``Sources__Danbooru__Tags``, ``Sources__E621__PageSize`` …)."""

    base_url: str = Field(alias="BaseUrl")
    tags: str = Field("", alias="Tags", description="search filter added to date:<day>")
    page_size: int = Field(alias="PageSize", ge=1)
    start_date: date = Field(date(2024, 1, 1), alias="StartDate")
    settle_hours: float = Field(6.0, alias="SettleHours", ge=0, le=24 * 30)
    backfill_days_per_run: int = Field(7, alias="BackfillDaysPerRun", ge=1, le=366)
    login: str | None = Field(None, alias="Login")
    api_key: SecretStr | None = Field(None, alias="ApiKey")
    site_time_zone: str = Field(
        "America/New_York", alias="SiteTimeZone",
        description="the zone the site reads date: in: the account's zone, US Eastern when anonymous",
    )

    @field_validator("site_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not an IANA time zone such as America/New_York or UTC") from None
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("tags")
    @classmethod
    def _no_date_in_filter(cls, value: str) -> str:
        if any(term.startswith(("date:", "page:")) for term in value.split()):
            raise ValueError("the tag filter must not contain date: (each partition adds its own day)")
        return value.strip()


def daily_partitions(settings: BooruSettings) -> dg.DailyPartitionsDefinition:
    """Upload days in UTC, up to and including today (``end_offset=1``)."""
    return dg.DailyPartitionsDefinition(start_date=settings.start_date.isoformat(), timezone="UTC", end_offset=1)


def backfill_policy(settings: BooruSettings) -> dg.BackfillPolicy:
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.backfill_days_per_run)


def scheduled_days(settings: BooruSettings, now: datetime) -> list[str]:
    """Today, plus every earlier day that ended less than ``SettleHours`` ago (it may still change)."""
    now = now.astimezone(UTC)
    today = now.date()
    days = [today]
    day = today - timedelta(days=1)
    while day >= settings.start_date and (
        now - datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    ) < timedelta(hours=settings.settle_hours):
        days.append(day)
        day -= timedelta(days=1)
    return [d.isoformat() for d in days if d >= settings.start_date]


class BooruRun(SourceRun):
    """Walks each partition day of a run with b<id> keyset paging."""

    settings: BooruSettings
    display_name: str = ""

    def __init__(self, inputs: RunInputs) -> None:
        super().__init__(inputs)
        auth = None
        if self.settings.login and self.settings.api_key:
            auth = httpx.BasicAuth(self.settings.login, self.settings.api_key.get_secret_value())
        secrets = [self.settings.api_key.get_secret_value()] if self.settings.api_key else []
        self.client = PoliteClient(self.display_name, self.settings.base_url, self.settings, log=self.log,
                                   auth=auth, secrets=secrets)
        #: Posts the date: searches returned that belong to neighbouring UTC days (not counted as fetched).
        self.outside_day = 0
        self._zone_warned = False

    def pages(self) -> Iterator[Page]:
        days = list(self.inputs.partition_keys)
        if not days:
            raise SourceError(f"{self.display_name}: runs need an upload-day partition (e.g. 2024-01-01)")
        for day in days:
            yield from self._walk_day(day)
        self.inputs.report["posts_outside_day"] = self.outside_day

    def _walk_day(self, day: str) -> Iterator[Page]:
        resume = self.inputs.read_cursor(day)
        before = int(resume) if resume else TOP_OF_KEYSET
        if resume:
            self.log.info(f"{self.display_name}: resuming {day} below post {resume}")
        first, last = site_days(date.fromisoformat(day), ZoneInfo(self.settings.site_time_zone))
        search = " ".join(part for part in (self.settings.tags, f"date:{first}..{last}") if part)
        number = 0
        while True:
            number += 1
            params = {"tags": search, "limit": self.settings.page_size, "page": f"b{before}"}
            records = self.extract_posts(self.client.get_json("/posts.json", params=params), day)
            if not records:
                yield Page([], f"{day} end after {number - 1} page(s)", cursor=(day, None))
                return
            ids = [_post_id(r) for r in records]
            known = [i for i in ids if i is not None]
            if not known:
                raise SourceError(f"{self.display_name}: page b{before} of {day} has no post ids; cannot page on")
            before = min(known)
            on_day, newer, older = self._split_by_day(records, day)
            self.outside_day += newer + older
            label = f"{day} page {number} (b{params['page'][1:]})"
            if older and not on_day and not newer:  # the walk is past the day: done
                yield Page([], f"{label}: past the day, end after {number} page(s)", cursor=(day, None))
                return
            yield Page(on_day, label, cursor=(day, str(before)))

    def _split_by_day(self, records: list[Record], day: str) -> tuple[list[Record], int, int]:
        """The posts created on the UTC ``day`` (or of unknown time: mapping judges those), and
        how many were newer and older."""
        on_day: list[Record] = []
        newer = older = 0
        checked_zone = self._zone_warned
        for record in records:
            created = _created_at(record)
            if created is None:
                on_day.append(record)
                continue
            if not checked_zone:  # one post a page tells which zone the site writes in
                self._check_zone(created)
                checked_zone = True
            posted = created.astimezone(UTC).date().isoformat()
            if posted == day:
                on_day.append(record)
            elif posted > day:
                newer += 1
            else:
                older += 1
        return on_day, newer, older

    def _check_zone(self, created: datetime) -> None:
        """Warn once when the site writes times in a zone other than ``SiteTimeZone``.

        The timestamps carry the zone the site reads ``date:`` in; a zone east of the configured
        one could leave the last hours of a UTC day outside every partition's search.
        """
        if self._zone_warned:
            return
        expected = created.astimezone(ZoneInfo(self.settings.site_time_zone)).utcoffset()
        if created.utcoffset() != expected:
            self._zone_warned = True
            self.log.warning(
                f"{self.display_name} writes times with offset {created.strftime('%z')} but SiteTimeZone is "
                f"{self.settings.site_time_zone}; set Sources__{self.display_name}__SiteTimeZone to the "
                "account's zone so that date: searches cover each UTC day"
            )

    @abstractmethod
    def extract_posts(self, body: Any, day: str) -> list[Record]:
        """The posts in a response body; raise SourceError for an unexpected shape."""

    def external_id(self, record: Record) -> str:
        post_id = record["id"]
        if not isinstance(post_id, int) or isinstance(post_id, bool):
            raise ValueError(f"post id {post_id!r} is not an integer")
        return str(post_id)

    def close(self) -> None:
        self.client.close()


def booru_source(
    name: str, display_name: str, description: str, settings_model: type[BooruSettings], run_factory: type[BooruRun]
) -> SourceSpec:
    """The spec of an image board: the shared posts table, daily partitions, chunked backfills."""
    return SourceSpec(
        name=name,
        display_name=display_name,
        asset_name="posts",
        description=description,
        settings_model=settings_model,
        table=posts,
        run_factory=run_factory,
        partitions=daily_partitions,
        backfill_policy=backfill_policy,
        scheduled_partitions=scheduled_days,
    )


def site_days(day: date, zone: ZoneInfo) -> tuple[date, date]:
    """The site days to search for a UTC ``day``: those it overlaps in ``zone``, and one before."""
    start = datetime.combine(day, datetime.min.time(), UTC)
    last_moment = start + timedelta(days=1) - timedelta(microseconds=1)
    return start.astimezone(zone).date() - timedelta(days=1), last_moment.astimezone(zone).date()


def _created_at(record: Record) -> datetime | None:
    """``created_at`` with the offset the site wrote, or None when it is missing or unreadable."""
    try:
        return parse_timestamp_as_written(record.get("created_at")) if isinstance(record, dict) else None
    except ValueError:
        return None


def _post_id(record: Record) -> int | None:
    value = record.get("id") if isinstance(record, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def whole(value: Any, field: str) -> int | None:
    """An integer column's value; anything else is a malformed post (a RecordError upstream)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"{field} is {value!r}, not an integer")


def mapped_post(post: Record, by_category: dict[str, list[str]], columns: dict[str, Any]) -> MappedRecord:
    """A post's row with the columns both sites share, its tag links and its tags.

    ``columns`` are the site-specific columns; a site that reports no tag count (e621) gets
    the number of tags linked.
    """
    posted_at = parse_timestamp(post.get("created_at"))
    links, tag_list = tag_rows(by_category)
    row = {
        "post_id": post["id"],
        "upload_date": posted_at.date() if posted_at else None,
        "posted_at": posted_at,
        "edited_at": parse_timestamp(post.get("updated_at")),
        **columns,
    }
    row.setdefault("tag_count", len(links["tag"]))
    return MappedRecord(row=row, children={post_tags: links}, references={tags: tag_list})


def tag_rows(by_category: dict[str, list[str]]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Link columns and tag columns for a post's tags; a tag listed twice keeps its first category."""
    links: dict[str, str] = {}
    for category, names in reversed(by_category.items()):  # earlier categories overwrite later ones
        links.update(dict.fromkeys(names, category))
    names = list(links)
    return {"tag": names}, {"name": names, "category": list(links.values())}
