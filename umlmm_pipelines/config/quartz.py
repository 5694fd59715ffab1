"""Translate the seed's Quartz cron expressions into the 5-field cron that Dagster accepts.

The seed (a .NET service using Quartz.NET) wrote schedules such as ``0 0 */6 * * ?``: seconds
first, ``?`` for "no specific value", an optional year, and day-of-week numbered 1 (Sunday) to 7.
Dagster only understands standard 5-field cron with Sunday = 0, so we translate what has an exact
equivalent and refuse what has not, rather than silently running at other times.
"""

from __future__ import annotations

import re

from dagster._utils.schedules import is_valid_cron_string

_MACROS = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
_NUMBER = re.compile(r"\d+")


class CronTranslationError(ValueError):
    """The expression is invalid or has no exact 5-field equivalent."""


def to_dagster_cron(expression: str) -> str:
    """Return the 5-field cron for a Quartz (6/7-field) or standard (5-field) expression."""
    text = " ".join(str(expression).split())
    if not text:
        raise CronTranslationError("empty cron expression")
    if text.lower() in _MACROS:
        return text.lower()
    fields = text.split(" ")
    if len(fields) == 5:
        cron = text
    elif len(fields) in (6, 7):
        cron = _translate_quartz(fields)
    else:
        raise CronTranslationError(
            f"'{text}' has {len(fields)} fields; expected 5 (cron) "
            "or 6-7 (Quartz: sec min hour day month weekday [year])"
        )
    if not is_valid_cron_string(cron):
        detail = f" (translated from Quartz '{text}')" if cron != text else ""
        raise CronTranslationError(f"'{cron}' is not a valid cron expression{detail}")
    return cron


def _translate_quartz(fields: list[str]) -> str:
    seconds, minute, hour, day, month, weekday = fields[:6]
    year = fields[6] if len(fields) == 7 else "*"
    if seconds not in ("0", "00"):
        raise CronTranslationError(
            f"seconds field '{seconds}' cannot be represented: Dagster schedules run on whole minutes (use 0)"
        )
    if year not in ("*", "?"):
        raise CronTranslationError(
            f"year field '{year}' cannot be represented: Dagster schedules repeat every year (use * or omit it)"
        )
    for name, value in (("day-of-month", day), ("day-of-week", weekday)):
        if "W" in value.upper():
            raise CronTranslationError(f"{name} '{value}' (nearest weekday, W) cannot be represented in cron")
    if re.search(r"\dL", weekday.upper()):
        raise CronTranslationError(f"day-of-week '{weekday}' (last weekday of month, nL) cannot be represented in cron")
    day = "*" if day == "?" else day
    weekday = "*" if weekday == "?" else _quartz_weekday_to_cron(weekday)
    return " ".join([minute, hour, day, month, weekday])


def _quartz_weekday_to_cron(value: str) -> str:
    """Quartz numbers days 1=SUN..7=SAT; cron numbers them 0=SUN..6=SAT. Names are unchanged.

    Only the day numbers shift: the count after ``#`` (nth weekday) and the step after ``/``
    are not days.
    """

    def shift_day_numbers(part: str) -> str:
        base, sep, rest = part.partition("#") if "#" in part else part.partition("/")
        shifted = _NUMBER.sub(lambda m: _shift_one(m.group()), base)
        return shifted + sep + rest

    return ",".join(shift_day_numbers(p) for p in value.split(","))


def _shift_one(number: str) -> str:
    day = int(number)
    if not 1 <= day <= 7:
        raise CronTranslationError(f"Quartz day-of-week {day} is out of range 1-7 (1 = Sunday)")
    return str(day - 1)
