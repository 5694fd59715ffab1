"""Fake Danbooru and e621 servers on 127.0.0.1 that follow the real pagination rules and can misbehave on demand.

Rules implemented (see ``/work/shared/sources/{danbooru,e621}/README.md``):

* Danbooru ``GET /posts.json`` answers a bare JSON array; ``limit`` is silently clamped to 1..200 (default 20);
  ``page=b<ID>`` gives ids < ID (id DESC), ``page=a<ID>`` the ``limit`` smallest ids > ID (still id DESC),
  ``page=N`` is 1-based OFFSET paging (id DESC) capped at 1000 (410 PaginationError beyond). End of data: ``[]``.
* e621 ``GET /posts.json`` answers the legacy ``{"posts": [...]}``; ``limit`` must be 0..320 (default 75), anything
  else (too big, negative, non-numeric) is a 410; same a/b semantics, numbered pages capped at 750.
  End of data: ``{"posts": []}``.
* ``tags``: plain terms (all must be present; ``-term`` negates; ``~term`` = at least one of the ``~`` terms), the
  metatags ``date:`` (UTC day of ``created_at``; ``YYYY-MM-DD``, ``A..B``, ``>=A``, ``<A`` ...), ``id:`` (same range
  forms), ``status:`` (deleted/active/pending/flagged/banned/any/all) and ``rating:``. ``order:`` and every other
  known metatag are ignored; ids always come out id DESC.

The mutable :class:`DanbooruState` / :class:`E621State` holds explicit post dicts (``posts``; edit them in place) and
optionally lazy synthetic corpora (``corpora``; posts generated on demand from a seed), plus misbehaviour knobs
(``forced_responses``, ``delay_s``, ``reject_default_user_agents``) and the log of every request (``requests``).

Run one as a separate process (for benchmarks)::

    python -m umlmm_pipelines_tests.fakes.booru_server danbooru --port 0 --posts 100000 --day 2024-01-01

It prints its base URL on stdout once listening and serves until killed.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import json
import re
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from umlmm_pipelines_tests.fakes.corpus import (
    DEFAULT_DANBOORU_FIRST_ID,
    DEFAULT_E621_FIRST_ID,
    E621_CATEGORIES,
    SyntheticDanbooruCorpus,
    SyntheticE621Corpus,
    set_danbooru_tags,
    utc_day_of,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# (status, headers, body). body: dict/list -> JSON; str/bytes -> sent as is (text/html when it starts with "<",
# else application/json, unless headers carry a Content-Type).
ForcedResponse = tuple[int, dict[str, str], Any]

CLOUDFLARE_CHALLENGE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head>'
    "<body><noscript>Enable JavaScript and cookies to continue</noscript></body></html>"
)
BLOCKED_USER_AGENT_PREFIXES = ("python-httpx", "python-requests")
_COMPACT = (",", ":")


def load_danbooru_fixture(name: str) -> Any:
    return json.loads((FIXTURES / "danbooru" / name).read_text("utf-8"))


def load_e621_fixture(name: str) -> Any:
    return json.loads((FIXTURES / "e621" / name).read_text("utf-8"))


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]  # last value wins, like Rails
    headers: dict[str, str]  # lower-case names
    raw_query: str = ""
    at: float = 0.0  # time.monotonic() when received

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("user-agent")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


# ---------------------------------------------------------------------------------------------------------------
# Tag query parsing
# ---------------------------------------------------------------------------------------------------------------

_DANBOORU_METATAGS = frozenset(
    """status rating limit is id date age filesize filetype parent child md5 width height duration mpixels ratio
    score upvote downvote upvotes downvotes favcount embedded tagcount pixiv_id pixiv order user approver fav ordfav
    pool ordpool source commenter comm noter noteupdater artcomm commentaryupdater commentary search has ai
    unaliased exif favgroup ordfavgroup gentags arttags chartags copytags metatags random disapproved flagger
    appealer updater upvoter downvoter note comment lastcomm newpool level updated""".split()
)
_E621_METATAGS = frozenset(
    """id date rating status order change score favcount fav width height md5 type filetype source user uploader
    approver pool set limit ratinglocked notelocked statuslocked parent child delreason deletedby description note
    tagcount gentags arttags chartags copytags spectags invtags metatags lortags filesize mpixels ratio duration
    upvote downvote voted votedup voteddown randseed hassource hasdescription ischild isparent inpool
    pending_replacements artverified commenter comm noter noteupdater locked commentcount comment_count updated
    disapproved""".split()
)

_RANGE = re.compile(r"^(?:(?P<op>>=|<=|>|<|=)?(?P<single>[^.]+)|(?P<low>[^.]*)\.\.(?P<high>[^.]*))$")


def _range_predicate(value: str, convert: Callable[[str], Any]) -> Callable[[Any], bool]:
    """``X``, ``>X``, ``>=X``, ``<X``, ``<=X``, ``A..B`` (inclusive), ``..B``, ``A..`` -> predicate.

    Unparseable values give a predicate that never matches."""
    match = _RANGE.match(value.strip())
    try:
        if not match:
            raise ValueError(value)
        if match["single"] is not None:
            target = convert(match["single"])
            op = match["op"] or "="
            return {
                "=": lambda v: v == target,
                ">": lambda v: v > target,
                ">=": lambda v: v >= target,
                "<": lambda v: v < target,
                "<=": lambda v: v <= target,
            }[op]
        low = convert(match["low"]) if match["low"] else None
        high = convert(match["high"]) if match["high"] else None
    except (ValueError, KeyError):
        return lambda v: False
    return lambda v: (low is None or v >= low) and (high is None or v <= high)


def _iso_day(text: str) -> str:
    return date.fromisoformat(text).isoformat()


@dataclass
class TagQuery:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    any_of: list[str] = field(default_factory=list)
    dates: list[tuple[bool, Callable[[str], bool]]] = field(default_factory=list)  # (negated, predicate on UTC day)
    ids: list[tuple[bool, Callable[[int], bool]]] = field(default_factory=list)
    statuses: list[tuple[bool, str]] = field(default_factory=list)
    ratings: list[tuple[bool, set[str]]] = field(default_factory=list)

    @property
    def needs_post(self) -> bool:
        """False when only the id and the UTC day are needed to decide (lazy posts need not be generated)."""
        return bool(self.include or self.exclude or self.any_of or self.statuses or self.ratings)


def parse_tag_query(tags: str, metatags: frozenset[str]) -> TagQuery:
    query = TagQuery()
    for term in tags.lower().split():
        negated = term.startswith("-") and len(term) > 1
        optional = term.startswith("~") and len(term) > 1
        bare = term[1:] if negated or optional else term
        name, sep, value = bare.partition(":")
        if sep and name in metatags:
            if name == "date":
                query.dates.append((negated, _range_predicate(value, _iso_day)))
            elif name == "id":
                query.ids.append((negated, _range_predicate(value, int)))
            elif name == "status":
                query.statuses.append((negated, value))
            elif name == "rating":
                query.ratings.append((negated, {v[:1] for v in value.split(",") if v}))
            continue  # order: and every other metatag: ignored
        if negated:
            query.exclude.append(bare)
        elif optional:
            query.any_of.append(bare)
        else:
            query.include.append(term)
    return query


def _ruby_to_i(text: str | None) -> int:
    """Ruby's String#to_i: leading integer or 0."""
    match = re.match(r"\s*([+-]?\d+)", text or "")
    return int(match.group(1)) if match else 0


