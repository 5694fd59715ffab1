"""Validated schedule settings for one source."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleSettings:
    """A source's schedule as Dagster will run it.

    ``cron`` is the 5-field expression Dagster evaluates; ``written_as`` keeps what the user
    wrote (often Quartz) so the UI description can show both.
    """

    source: str
    cron: str
    written_as: str
    description: str
    enabled: bool
    timezone: str
