"""Deterministic synthetic Danbooru- and e621-shaped posts for the fake servers and benchmarks.

Every post is a pure function of ``(seed, post_id)`` plus the corpus parameters, so a corpus can hand out any post on
demand (``SyntheticDanbooruCorpus.post(id)``) without keeping the whole corpus in memory; ``make_danbooru_posts``
simply materialises every post of a corpus.

Shape follows the recorded samples in ``fixtures/danbooru/posts_page.json`` and ``fixtures/e621/posts_page.json``:
timestamps are ISO 8601 with milliseconds in US Eastern time (the anonymous default of both sites), ids are
contiguous and ``created_at`` increases with the id and stays inside the requested UTC day.
"""

from __future__ import annotations

import gc
import hashlib
import json
import random
from bisect import bisect as _bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from itertools import accumulate
from math import log as _log
from typing import Any

try:
    from zoneinfo import ZoneInfo

    EASTERN: tzinfo = ZoneInfo("America/New_York")
except Exception:  # pragma: no cover - no tz database: a fixed offset keeps the shape
    EASTERN = timezone(timedelta(hours=-5))

DANBOORU_CATEGORIES: tuple[str, ...] = ("general", "artist", "copyright", "character", "meta")
DANBOORU_CATEGORY_IDS: dict[str, int] = {"general": 0, "artist": 1, "copyright": 3, "character": 4, "meta": 5}
E621_CATEGORIES: tuple[str, ...] = (
    "general",
    "artist",
    "contributor",
    "copyright",
    "character",
    "species",
    "invalid",
    "meta",
    "lore",
)
E621_CATEGORY_IDS: dict[str, int] = {name: number for number, name in enumerate(E621_CATEGORIES)}

DEFAULT_DANBOORU_FIRST_ID = 7_000_000
DEFAULT_E621_FIRST_ID = 5_000_000

# --------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------

_GENERAL_HEAD = (
    "1girl solo long_hair looking_at_viewer blush smile open_mouth short_hair blue_eyes simple_background shirt "
    "skirt brown_hair black_hair hat holding long_sleeves white_background 1boy jewelry blonde_hair gloves dress bow "
    "red_eyes closed_mouth hair_ornament ribbon animal_ears standing sitting jacket school_uniform multiple_girls "
    "2girls tail upper_body white_shirt full_body outdoors day sky cloud flower food weapon sword glasses scarf boots "
    "thighhighs twintails ponytail braid hairband hair_bow bangs green_eyes purple_eyes yellow_eyes grey_hair "
    "pink_hair white_hair silver_hair red_hair blue_hair closed_eyes one_eye_closed ahoge hair_between_eyes "
    "collarbone pleated_skirt necktie serafuku sleeveless wings horns halo male_focus hand_up holding_cup "
    "grabbing_own_arm o_o ^_^ :d :o ;d >_< 3:"
).split()
_ADJECTIVES = (
    "red blue green yellow purple pink orange black white brown grey aqua silver gold striped plaid frilled torn wet "
    "short long large small multicolored two-tone gradient see-through open crossed hooded sleeveless pleated wooden "
    "floral checkered polka_dot high low spiked messy curly wavy straight layered half double single tied untied "
    "fur-trimmed lace-trimmed oversized cropped ribbed knitted sheer puffy wide shiny glowing broken cracked"
).split()
_NOUNS = (
    "hair eyes dress skirt shirt jacket hat gloves ribbon bow scarf boots shoes socks necktie collar cape coat sleeves "
    "background sky flower umbrella bag bracelet earrings necklace belt apron kimono uniform hoodie sweater vest "
    "shorts pants headband hairclip wings tail horns halo mask book cup sword staff gun shield chair table window "
    "door bed pillow tree leaf cat dog bird fish star moon sun cloud water fire ice lantern fan bell"
).split()
_SYLLABLES = (
    "ka ki ku ke ko sa shi su se so ta chi tsu te to na ni nu ne no ha hi fu he ho ma mi mu me mo ya yu yo ra ri ru "
    "re ro wa n ga gi go za ji da de do ba bi bu be bo pa pi po kyo ryu sho"
).split()
_TITLE_WORDS = (
    "star sky eternal crystal magical girls chronicle fantasy saga academy idol project legend knight tales dream "
    "ocean moon sword witch kingdom online frontline rail island heart memories harmony symphony origin azure "
    "crimson shadow blade spirit garden festival"
).split()
_META_HEAD = (
    "highres absurdres commentary_request translated translation_request commentary english_commentary bad_id "
    "bad_pixiv_id bad_twitter_id lowres animated video sound animated_gif ugoira tagme artist_request "
    "character_request copyright_request duplicate md5_mismatch revision third-party_edit partially_translated "
    "symbol-only_commentary chinese_commentary korean_commentary check_commentary paid_reward_available "
    "photoshop_(medium) traditional_media jpeg_artifacts scan incredibly_absurdres wide_image tall_image "
    "transparent_background spoilers non-web_source source_request self-upload"
).split()
_SPECIES_HEAD = (
    "mammal canid canine fox felid feline domestic_cat wolf dragon scalie reptile bird avian equid horse rabbit "
    "lagomorph leporid bear ursid rodent mouse murid murine deer cervine bovid caprine goat sheep hyena otter "
    "mustelid raccoon procyonid bat shark fish lizard snake squamate dinosaur protogen sergal avali"
).split()