_SEQUENTIAL_PAGE = re.compile(r"^([ab])(\d+)$", re.IGNORECASE)


class PaginationError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BooruState:
    """What a fake booru serves. Tests mutate it between (or during) runs; all access goes through ``lock``."""

    posts: dict[int, dict[str, Any]] = field(default_factory=dict)  # explicit posts by id (override corpora)
    corpora: list[Any] = field(default_factory=list)  # lazy Synthetic*Corpus objects
    removed_ids: set[int] = field(default_factory=set)  # ids hidden from the corpora
    tags: list[dict[str, Any]] = field(default_factory=list)  # served by /tags.json
    forced_responses: list[ForcedResponse] = field(default_factory=list)  # consumed FIFO by GET /posts.json
    delay_s: float = 0.0  # sleep before answering every request
    #: The zone ``date:`` days are read in: the real sites use the account's zone (US Eastern when anonymous).
    date_zone: str = "UTC"
    reject_default_user_agents: bool = False  # 403 Cloudflare page for a missing/library User-Agent
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _version: int = field(default=0, repr=False)
    _ids_cache: tuple[tuple[int, int, int, int], list[int]] | None = field(default=None, repr=False)

    flavour: ClassVar[str] = ""
    metatags: ClassVar[frozenset[str]] = frozenset()
    default_limit: ClassVar[int] = 20
    max_limit: ClassVar[int] = 200
    max_page: ClassVar[int] = 1000
    default_first_id: ClassVar[int] = 1

    # -- flavour hooks -------------------------------------------------------------------------------------------
    def tags_of(self, post: Mapping[str, Any]) -> set[str]:
        raise NotImplementedError

    def status_of(self, post: Mapping[str, Any]) -> dict[str, bool]:
        raise NotImplementedError

    def _new_corpus(self, count: int, day: str, seed: int, first_id: int, **kwargs: Any) -> Any:
        raise NotImplementedError

    # -- corpus management ---------------------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Call after adding/removing keys of ``posts`` or entries of ``corpora`` directly (methods do it for you)."""
        with self.lock:
            self._version += 1

    def add_posts(self, posts: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            for post in posts:
                self.posts[int(post["id"])] = post
                self.removed_ids.discard(int(post["id"]))
            self._version += 1

    def add_post(self, post: dict[str, Any]) -> dict[str, Any]:
        self.add_posts([post])
        return post

    def remove_post(self, post_id: int) -> None:
        """Make a post disappear (hard delete, as if expunged). KeyError if it is not served."""
        with self.lock:
            if self.lookup(post_id) is None:
                raise KeyError(post_id)
            self.posts.pop(post_id, None)
            if any(post_id in corpus.ids for corpus in self.corpora):
                self.removed_ids.add(post_id)
            self._version += 1

    def post(self, post_id: int) -> dict[str, Any]:
        """The live dict of a post (a lazy one is materialised into ``posts`` first), to edit in place."""
        with self.lock:
            found = self.posts.get(post_id)
            if found is not None:
                return found
            found = self.lookup(post_id)
            if found is None:
                raise KeyError(post_id)
            self.posts[post_id] = found
            self._version += 1
            return found

    def edit_post(self, post_id: int, **changes: Any) -> dict[str, Any]:
        """Set top-level fields of a post (e.g. ``score=99``, ``tag_string=...``) and return it."""
        with self.lock:
            post = self.post(post_id)
            post.update(changes)
            return post

    def lookup(self, post_id: int) -> dict[str, Any] | None:
        """The post as served (a fresh dict for a lazy post), or None."""
        with self.lock:
            found = self.posts.get(post_id)
            if found is not None:
                return found
            if post_id in self.removed_ids:
                return None
            for corpus in self.corpora:
                if post_id in corpus.ids:
                    return corpus.post(post_id)
            return None

    def post_ids(self) -> list[int]:
        """Every served id, ascending (cached; see ``invalidate``)."""
        with self.lock:
            key = (self._version, len(self.posts), len(self.removed_ids), len(self.corpora))
            if self._ids_cache is not None and self._ids_cache[0] == key:
                return self._ids_cache[1]
            ids: set[int] = set(self.posts)
            for corpus in self.corpora:
                ids.update(corpus.ids)
            ids.difference_update(i for i in self.removed_ids if i not in self.posts)
            ordered = sorted(ids)
            self._ids_cache = (key, ordered)
            return ordered

    def max_id(self) -> int | None:
        ids = self.post_ids()
        return ids[-1] if ids else None

    def add_synthetic_posts(
        self,
        count: int,
        day: str,
        *,
        seed: int = 0,
        first_id: int | None = None,
        lazy: bool = False,
        **corpus_kwargs: Any,
    ) -> range:
        """Add ``count`` synthetic posts created on UTC ``day`` (ids after the current max unless ``first_id``).

        ``lazy=True`` keeps only the corpus parameters and generates posts on demand (use for 10k+ posts).
        """
        with self.lock:
            if first_id is None:
                current = self.max_id()
                first_id = self.default_first_id if current is None else current + 1
            corpus = self._new_corpus(count, day, seed, first_id, **corpus_kwargs)
            if lazy:
                self.corpora.append(corpus)
                self._version += 1
            else:
                self.add_posts(corpus.post(post_id) for post_id in corpus.ids)
            return corpus.ids

    # -- misbehaviour ----------------------------------------------------------------------------------------------
    def force(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        """Queue one forced answer for the next GET /posts.json."""
        with self.lock:
            self.forced_responses.append((status, dict(headers or {}), {} if body is None else body))

    def pop_forced(self) -> ForcedResponse | None:
        with self.lock:
            return self.forced_responses.pop(0) if self.forced_responses else None

    # -- request log -----------------------------------------------------------------------------------------------
    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def posts_requests(self) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == "/posts.json"]

    def user_agents(self) -> list[str | None]:
        with self.lock:
            return [r.user_agent for r in self.requests]

    def authorizations(self) -> list[str | None]:
        with self.lock:
            return [r.authorization for r in self.requests]

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    # -- querying --------------------------------------------------------------------------------------------------
    def _utc_day(self, post_id: int, post: Mapping[str, Any] | None) -> str:
        if post is not None:
            return utc_day_of(post["created_at"])
        for corpus in self.corpora:
            if post_id in corpus.ids:
                return corpus.utc_day(post_id)
        raise KeyError(post_id)  # pragma: no cover

    def _query_day(self, post_id: int, post: Mapping[str, Any] | None) -> str:
        """The calendar day a ``date:`` term compares, in ``date_zone``."""
        if self.date_zone == "UTC":
            return self._utc_day(post_id, post)
        if post is None:
            post = self.lookup(post_id)
        if post is None:  # pragma: no cover - ids come from the listing
            raise KeyError(post_id)
        moment = datetime.fromisoformat(str(post["created_at"]).replace("Z", "+00:00"))
        return moment.astimezone(ZoneInfo(self.date_zone)).date().isoformat()

    def _match(self, post_id: int, query: TagQuery) -> dict[str, Any] | None | bool:
        """The post when it matches (or True when matching needed no post), else None."""
        for negated, predicate in query.ids:
            if predicate(post_id) == negated:
                return None
        post = self.posts.get(post_id)
        if query.dates:
            day = self._query_day(post_id, post)
            for negated, predicate in query.dates:
                if predicate(day) == negated:
                    return None
        hide_deleted = not query.statuses and self._hide_deleted_by_default()
        if not (query.needs_post or hide_deleted):
            return post if post is not None else True
        if post is None:
            post = self.lookup(post_id)
            if post is None:
                return None
        names = self.tags_of(post)
        if any(t not in names for t in query.include) or any(t in names for t in query.exclude):
            return None
        if query.any_of and not any(t in names for t in query.any_of):
            return None
        if query.statuses:
            status = self.status_of(post)
            for negated, wanted in query.statuses:
                if status.get(wanted, wanted in ("any", "all")) == negated:
                    return None
        elif hide_deleted and self.status_of(post)["deleted"]:
            return None
        for negated, ratings in query.ratings:
            if (post.get("rating") in ratings) == negated:
                return None
        return post

    def _hide_deleted_by_default(self) -> bool:
        return False

    def _hits(self, query: TagQuery, page: str | None, limit: int) -> list[tuple[int, dict[str, Any] | None]]:
        """(id, post or None when the post is lazy and was not needed to match), id DESC."""
        ids = self.post_ids()
        sequential = _SEQUENTIAL_PAGE.match(page or "")
        hits: list[tuple[int, dict[str, Any] | None]] = []
        if sequential and sequential.group(1).lower() == "a":
            positions: Iterable[int] = range(bisect_right(ids, int(sequential.group(2))), len(ids))
            skip = 0
        elif sequential:
            positions = range(bisect_left(ids, int(sequential.group(2))) - 1, -1, -1)
            skip = 0
        else:
            number = max(_ruby_to_i(page), 1)
            if number > self.max_page:
                raise PaginationError(number)
            positions = range(len(ids) - 1, -1, -1)
            skip = (number - 1) * limit
        if limit <= 0:
            return hits
        for position in positions:
            post_id = ids[position]
            matched = self._match(post_id, query)
            if matched is None:
                continue
            if skip:
                skip -= 1
                continue
            hits.append((post_id, matched if isinstance(matched, dict) else None))
            if len(hits) >= limit:
                break
        if sequential and sequential.group(1).lower() == "a":
            hits.reverse()  # the smallest ids above, served id DESC
        return hits

    def search(self, query: TagQuery, page: str | None, limit: int) -> list[dict[str, Any]]:
        """One page of matching posts, id DESC. Raises PaginationError past the numbered page cap."""
        with self.lock:
            out = []
            for post_id, post in self._hits(query, page, limit):
                found = post if post is not None else self.lookup(post_id)
                assert found is not None
                out.append(found)
            return out

    def search_json(self, query: TagQuery, page: str | None, limit: int) -> bytes:
        """``search`` rendered as a compact JSON array; lazy posts are rendered without building dicts."""
        with self.lock:
            parts: list[str] = []
            for post_id, post in self._hits(query, page, limit):
                if post is None:
                    corpus = next(c for c in self.corpora if post_id in c.ids)
                    parts.append(corpus.post_json(post_id))
                else:
                    parts.append(json.dumps(post, separators=_COMPACT))
            return ("[" + ",".join(parts) + "]").encode("utf-8")

    def count(self, query: TagQuery) -> int:
        with self.lock:
            return sum(1 for post_id in self.post_ids() if self._match(post_id, query) is not None)

    def find_md5(self, md5: str) -> dict[str, Any] | None:
        with self.lock:
            for post_id in reversed(self.post_ids()):
                post = self.lookup(post_id)
                if post is not None and self._md5_of(post) == md5:
                    return post
            return None

    def _md5_of(self, post: Mapping[str, Any]) -> str | None:
        raise NotImplementedError

    def search_tags(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """``/tags.json`` over ``tags``: search[name|name_comma|name_matches|category|hide_empty], id DESC."""
        with self.lock:
            rows = list(self.tags)
        names: set[str] | None = None
        if query.get("search[name_comma]"):
            names = set(query["search[name_comma]"].split(","))
        elif query.get("search[name_space]"):
            names = set(query["search[name_space]"].split())
        elif query.get("search[name]"):
            names = {query["search[name]"]}
        if names is not None:
            rows = [r for r in rows if r["name"] in names]
        if query.get("search[name_matches]"):
            rows = [r for r in rows if fnmatch.fnmatchcase(r["name"], query["search[name_matches]"])]
        if query.get("search[category]"):
            wanted = {int(c) for c in query["search[category]"].split(",") if c.strip().isdigit()}
            rows = [r for r in rows if r.get("category") in wanted]
        hide_empty = query.get("search[hide_empty]", "true" if self.flavour == "e621" else "false")
        if hide_empty.lower() in ("true", "1", "yes"):
            rows = [r for r in rows if r.get("post_count", 0) > 0]
        rows.sort(key=lambda r: r["id"], reverse=True)
        return rows


def _page_rows(rows: list[dict[str, Any]], page: str | None, limit: int, max_page: int) -> list[dict[str, Any]]:
    """a/b/numbered paging over rows sorted id DESC (used by /tags.json)."""
    sequential = _SEQUENTIAL_PAGE.match(page or "")
    if sequential and sequential.group(1).lower() == "a":
        after = int(sequential.group(2))
        return [r for r in reversed(rows) if r["id"] > after][:limit][::-1]
    if sequential:
        before = int(sequential.group(2))
        return [r for r in rows if r["id"] < before][:limit]
    number = max(_ruby_to_i(page), 1)
    if number > max_page:
        raise PaginationError(number)
    return rows[(number - 1) * limit : number * limit]


@dataclass
class DanbooruState(BooruState):
    flavour: ClassVar[str] = "danbooru"
    metatags: ClassVar[frozenset[str]] = _DANBOORU_METATAGS
    default_limit: ClassVar[int] = 20
    max_limit: ClassVar[int] = 200
    max_page: ClassVar[int] = 1000
    default_first_id: ClassVar[int] = DEFAULT_DANBOORU_FIRST_ID

    def tags_of(self, post: Mapping[str, Any]) -> set[str]:
        return set(post.get("tag_string", "").split())

    def status_of(self, post: Mapping[str, Any]) -> dict[str, bool]:
        deleted = bool(post.get("is_deleted"))
        pending = bool(post.get("is_pending"))
        flagged = bool(post.get("is_flagged"))
        return {
            "deleted": deleted,
            "pending": pending,
            "flagged": flagged,
            "banned": bool(post.get("is_banned")),
            "active": not (deleted or pending or flagged),
            "any": True,
            "all": True,
        }

    def _md5_of(self, post: Mapping[str, Any]) -> str | None:
        return post.get("md5")

    def _new_corpus(self, count: int, day: str, seed: int, first_id: int, **kwargs: Any) -> SyntheticDanbooruCorpus:
        return SyntheticDanbooruCorpus(count, day, seed=seed, first_id=first_id, **kwargs)


@dataclass
class E621State(BooruState):
    hide_deleted_by_default: bool = False  # the real site hides deleted posts unless a status: metatag is given

    flavour: ClassVar[str] = "e621"
    metatags: ClassVar[frozenset[str]] = _E621_METATAGS
    default_limit: ClassVar[int] = 75
    max_limit: ClassVar[int] = 320
    max_page: ClassVar[int] = 750
    default_first_id: ClassVar[int] = DEFAULT_E621_FIRST_ID

    def tags_of(self, post: Mapping[str, Any]) -> set[str]:
        names: set[str] = set()
        for values in (post.get("tags") or {}).values():
            names.update(values)
        return names

    def status_of(self, post: Mapping[str, Any]) -> dict[str, bool]:
        flags = post.get("flags") or {}
        deleted = bool(flags.get("deleted"))
        pending = bool(flags.get("pending"))
        flagged = bool(flags.get("flagged"))
        return {
            "deleted": deleted,
            "pending": pending,
            "flagged": flagged,
            "banned": False,
            "active": not (deleted or pending),
            "any": True,
            "all": True,
        }

    def _hide_deleted_by_default(self) -> bool:
        return self.hide_deleted_by_default

    def _md5_of(self, post: Mapping[str, Any]) -> str | None:
        return (post.get("file") or {}).get("md5")

    def _new_corpus(self, count: int, day: str, seed: int, first_id: int, **kwargs: Any) -> SyntheticE621Corpus:
        return SyntheticE621Corpus(count, day, seed=seed, first_id=first_id, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# State builders
# ---------------------------------------------------------------------------------------------------------------


def danbooru_state_from_fixtures() -> DanbooruState:
    """The 3 sample posts of ``fixtures/danbooru/posts_page.json`` (deleted, banned, normal) and ``tags.json``."""
    state = DanbooruState(tags=load_danbooru_fixture("tags.json"))
    state.add_posts(load_danbooru_fixture("posts_page.json"))
    return state


def e621_state_from_fixtures() -> E621State:
    """The 3 sample posts of ``fixtures/e621/posts_page.json`` (webm, png, deleted) and ``tags.json``."""
    state = E621State(tags=load_e621_fixture("tags.json"))
    state.add_posts(load_e621_fixture("posts_page.json")["posts"])
    return state


def synthetic_danbooru_state(
    count: int, day: str, *, seed: int = 0, first_id: int | None = None, lazy: bool = True, **corpus_kwargs: Any
) -> DanbooruState:
    """A state serving ``count`` synthetic posts created on UTC ``day`` (generated on demand unless lazy=False)."""
    state = DanbooruState()
    state.add_synthetic_posts(count, day, seed=seed, first_id=first_id, lazy=lazy, **corpus_kwargs)
    return state


def synthetic_e621_state(
    count: int, day: str, *, seed: int = 0, first_id: int | None = None, lazy: bool = True, **corpus_kwargs: Any
) -> E621State:
    state = E621State()
    state.add_synthetic_posts(count, day, seed=seed, first_id=first_id, lazy=lazy, **corpus_kwargs)
    return state


def _with_md5(post: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A copy of ``post`` with every md5 and md5-derived URL path (``ab/cd/``) switched to ``new``."""
    text = json.dumps(post).replace(old, new).replace(f"/{old[:2]}/{old[2:4]}/", f"/{new[:2]}/{new[2:4]}/")
    return json.loads(text)


def make_danbooru_post(
    post_id: int,
    created_at: str = "2024-01-01T12:00:00.000-05:00",
    tags: Mapping[str, Iterable[str]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One Danbooru post shaped like the normal sample post (#4994142) with a new id, md5, created_at and tags.

    ``tags`` maps category (general/artist/copyright/character/meta) to names; tag_string* and tag_count* follow.
    """
    post = copy.deepcopy(load_danbooru_fixture("posts_page.json")[2])
    post = _with_md5(post, post["md5"], hashlib.md5(f"danbooru-post:{post_id}".encode()).hexdigest())
    post.update(id=post_id, created_at=created_at, updated_at=created_at)
    post["media_asset"]["id"] = post_id + 70_000
    post["media_asset"]["created_at"] = post["media_asset"]["updated_at"] = created_at
    if tags is not None:
        set_danbooru_tags(post, tags)
    post.update(overrides)
    return post


def make_e621_post(
    post_id: int,
    created_at: str = "2024-01-01T12:00:00.000-05:00",
    tags: Mapping[str, Iterable[str]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One e621 post shaped like the png sample post with a new id, md5, created_at and (category -> names) tags."""
    post = copy.deepcopy(load_e621_fixture("posts_page.json")["posts"][1])
    post = _with_md5(post, post["file"]["md5"], hashlib.md5(f"e621-post:{post_id}".encode()).hexdigest())
    post.update(id=post_id, created_at=created_at, updated_at=created_at)
    post["relationships"]["children"] = []
    post["relationships"]["has_children"] = post["relationships"]["has_active_children"] = False
    if tags is not None:
        post["tags"] = {category: sorted(set(tags.get(category, ()))) for category in E621_CATEGORIES}
    post.update(overrides)
    return post


# ---------------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------------


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, separators=_COMPACT).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    state: BooruState
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = _encode(body)
        headers = dict(headers or {})
        if not any(k.lower() == "content-type" for k in headers):
            looks_html = isinstance(body, str | bytes) and data.lstrip()[:1] == b"<"
            headers["Content-Type"] = "text/html; charset=utf-8" if looks_html else "application/json; charset=utf-8"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        state = self.state
        state.record(
            RecordedRequest(
                method=method,
                path=parts.path,
                query=query,
                headers={k.lower(): v for k, v in self.headers.items()},
                raw_query=parts.query,
                at=time.monotonic(),
            )
        )
        if state.delay_s:
            time.sleep(state.delay_s)
        if state.reject_default_user_agents:
            agent = (self.headers.get("User-Agent") or "").strip()
            if not agent or agent.lower().startswith(BLOCKED_USER_AGENT_PREFIXES):
                return self._send(403, CLOUDFLARE_CHALLENGE, {"cf-mitigated": "challenge"})
        if method != "GET":
            return self._send(405, {"success": False, "message": "Method not allowed"})
        if parts.path == "/posts.json":
            forced = state.pop_forced()
            if forced is not None:
                status, headers, body = forced
                return self._send(status, body, headers)
        status, body = route(state, parts.path, query)
        return self._send(status, body)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


_POST_PATH = re.compile(r"^/posts/(\d+)\.json$")


def route(state: BooruState, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
    """(status, body) for a GET; body is JSON-able or pre-encoded JSON bytes."""
    if state.flavour == "danbooru":
        return _route_danbooru(state, path, query)
    return _route_e621(state, path, query)


def _dump_posts(posts: list[dict[str, Any]], only: str) -> bytes:
    """Posts trimmed to the top-level fields named by Danbooru's ``only=a,b,c``."""
    fields = [f.strip() for f in only.split(",") if f.strip()]
    return json.dumps([{k: p[k] for k in fields if k in p} for p in posts], separators=_COMPACT).encode("utf-8")


def _route_danbooru(state: BooruState, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
    not_found = {"success": False, "error": "ActiveRecord::RecordNotFound", "message": "That record was not found."}
    if path == "/posts.json":
        if query.get("md5"):
            post = state.find_md5(query["md5"])
            return (200, post) if post is not None else (404, not_found)
        raw_limit = query.get("limit")
        limit = state.default_limit if raw_limit is None or raw_limit.strip() == "" else _ruby_to_i(raw_limit)
        limit = min(max(limit, 1), state.max_limit)
        try:
            with state.lock:
                tag_query = parse_tag_query(query.get("tags", ""), state.metatags)
                if query.get("only"):
                    return 200, _dump_posts(state.search(tag_query, query.get("page"), limit), query.get("only"))
                return 200, state.search_json(tag_query, query.get("page"), limit)
        except PaginationError:
            return 410, _danbooru_pagination_error(state.max_page)
    match = _POST_PATH.match(path)
    if match:
        post = state.lookup(int(match.group(1)))
        return (200, post) if post is not None else (404, not_found)
    if path == "/counts/posts.json":
        return 200, {"counts": {"posts": state.count(parse_tag_query(query.get("tags", ""), state.metatags))}}
    if path == "/tags.json":
        raw_limit = query.get("limit")
        limit = 20 if raw_limit is None or raw_limit.strip() == "" else min(max(_ruby_to_i(raw_limit), 1), 1000)
        try:
            return 200, _page_rows(state.search_tags(query), query.get("page"), limit, state.max_page)
        except PaginationError:
            return 410, _danbooru_pagination_error(state.max_page)
    return 404, not_found


def _danbooru_pagination_error(max_page: int) -> dict[str, Any]:
    return {
        "success": False,
        "error": "PaginationExtension::PaginationError",
        "message": f"You cannot go beyond page {max_page}.",
        "backtrace": ["app/logical/pagination_extension.rb:53:in 'PaginationExtension#paginate'"],
    }


def _e621_limit(raw: str | None, default: int, maximum: int) -> int | None:
    """The limit, or None when e621 would answer 410 (out of 0..maximum or not a number)."""
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= maximum else None


def _route_e621(state: BooruState, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
    not_found = {"success": False, "reason": "not found"}
    page_error = {
        "success": False,
        "message": f"You cannot go beyond page {state.max_page}. Please narrow your search terms.",
        "code": None,
    }
    limit_error = {"success": False, "message": f"Limit must be between 0 and {state.max_limit}.", "code": None}
    if path == "/posts.json":
        if query.get("md5"):
            post = state.find_md5(query["md5"])
            return (200, {"post": post}) if post is not None else (404, not_found)
        limit = _e621_limit(query.get("limit"), state.default_limit, state.max_limit)
        if limit is None:
            return 410, limit_error
        try:
            with state.lock:
                tag_query = parse_tag_query(query.get("tags", ""), state.metatags)
                return 200, b'{"posts":' + state.search_json(tag_query, query.get("page"), limit) + b"}"
        except PaginationError:
            return 410, page_error
    match = _POST_PATH.match(path)
    if match:
        post = state.lookup(int(match.group(1)))
        return (200, {"post": post}) if post is not None else (404, not_found)
    if path == "/posts/count.json":
        total = state.count(parse_tag_query(query.get("tags", ""), state.metatags))
        cap = state.max_page * state.max_limit + 1
        return 200, {"count": min(total, cap), "capped": total > cap}
    if path == "/tags.json":
        limit = _e621_limit(query.get("limit"), state.default_limit, state.max_limit)
        if limit is None:
            return 410, limit_error
        try:
            rows = _page_rows(state.search_tags(query), query.get("page"), limit, state.max_page)
        except PaginationError:
            return 410, page_error
        return 200, rows if rows else {"tags": []}
    return 404, not_found


class FakeBooru:
    """A fake Danbooru or e621 (decided by the state's class) on 127.0.0.1:port (0 = any free port)."""

    def __init__(self, state: BooruState, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        handler = type("Handler", (_Handler,), {"state": state})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> FakeBooru:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_fake_danbooru(state: DanbooruState | None = None) -> Iterator[FakeBooru]:
    fake = FakeBooru(state if state is not None else danbooru_state_from_fixtures()).start()
    try:
        yield fake
    finally:
        fake.stop()


@contextmanager
def running_fake_e621(state: E621State | None = None) -> Iterator[FakeBooru]:
    fake = FakeBooru(state if state is not None else e621_state_from_fixtures()).start()
    try:
        yield fake
    finally:
        fake.stop()


# ---------------------------------------------------------------------------------------------------------------
# Command line: a long-running fake for benchmarks
# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m umlmm_pipelines_tests.fakes.booru_server",
        description="Serve a synthetic corpus from a fake Danbooru/e621 until killed; prints the base URL.",
    )
    parser.add_argument("flavour", choices=("danbooru", "e621"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--day", default="2024-01-01", help="UTC day all posts are created on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-id", type=int, default=None)
    parser.add_argument("--vocabulary", type=int, default=None)
    parser.add_argument("--tags-per-post", type=int, default=None)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before every answer")
    parser.add_argument("--reject-default-user-agents", action="store_true")
    parser.add_argument(
        "--prerender",
        action="store_true",
        help="render every post's JSON before announcing the URL (~3 KB RAM and ~50 us per post up front); "
        "pages are then a string join instead of ~10 ms of generation per 200 posts",
    )
    args = parser.parse_args(argv)

    corpus_kwargs: dict[str, Any] = {}
    if args.vocabulary is not None:
        corpus_kwargs["vocabulary"] = args.vocabulary
    if args.tags_per_post is not None:
        corpus_kwargs["tags_per_post"] = args.tags_per_post
    build = synthetic_danbooru_state if args.flavour == "danbooru" else synthetic_e621_state
    state = build(args.posts, args.day, seed=args.seed, first_id=args.first_id, lazy=True, **corpus_kwargs)
    state.delay_s = args.delay
    state.reject_default_user_agents = args.reject_default_user_agents
    state.tags = [tag for corpus in state.corpora for tag in corpus.tags()]  # /tags.json: the whole vocabulary
    state.post_ids()  # warm the id index before announcing the URL
    if args.prerender:
        for corpus in state.corpora:
            corpus.prerender()
    fake = FakeBooru(state, host=args.host, port=args.port)
    print(fake.url, flush=True)
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
