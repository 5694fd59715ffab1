"""Timestamps as the sources write them: ISO 8601 / RFC 3339 with any offset, into aware datetimes.

One parser for every source: Ollama writes Go's nanosecond fractions, the image boards
milliseconds with a US Eastern offset, CivitAI ``Z``; the catalog stores UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_timestamp_as_written(value: Any) -> datetime | None:
    """An aware datetime keeping the offset the source wrote (UTC when it wrote none); None for
    nothing. Raises ValueError for text that is not a timestamp."""
    if not value:
        return None
    # Python 3.11+ reads any number of fraction digits (Go's nanoseconds), keeping microseconds.
    parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_timestamp(value: Any) -> datetime | None:
    """The same instant in UTC."""
    parsed = parse_timestamp_as_written(value)
    return parsed.astimezone(UTC) if parsed is not None else None