def _syllable_name(rng: random.Random, low: int, high: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(low, high)))


def _general_names() -> Iterator[str]:
    yield from _GENERAL_HEAD
    for adjective in _ADJECTIVES:
        for noun in _NOUNS:
            yield f"{adjective}_{noun}"
    for first in _ADJECTIVES:
        for second in _ADJECTIVES:
            if first != second:
                for noun in _NOUNS:
                    yield f"{first}_{second}_{noun}"
    number = 0
    while True:  # only reached for absurd vocabularies
        number += 1
        yield f"general_tag_{number}"


def _artist_names(rng: random.Random) -> Iterator[str]:
    while True:
        name = _syllable_name(rng, 2, 4)
        roll = rng.random()
        if roll < 0.05:
            name += "_(artist)"
        elif roll < 0.15:
            name += str(rng.randint(1, 999))
        elif roll < 0.2:
            name = f"{name}_({_syllable_name(rng, 2, 3)})"
        yield name


def _copyright_names(rng: random.Random) -> Iterator[str]:
    while True:
        name = f"{rng.choice(_TITLE_WORDS)}_{rng.choice(_TITLE_WORDS)}"
        roll = rng.random()
        if roll < 0.1:
            name += f":_{rng.choice(_TITLE_WORDS)}_no_{rng.choice(_TITLE_WORDS)}"
        elif roll < 0.3:
            name += f"_{rng.randint(2, 5)}"
        elif roll < 0.4:
            name = _syllable_name(rng, 3, 5) + "_" + name
        yield name


def _character_names(rng: random.Random) -> Iterator[str]:
    while True:
        name = f"{_syllable_name(rng, 2, 3)}_{_syllable_name(rng, 2, 4)}"
        roll = rng.random()
        if roll < 0.2:
            name += f"_({rng.choice(_TITLE_WORDS)}_{rng.choice(_TITLE_WORDS)})"
        elif roll < 0.23:
            name = f"{_syllable_name(rng, 1, 2)}'{name}"
        yield name


def _meta_names() -> Iterator[str]:
    yield from _META_HEAD
    for noun in _NOUNS:
        for suffix in ("_request", "_(medium)", "_commentary", "_available", "_edit"):
            yield noun + suffix
    number = 0
    while True:
        number += 1
        yield f"meta_tag_{number}"


def _species_names() -> Iterator[str]:
    yield from _SPECIES_HEAD
    for adjective in _ADJECTIVES:
        for species in _SPECIES_HEAD:
            yield f"{adjective}_{species}"
    number = 0
    while True:
        number += 1
        yield f"species_{number}"


def _fill(names: Iterator[str], count: int, seen: set[str]) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        if len(out) >= count:
            break
        if name not in seen:
            seen.add(name)
            out.append(name)
    return tuple(out)


def _split(vocabulary: int, shares: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Category sizes summing to ``vocabulary``, each at least 1 (general takes the remainder)."""
    if vocabulary < len(shares):
        raise ValueError(f"vocabulary must be at least {len(shares)}")
    sizes = {name: max(1, int(vocabulary * share)) for name, share in shares if name != "general"}
    sizes["general"] = vocabulary - sum(sizes.values())
    if sizes["general"] < 1:
        raise ValueError(f"vocabulary {vocabulary} too small")
    return sizes


_DANBOORU_SHARES = (("general", 0.62), ("artist", 0.14), ("copyright", 0.05), ("character", 0.18), ("meta", 0.01))
_E621_SHARES = (
    ("general", 0.60),
    ("artist", 0.14),
    ("contributor", 0.01),
    ("copyright", 0.04),
    ("character", 0.10),
    ("species", 0.07),
    ("invalid", 0.005),
    ("meta", 0.02),
    ("lore", 0.005),
)


@lru_cache(maxsize=16)
def danbooru_vocabulary(vocabulary: int = 20_000, seed: int = 0) -> dict[str, tuple[str, ...]]:
    """Tag names by Danbooru category, unique across categories, most popular first within each category."""
    rng = random.Random(f"danbooru-vocabulary:{seed}")
    sizes = _split(vocabulary, _DANBOORU_SHARES)
    seen: set[str] = set()
    by_category = {
        "meta": _fill(_meta_names(), sizes["meta"], seen),
        "general": _fill(_general_names(), sizes["general"], seen),
        "copyright": _fill(_copyright_names(rng), sizes["copyright"], seen),
        "character": _fill(_character_names(rng), sizes["character"], seen),
        "artist": _fill(_artist_names(rng), sizes["artist"], seen),
    }
    # post_json() pastes names into JSON unescaped: they must not need escaping
    assert not any(ch in name for name in seen for ch in '"\\') and all(name.isascii() for name in seen)
    return by_category


@lru_cache(maxsize=16)
def e621_vocabulary(vocabulary: int = 5_000, seed: int = 0) -> dict[str, tuple[str, ...]]:
    """Tag names by e621 category, unique across categories, most popular first within each category."""
    rng = random.Random(f"e621-vocabulary:{seed}")
    sizes = _split(vocabulary, _E621_SHARES)
    seen: set[str] = set()
    by_category = {
        "meta": _fill(_meta_names(), sizes["meta"], seen),
        "species": _fill(_species_names(), sizes["species"], seen),
        "general": _fill(_general_names(), sizes["general"], seen),
        "copyright": _fill(_copyright_names(rng), sizes["copyright"], seen),
        "character": _fill(_character_names(rng), sizes["character"], seen),
        "artist": _fill(_artist_names(rng), sizes["artist"], seen),
        "contributor": _fill((f"{n}_(contributor)" for n in _artist_names(rng)), sizes["contributor"], seen),
        "invalid": _fill((f"invalid_tag_{n}" for n in range(1, 10**9)), sizes["invalid"], seen),
        "lore": _fill((f"{n}_(lore)" for n in _character_names(rng)), sizes["lore"], seen),
    }
    return {name: by_category[name] for name in E621_CATEGORIES}


def _pick(rng: random.Random, pool: Sequence[str], count: int, skew: float) -> list[str]:
    """``count`` distinct names, biased towards the head of ``pool`` (a rough Zipf curve)."""
    size = len(pool)
    if count == 1:
        return [pool[int(size * rng.random() ** skew)]]
    count = min(count, size)
    if count <= 0:
        return []
    if count * 2 > size:
        return [pool[i] for i in rng.sample(range(size), count)]
    rand = rng.random
    chosen = {int(size * rand() ** skew) for _ in range(count)}
    while len(chosen) < count:
        chosen.add(int(size * rand() ** skew))
    return [pool[i] for i in chosen]


def _counts(wanted: dict[str, int], total: int, pools: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Per-category counts summing to ``total`` (general fills the rest), trimmed to what the pools can give."""
    counts = {name: min(n, len(pools[name])) for name, n in wanted.items()}
    counts["general"] = max(0, total - sum(counts.values()))
    while sum(counts.values()) > total:
        name = max((n for n in counts if n != "general"), key=lambda n: counts[n])
        if counts[name] == 0:
            break
        counts[name] -= 1
    counts["general"] = min(counts["general"], len(pools["general"]))
    return counts


# --------------------------------------------------------------------------------------------------------------
# Helpers shared by both shapes
# --------------------------------------------------------------------------------------------------------------


def format_timestamp(epoch: float, tz: tzinfo = EASTERN) -> str:
    """ISO 8601 with milliseconds and offset, the way both sites render timestamps."""
    return datetime.fromtimestamp(epoch, tz).isoformat(timespec="milliseconds")


def utc_day_of(timestamp: str) -> str:
    """The UTC calendar day (``YYYY-MM-DD``) of an ISO 8601 timestamp; naive timestamps are taken as UTC."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment.date().isoformat()
    return moment.astimezone(UTC).date().isoformat()


def set_danbooru_tags(post: dict[str, Any], tags: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """Rewrite ``tag_string``, ``tag_string_<category>`` and ``tag_count*`` of a Danbooru post from category lists."""
    everything: list[str] = []
    for category in DANBOORU_CATEGORIES:
        names = sorted(set(tags.get(category, ())))
        post[f"tag_string_{category}"] = " ".join(names)
        post[f"tag_count_{category}"] = len(names)
        everything.extend(names)
    post["tag_string"] = " ".join(sorted(everything))
    post["tag_count"] = len(everything)
    return post


def _day_start(day: str) -> float:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp()


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_SIZES = ((1200, 1600), (2000, 2828), (2480, 3508), (1920, 1080), (1280, 720), (850, 1200), (3000, 2000), (800, 600))
_DANBOORU_EXTS = (("jpg", 55), ("png", 35), ("webp", 3), ("gif", 2), ("mp4", 3), ("webm", 1), ("zip", 1))
_DANBOORU_EXT_NAMES = tuple(e for e, _ in _DANBOORU_EXTS)
_DANBOORU_EXT_WEIGHTS = tuple(w for _, w in _DANBOORU_EXTS)
_DANBOORU_EXT_CUM = (*tuple(accumulate(w / sum(_DANBOORU_EXT_WEIGHTS) for w in _DANBOORU_EXT_WEIGHTS))[:-1], 1.0)
_RATINGS = "gsqe"
_RATING_CUM = (0.45, 0.75, 0.9, 1.0)
_CHARACTER_CUM = (0.25, 0.75, 0.93, 1.0)  # 0, 1, 2 or 3 characters
_BASE62 = bytes(ord(_ALNUM[b % 62]) for b in range(256))
_E621_EXTS = (("jpg", 45), ("png", 40), ("gif", 4), ("webm", 8), ("mp4", 3))
_E621_EXT_NAMES = tuple(e for e, _ in _E621_EXTS)
_E621_EXT_WEIGHTS = tuple(w for _, w in _E621_EXTS)


def _fit(width: int, height: int, box: int) -> tuple[int, int]:
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


@lru_cache(maxsize=256)
def _thumbnail_variants(width: int, height: int) -> tuple[tuple[str, int, int, str], ...]:
    return tuple(
        (kind, *_fit(width, height, box), "webp" if box == 720 else "jpg")
        for kind, box in (("180x180", 180), ("360x360", 360), ("720x720", 720))
    )


class _SyntheticCorpus:
    """A contiguous id range of posts created inside one UTC day, generated on demand."""

    default_first_id = 1

    def __init__(
        self,
        count: int,
        day: str,
        vocabulary: int,
        tags_per_post: int,
        seed: int = 0,
        first_id: int | None = None,
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self.count = count
        self.day = date.fromisoformat(day).isoformat()
        self.vocabulary = vocabulary
        self.tags_per_post = tags_per_post
        self.seed = seed
        self.first_id = self.default_first_id if first_id is None else first_id
        self.ids = range(self.first_id, self.first_id + count)
        self._start = _day_start(self.day)
        self._span = 86_400.0 / count if count else 0.0
        self._rendered: dict[int, str] | None = None

    def __len__(self) -> int:
        return self.count

    def __contains__(self, post_id: object) -> bool:
        return post_id in self.ids

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Posts in id DESC order (the API's default order)."""
        for post_id in reversed(self.ids):
            yield self.post(post_id)

    def utc_day(self, post_id: int) -> str:
        return self.day

    def _rng(self, post_id: int) -> random.Random:
        return random.Random((self.seed << 34) ^ post_id)

    def _created(self, rng: random.Random, post_id: int) -> float:
        offset = (post_id - self.first_id + rng.random()) * self._span
        return self._start + min(offset, 86_399.998)

    def post(self, post_id: int) -> dict[str, Any]:
        if post_id not in self.ids:
            raise KeyError(post_id)
        return self._build(post_id)

    def posts(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        return [self.post(post_id) for post_id in ids]

    def post_json(self, post_id: int) -> str:
        """The post as compact JSON, exactly ``json.dumps(self.post(post_id), separators=(",", ":"))``."""
        if self._rendered is not None:
            cached = self._rendered.get(post_id)
            if cached is not None:
                return cached
        if post_id not in self.ids:
            raise KeyError(post_id)
        return self._render_json(post_id)

    def prerender(self) -> None:
        """Render every post's JSON once and keep it (about 3 KB per post) so serving a page is a string join."""
        rendered = {post_id: self._render_json(post_id) for post_id in self.ids}
        self._rendered = rendered

    def _render_json(self, post_id: int) -> str:
        return json.dumps(self._build(post_id), separators=(",", ":"))

    def _build(self, post_id: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


_JSON_BOOL = {True: "true", False: "false"}


def _json_opt(value: float | None) -> str:
    return "null" if value is None else repr(value)


class _DanbooruDraw:
    """The drawn values of one synthetic Danbooru post."""

    __slots__ = (
        "id md5 pixel_hash file_key general artist copyright character meta tag_string width height ext file_size "
        "up_score down_score is_banned is_deleted is_pending is_flagged rating pixiv_id source parent_id has_children "
        "commented approver_id duration fav_count created_at updated_at asset_created thumbnails original_url "
        "has_large large_url sample_ext sample_height"
    ).split()

    id: int
    md5: str
    pixel_hash: str
    file_key: str
    general: list[str]
    artist: list[str]
    copyright: list[str]
    character: list[str]
    meta: list[str]
    tag_string: str
    width: int
    height: int
    ext: str
    file_size: int
    up_score: int
    down_score: int
    is_banned: bool
    is_deleted: bool
    is_pending: bool
    is_flagged: bool
    rating: str
    pixiv_id: int | None
    source: str
    parent_id: int | None
    has_children: bool
    commented: str | None
    approver_id: int | None
    duration: float | None
    fav_count: int
    created_at: str
    updated_at: str
    asset_created: str
    thumbnails: list[tuple[str, str, int, int, str]]
    original_url: str
    has_large: bool
    large_url: str
    sample_ext: str
    sample_height: int


class SyntheticDanbooruCorpus(_SyntheticCorpus):
    """Danbooru-shaped posts ``first_id .. first_id+count-1``, all created on UTC ``day``."""

    default_first_id = DEFAULT_DANBOORU_FIRST_ID

    def __init__(
        self,
        count: int,
        day: str,
        vocabulary: int = 20_000,
        tags_per_post: int = 25,
        seed: int = 0,
        first_id: int | None = None,
    ) -> None:
        super().__init__(count, day, vocabulary, tags_per_post, seed, first_id)
        self.pools = danbooru_vocabulary(vocabulary, seed)
        sizes = {name: len(names) for name, names in self.pools.items()}
        self._roomy = (
            sizes["artist"] >= 2 and sizes["copyright"] >= 2 and sizes["character"] >= 3 and sizes["meta"] >= 3
        ) and sizes["general"] >= tags_per_post

    def tags(self) -> list[dict[str, Any]]:
        """Danbooru Tag records for the whole vocabulary (``post_count`` is a rough estimate)."""
        return _tag_records(self.pools, DANBOORU_CATEGORY_IDS, self.count, self.seed, danbooru=True)

    def _draw(self, post_id: int) -> _DanbooruDraw:
        """Every random choice and derived string of one post; ``_build`` and ``post_json`` only format it."""
        d = _DanbooruDraw()
        d.id = post_id
        rng = random.Random((self.seed << 34) ^ post_id)
        rand = rng.random
        created = self._start + min((post_id - self.first_id + rand()) * self._span, 86_399.998)
        updated = created - _log(1.0 - rand()) * 7200.0
        raw = hashlib.md5(b"danbooru:%d:%d" % (self.seed, post_id)).digest()
        d.md5 = digest = raw.hex()
        raw_pixels = hashlib.md5(raw).digest()
        d.pixel_hash = raw_pixels.hex()
        d.file_key = raw_pixels[:9].translate(_BASE62).decode()

        pools = self.pools
        artists = 1 if rand() < 0.9 else (0 if rand() < 0.5 else 2)
        copyrights = 1 if rand() < 0.75 else (2 if rand() < 0.8 else 0)
        characters = _bisect(_CHARACTER_CUM, rand())
        metas = 1 + int(rand() * 3)
        generals = self.tags_per_post - artists - copyrights - characters - metas
        if generals < 0 or not self._roomy:
            counts = _counts(
                {"artist": artists, "copyright": copyrights, "character": characters, "meta": metas},
                self.tags_per_post,
                pools,
            )
            artists, copyrights, characters = counts["artist"], counts["copyright"], counts["character"]
            metas, generals = counts["meta"], counts["general"]
        d.general = general = sorted(_pick(rng, pools["general"], generals, 2.5))
        d.artist = artist = sorted(_pick(rng, pools["artist"], artists, 2.2))
        d.copyright = copyright_ = sorted(_pick(rng, pools["copyright"], copyrights, 2.2))
        d.character = character = sorted(_pick(rng, pools["character"], characters, 2.2))
        d.meta = meta = sorted(_pick(rng, pools["meta"], metas, 2.2))
        d.tag_string = " ".join(sorted(general + artist + copyright_ + character + meta))

        d.width, d.height = width, height = _SIZES[int(rand() * len(_SIZES))]
        d.ext = ext = _DANBOORU_EXT_NAMES[_bisect(_DANBOORU_EXT_CUM, rand())]
        video = ext in ("mp4", "webm", "zip")
        d.file_size = int(width * height * (0.6 if ext == "jpg" else 1.4) * (0.5 + rand()))
        d.up_score = up_score = int(-_log(1.0 - rand()) * 15.0)
        d.down_score = -int(-_log(1.0 - rand()) / 1.5)
        roll = rand()
        d.is_banned = roll < 0.003
        d.is_deleted = 0.003 <= roll < 0.033
        d.is_pending = is_pending = 0.033 <= roll < 0.043
        d.is_flagged = 0.043 <= roll < 0.046
        d.rating = _RATINGS[_bisect(_RATING_CUM, rand())]
        source_roll = rand()
        d.pixiv_id = None
        artist_name = artist[0] if artist else "unknown"
        if source_roll < 0.4:
            d.pixiv_id = pixiv_id = 90_000_000 + post_id % 30_000_000
            stamp = datetime.fromtimestamp(created, UTC).strftime("%Y/%m/%d/%H/%M/%S")
            d.source = f"https://i.pximg.net/img-original/img/{stamp}/{pixiv_id}_p{int(rand() * 4)}.png"
        elif source_roll < 0.75:
            d.source = f"https://twitter.com/{artist_name}/status/{1_740_000_000_000_000_000 + post_id * 7919}"
        elif source_roll < 0.85:
            d.source = ""
        else:
            d.source = f"https://www.example-gallery.net/{artist_name}/art/{post_id}"
        d.parent_id = post_id - 1 - int(rand() * 500) if rand() < 0.04 else None
        d.has_children = rand() < 0.03
        d.commented = format_timestamp(updated) if rand() < 0.1 else None
        d.approver_id = 500_000 + post_id % 9_000 if not is_pending and rand() < 0.5 else None
        d.duration = round(1 + rand() * 59, 3) if video else None
        d.fav_count = int(up_score * (0.8 + rand()))
        d.created_at = format_timestamp(created)
        d.updated_at = format_timestamp(updated)
        d.asset_created = format_timestamp(created - 9.5)

        prefix = f"{digest[0:2]}/{digest[2:4]}/{digest}"
        d.thumbnails = [
            (kind, f"https://cdn.donmai.us/{kind}/{prefix}.{vext}", vw, vh, vext)
            for kind, vw, vh, vext in _thumbnail_variants(width, height)
        ]
        d.original_url = original_url = f"https://cdn.donmai.us/original/{prefix}.{ext}"
        d.has_large = has_large = width > 850 and ext not in ("mp4", "webm", "gif")
        d.large_url = original_url
        d.sample_ext = "webm" if ext == "zip" else "jpg"
        d.sample_height = round(height * 850 / width)
        if has_large:
            d.large_url = f"https://cdn.donmai.us/sample/{digest[0:2]}/{digest[2:4]}/sample-{digest}.{d.sample_ext}"
        return d

    def _build(self, post_id: int) -> dict[str, Any]:
        d = self._draw(post_id)
        variants = [
            {"type": kind, "url": url, "width": vw, "height": vh, "file_ext": vext}
            for kind, url, vw, vh, vext in d.thumbnails
        ]
        if d.has_large:
            variants.append(
                {
                    "type": "sample",
                    "url": d.large_url,
                    "width": 850,
                    "height": d.sample_height,
                    "file_ext": d.sample_ext,
                }
            )
        variants.append(
            {"type": "original", "url": d.original_url, "width": d.width, "height": d.height, "file_ext": d.ext}
        )
        media_asset: dict[str, Any] = {
            "id": d.id + 70_000,
            "created_at": d.asset_created,
            "updated_at": d.asset_created,
            "md5": d.md5,
            "file_ext": d.ext,
            "file_size": d.file_size,
            "image_width": d.width,
            "image_height": d.height,
            "duration": d.duration,
            "status": "active",
            "file_key": d.file_key,
            "is_public": True,
            "pixel_hash": d.pixel_hash,
            "variants": variants,
        }
        post: dict[str, Any] = {
            "id": d.id,
            "created_at": d.created_at,
            "uploader_id": 400_000 + (d.id * 7) % 600_000,
            "score": d.up_score + d.down_score,
            "source": d.source,
            "md5": d.md5,
            "last_comment_bumped_at": d.commented,
            "rating": d.rating,
            "image_width": d.width,
            "image_height": d.height,
            "tag_string": d.tag_string,
            "fav_count": d.fav_count,
            "file_ext": d.ext,
            "last_noted_at": None,
            "parent_id": d.parent_id,
            "has_children": d.has_children,
            "approver_id": d.approver_id,
            "tag_count_general": len(d.general),
            "tag_count_artist": len(d.artist),
            "tag_count_character": len(d.character),
            "tag_count_copyright": len(d.copyright),
            "file_size": d.file_size,
            "up_score": d.up_score,
            "down_score": d.down_score,
            "is_pending": d.is_pending,
            "is_flagged": d.is_flagged,
            "is_deleted": d.is_deleted,
            "tag_count": len(d.general) + len(d.artist) + len(d.character) + len(d.copyright) + len(d.meta),
            "updated_at": d.updated_at,
            "is_banned": d.is_banned,
            "pixiv_id": d.pixiv_id,
            "last_commented_at": d.commented,
            "has_active_children": d.has_children and not d.is_deleted,
            "bit_flags": 0,
            "tag_count_meta": len(d.meta),
            "has_large": d.has_large,
            "has_visible_children": d.has_children,
            "media_asset": media_asset,
            "tag_string_general": " ".join(d.general),
            "tag_string_character": " ".join(d.character),
            "tag_string_copyright": " ".join(d.copyright),
            "tag_string_artist": " ".join(d.artist),
            "tag_string_meta": " ".join(d.meta),
            "file_url": d.original_url,
            "large_file_url": d.large_url,
            "preview_file_url": d.thumbnails[0][1],
        }
        if d.is_banned:  # not visible to anonymous users: no md5, no URLs (like the banned sample post)
            for key in ("md5", "file_url", "large_file_url", "preview_file_url"):
                del post[key]
            for key in ("md5", "file_key", "variants"):
                del media_asset[key]
        return post

    def _render_json(self, post_id: int) -> str:
        """Same text as ``json.dumps(self._build(post_id), separators=(",", ":"))`` without building dicts."""
        d = self._draw(post_id)
        banned = d.is_banned
        if banned:
            visible_asset = ""
            md5 = urls = ""
        else:
            parts = [
                f'{{"type":"{kind}","url":"{url}","width":{vw},"height":{vh},"file_ext":"{vext}"}}'
                for kind, url, vw, vh, vext in d.thumbnails
            ]
            if d.has_large:
                parts.append(
                    f'{{"type":"sample","url":"{d.large_url}","width":850,"height":{d.sample_height},'
                    f'"file_ext":"{d.sample_ext}"}}'
                )
            parts.append(
                f'{{"type":"original","url":"{d.original_url}","width":{d.width},"height":{d.height},'
                f'"file_ext":"{d.ext}"}}'
            )
            visible_asset = f'"md5":"{d.md5}",'
            md5 = f'"md5":"{d.md5}",'
            urls = (
                f',"file_url":"{d.original_url}","large_file_url":"{d.large_url}",'
                f'"preview_file_url":"{d.thumbnails[0][1]}"'
            )
        asset = (
            f'{{"id":{d.id + 70_000},"created_at":"{d.asset_created}","updated_at":"{d.asset_created}",{visible_asset}'
            f'"file_ext":"{d.ext}","file_size":{d.file_size},"image_width":{d.width},"image_height":{d.height},'
            f'"duration":{_json_opt(d.duration)},"status":"active",'
            + ("" if banned else f'"file_key":"{d.file_key}",')
            + '"is_public":true,'
            + (
                f'"pixel_hash":"{d.pixel_hash}"}}'
                if banned
                else f'"pixel_hash":"{d.pixel_hash}","variants":[{",".join(parts)}]}}'
            )
        )
        commented = f'"{d.commented}"' if d.commented is not None else "null"
        total = len(d.general) + len(d.artist) + len(d.character) + len(d.copyright) + len(d.meta)
        return (
            f'{{"id":{d.id},"created_at":"{d.created_at}","uploader_id":{400_000 + (d.id * 7) % 600_000},'
            f'"score":{d.up_score + d.down_score},"source":"{d.source}",{md5}"last_comment_bumped_at":{commented},'
            f'"rating":"{d.rating}","image_width":{d.width},"image_height":{d.height},"tag_string":"{d.tag_string}",'
            f'"fav_count":{d.fav_count},"file_ext":"{d.ext}","last_noted_at":null,"parent_id":{_json_opt(d.parent_id)},'
            f'"has_children":{_JSON_BOOL[d.has_children]},"approver_id":{_json_opt(d.approver_id)},'
            f'"tag_count_general":{len(d.general)},"tag_count_artist":{len(d.artist)},'
            f'"tag_count_character":{len(d.character)},"tag_count_copyright":{len(d.copyright)},'
            f'"file_size":{d.file_size},"up_score":{d.up_score},"down_score":{d.down_score},'
            f'"is_pending":{_JSON_BOOL[d.is_pending]},"is_flagged":{_JSON_BOOL[d.is_flagged]},'
            f'"is_deleted":{_JSON_BOOL[d.is_deleted]},"tag_count":{total},"updated_at":"{d.updated_at}",'
            f'"is_banned":{_JSON_BOOL[banned]},"pixiv_id":{_json_opt(d.pixiv_id)},"last_commented_at":{commented},'
            f'"has_active_children":{_JSON_BOOL[d.has_children and not d.is_deleted]},"bit_flags":0,'
            f'"tag_count_meta":{len(d.meta)},"has_large":{_JSON_BOOL[d.has_large]},'
            f'"has_visible_children":{_JSON_BOOL[d.has_children]},"media_asset":{asset},'
            f'"tag_string_general":"{" ".join(d.general)}","tag_string_character":"{" ".join(d.character)}",'
            f'"tag_string_copyright":"{" ".join(d.copyright)}","tag_string_artist":"{" ".join(d.artist)}",'
            f'"tag_string_meta":"{" ".join(d.meta)}"{urls}}}'
        )


class SyntheticE621Corpus(_SyntheticCorpus):
    """e621-shaped (legacy format) posts ``first_id .. first_id+count-1``, all created on UTC ``day``."""

    default_first_id = DEFAULT_E621_FIRST_ID

    def __init__(
        self,
        count: int,
        day: str,
        vocabulary: int = 5_000,
        tags_per_post: int = 30,
        seed: int = 0,
        first_id: int | None = None,
    ) -> None:
        super().__init__(count, day, vocabulary, tags_per_post, seed, first_id)
        self.pools = e621_vocabulary(vocabulary, seed)

    def tags(self) -> list[dict[str, Any]]:
        """e621 Tag records for the whole vocabulary (``post_count`` is a rough estimate)."""
        return _tag_records(self.pools, E621_CATEGORY_IDS, self.count, self.seed, danbooru=False)

    def _build(self, post_id: int) -> dict[str, Any]:
        rng = self._rng(post_id)
        rand = rng.random
        created = self._created(rng, post_id)
        updated = created + rng.expovariate(1 / 7200.0)
        digest = hashlib.md5(f"e621:{self.seed}:{post_id}".encode()).hexdigest()
        wanted = {
            "artist": 1 if rand() < 0.9 else 2,
            "contributor": 1 if rand() < 0.03 else 0,
            "copyright": 1 if rand() < 0.35 else 0,
            "character": rng.choices((0, 1, 2), (40, 45, 15))[0],
            "species": rng.randint(1, 4),
            "invalid": 0,
            "meta": rng.randint(1, 3),
            "lore": 1 if rand() < 0.02 else 0,
        }
        counts = _counts(wanted, self.tags_per_post, self.pools)
        tags = {
            category: sorted(_pick(rng, self.pools[category], counts.get(category, 0), 1.8))
            for category in E621_CATEGORIES
        }
        width, height = rng.choice(_SIZES)
        ext = rng.choices(_E621_EXT_NAMES, _E621_EXT_WEIGHTS)[0]
        video = ext in ("webm", "mp4")
        size = int(width * height * (0.6 if ext == "jpg" else 1.4) * (0.5 + rand()))
        up = int(rng.expovariate(1 / 40.0))
        down = -int(rng.expovariate(1.0))
        deleted = rand() < 0.03
        base = f"https://static1.e621.net/data/{digest[0:2]}/{digest[2:4]}/{digest}"
        sample_base = f"https://static1.e621.net/data/sample/{digest[0:2]}/{digest[2:4]}/{digest}"
        preview_base = f"https://static1.e621.net/data/preview/{digest[0:2]}/{digest[2:4]}/{digest}"
        pw, ph = _fit(width, height, 150)
        has_sample = width > 850 or video
        sw = 850 if has_sample else width
        sh = round(height * sw / width)
        alternates: dict[str, Any] = {}
        if video:
            alternates = {
                "has": True,
                "original": {
                    "codec": "vp9" if ext == "webm" else "avc1.4D401E",
                    "fps": 30.0,
                    "size": size,
                    "width": width,
                    "height": height,
                    "url": None if deleted else f"{base}.{ext}",
                },
                "variants": {},
                "samples": {},
            }
        artist = tags["artist"][0] if tags["artist"] else "unknown_artist"
        parent_id = post_id - rng.randint(1, 500) if rand() < 0.05 else None
        return {
            "id": post_id,
            "created_at": format_timestamp(created),
            "updated_at": format_timestamp(updated),
            "file": {
                "width": width,
                "height": height,
                "ext": ext,
                "size": size,
                "md5": digest,
                "url": None if deleted else f"{base}.{ext}",
            },
            "preview": {
                "width": pw,
                "height": ph,
                "url": None if deleted else f"{preview_base}.jpg",
                "alt": None if deleted else f"{preview_base}.webp",
            },
            "sample": {
                "has": has_sample,
                "width": sw,
                "height": sh,
                "url": None if deleted or not has_sample else f"{sample_base}.jpg",
                "alt": None if deleted or not has_sample else f"{sample_base}.webp",
                "alternates": alternates,
            },
            "score": {"up": up, "down": down, "total": up + down},
            "tags": tags,
            "locked_tags": [],
            "change_seq": 60_000_000 + (post_id - self.first_id) * 3 + rng.randint(0, 2),
            "flags": {
                "pending": rand() < 0.01,
                "flagged": False,
                "note_locked": False,
                "status_locked": False,
                "rating_locked": False,
                "deleted": deleted,
            },
            "rating": rng.choices("sqe", (40, 25, 35))[0],
            "fav_count": int(up * (1 + rand() * 2)),
            "sources": [f"https://www.furaffinity.net/view/{50_000_000 + post_id}/"] if rand() < 0.8 else [],
            "pools": [30_000 + post_id % 5_000] if rand() < 0.05 else [],
            "relationships": {
                "parent_id": parent_id,
                "has_children": False,
                "has_active_children": False,
                "children": [],
            },
            "approver_id": 171_673 if rand() < 0.7 else None,
            "uploader_id": 1_000_000 + (post_id * 13) % 500_000,
            "uploader_name": f"uploader_{(post_id * 13) % 500_000}",
            "description": "" if rand() < 0.7 else f"Art by {artist}.",
            "comment_count": int(rng.expovariate(0.5)),
            "is_favorited": False,
            "vote": 0,
            "has_notes": False,
            "duration": round(1 + rand() * 59, 3) if video else None,
        }


def _tag_records(
    pools: Mapping[str, Sequence[str]], category_ids: Mapping[str, int], posts: int, seed: int, danbooru: bool
) -> list[dict[str, Any]]:
    created = format_timestamp(_day_start("2015-01-01"))
    records: list[dict[str, Any]] = []
    next_id = 1
    for category, names in pools.items():
        for rank, name in enumerate(names):
            record: dict[str, Any] = {
                "id": next_id,
                "name": name,
                "post_count": max(0, int(posts / (rank + 2))),
                "category": category_ids[category],
                "created_at": created,
                "updated_at": created,
            }
            if danbooru:
                record["is_deprecated"] = False
                record["words"] = [w for w in name.replace("(", "_").replace(")", "_").split("_") if w]
            else:
                record["related_tags"] = None
                record["related_tags_updated_at"] = None
                record["is_locked"] = False
            records.append(record)
            next_id += 1
    return records


def make_danbooru_posts(
    count: int,
    day: str,
    vocabulary: int = 20_000,
    tags_per_post: int = 25,
    seed: int = 0,
    first_id: int | None = None,
    descending: bool = True,
) -> list[dict[str, Any]]:
    """``count`` Danbooru-shaped posts created on UTC ``day`` with unique contiguous ids starting at ``first_id``.

    Returned in id DESC order (like ``/posts.json``) unless ``descending`` is False. Deterministic in all arguments.
    """
    corpus = SyntheticDanbooruCorpus(count, day, vocabulary, tags_per_post, seed, first_id)
    return _materialise(corpus, descending)


def make_e621_posts(
    count: int,
    day: str,
    vocabulary: int = 5_000,
    tags_per_post: int = 30,
    seed: int = 0,
    first_id: int | None = None,
    descending: bool = True,
) -> list[dict[str, Any]]:
    """``count`` e621-shaped (legacy) posts created on UTC ``day``; see ``make_danbooru_posts``."""
    corpus = SyntheticE621Corpus(count, day, vocabulary, tags_per_post, seed, first_id)
    return _materialise(corpus, descending)


def _materialise(corpus: _SyntheticCorpus, descending: bool) -> list[dict[str, Any]]:
    """Every post of ``corpus``; the cyclic GC is paused meanwhile (it only slows down allocating 100k dicts)."""
    ids = reversed(corpus.ids) if descending else iter(corpus.ids)
    build = corpus._build
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [build(post_id) for post_id in ids]
    finally:
        if was_enabled:
            gc.enable()
