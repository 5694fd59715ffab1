"""Load settings the way the seed's appsettings did: packaged defaults, then a user file, then env.

Keys are matched case-insensitively, as in .NET configuration, and an environment variable
``Section__Source__Key`` overrides the file key ``Section.Source.Key``. Every leaf remembers
where it came from so that an error can name the exact file key or variable to fix.
"""

from __future__ import annotations

import json
import os
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from umlmm_pipelines.config.errors import ConfigError, ConfigProblem
from umlmm_pipelines.config.operations import DEFAULT_MAX_RUNTIME_MINUTES, MAX_RUNTIME_KEY, OperationsSettings
from umlmm_pipelines.config.quartz import CronTranslationError, to_dagster_cron
from umlmm_pipelines.config.schedules import ScheduleSettings

CONFIG_FILE_ENV = "UMLMM_CONFIG"
SECTIONS = ("JobSchedules", "Sources")
#: A section that is not keyed by source.
OPERATIONS_SECTION = "Operations"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class SourceConfigSpec:
    """What the loader needs to know of a source: its names and its settings model."""

    name: str
    display_name: str
    settings_model: type[BaseModel]


@dataclass(frozen=True)
class Settings:
    """Everything the code location is built from."""

    schedules: dict[str, ScheduleSettings]
    sources: dict[str, BaseModel]
    origins: dict[str, str] = field(default_factory=dict)
    operations: OperationsSettings = field(default_factory=OperationsSettings)
    #: ``Sources.<Source>.MaxRuntimeMinutes`` per source; None means no limit (0 in the config).
    max_runtime_minutes: dict[str, float | None] = field(default_factory=dict)

    def source(self, name: str) -> BaseModel:
        return self.sources[name]

    def max_runtime_seconds(self, name: str) -> int | None:
        """The source's run time limit for the ``dagster/max_runtime`` run tag, or None."""
        minutes = self.max_runtime_minutes.get(name, DEFAULT_MAX_RUNTIME_MINUTES)
        return None if minutes is None else max(1, round(minutes * 60))


class _Tree:
    """A case-insensitive nested mapping that records each leaf's origin."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.names: dict[str, str] = {}
        self.origins: dict[tuple[str, ...], str] = {}

    def merge(self, data: Mapping[str, Any], origin: str, prefix: tuple[str, ...] = ()) -> list[ConfigProblem]:
        problems = []
        for key, value in data.items():
            path = (*prefix, str(key))
            if isinstance(value, Mapping):
                problems += self.merge(value, origin, path)
            elif (problem := self.set(path, value, origin)) is not None:
                problems.append(problem)
        return problems

    def set(self, path: tuple[str, ...], value: Any, origin: str) -> ConfigProblem | None:
        """Set one leaf; a section that an earlier layer set as a plain value is a problem."""
        node = self.values
        for depth, part in enumerate(path[:-1], start=1):
            lowered = part.lower()
            self.names.setdefault(lowered, part)
            self.origins.setdefault(tuple(p.lower() for p in path[:depth]), _describe(origin, path[:depth]))
            node = node.setdefault(lowered, {})
            if not isinstance(node, dict):
                where = _describe(origin, path)
                return ConfigProblem(path[1] if len(path) > 1 else path[0], where,
                                     f"{'.'.join(path[:depth])} is a value elsewhere, not a section")
        leaf = path[-1].lower()
        self.names.setdefault(leaf, path[-1])
        node[leaf] = value
        self.origins[tuple(p.lower() for p in path)] = _describe(origin, path)
        return None

    def section(self, *path: str) -> dict[str, Any]:
        node: Any = self.values
        for part in path:
            node = node.get(part.lower(), {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}

    def origin(self, *path: str) -> str:
        return self.origins.get(tuple(p.lower() for p in path), "packaged defaults")


def _describe(origin: str, path: tuple[str, ...]) -> str:
    if origin == "env":
        return f"environment variable {'__'.join(path)}"
    return f"{origin}: {'.'.join(path)}"


def load_settings(
    sources: Iterable[SourceConfigSpec],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings; raise :class:`ConfigError` listing every bad entry."""
    environ = os.environ if environ is None else environ
    specs = {s.name: s for s in sources}
    tree = _Tree()
    problems: list[ConfigProblem] = []

    problems += tree.merge(_read_packaged_defaults(), "packaged defaults (umlmm_pipelines/defaults/appsettings.json)")
    user_file = environ.get(CONFIG_FILE_ENV)
    if user_file:
        try:
            problems += tree.merge(_read_file(Path(user_file)), f"file {user_file}")
        except (OSError, ValueError) as exc:
            problems.append(ConfigProblem("config", f"{CONFIG_FILE_ENV}={user_file}", str(exc)))
    for name, value in environ.items():
        parts = tuple(name.split("__"))
        if len(parts) >= 2 and parts[0].lower() in {s.lower() for s in (*SECTIONS, OPERATIONS_SECTION)}:
            if (problem := tree.set(parts, value, "env")) is not None:
                problems.append(problem)

    by_key = {_source_key(spec.display_name): spec for spec in specs.values()}
    by_key.update({_source_key(spec.name): spec for spec in specs.values()})
    for section in SECTIONS:
        for key in tree.section(section):
            if _source_key(key) not in by_key:
                known = ", ".join(s.display_name for s in specs.values())
                problems.append(
                    ConfigProblem(tree.names.get(key, key), tree.origin(section, key),
                                  f"unknown source in {section} (known: {known})")
                )

    schedules: dict[str, ScheduleSettings] = {}
    source_settings: dict[str, BaseModel] = {}
    max_runtimes: dict[str, float | None] = {}
    for spec in specs.values():
        key = _find_key(tree.section("JobSchedules"), spec)
        schedule = _schedule(spec, tree, key, problems)
        if schedule is not None:
            schedules[spec.name] = schedule
        settings_key = _find_key(tree.section("Sources"), spec)
        max_runtimes[spec.name] = _max_runtime(spec, tree, settings_key, problems)
        model = _source_settings(spec, tree, settings_key, problems)
        if model is not None:
            source_settings[spec.name] = model
    operations = _operations(tree, problems)

    if problems:
        raise ConfigError(problems)
    origins = {".".join(path): origin for path, origin in tree.origins.items()}
    return Settings(schedules=schedules, sources=source_settings, origins=origins,
                    operations=operations or OperationsSettings(), max_runtime_minutes=max_runtimes)


def _source_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _find_key(section: dict[str, Any], spec: SourceConfigSpec) -> str | None:
    wanted = {_source_key(spec.name), _source_key(spec.display_name)}
    return next((k for k in section if _source_key(k) in wanted), None)


def _schedule(
    spec: SourceConfigSpec, tree: _Tree, key: str | None, problems: list[ConfigProblem]
) -> ScheduleSettings | None:
    if key is None:
        problems.append(ConfigProblem(spec.display_name, f"JobSchedules.{spec.display_name}", "no schedule configured"))
        return None
    values = tree.section("JobSchedules", key)
    found = len(problems)
    written = str(values.get("cronschedule", "")).strip()
    cron = ""
    try:
        cron = to_dagster_cron(written)
    except CronTranslationError as exc:
        problems.append(ConfigProblem(spec.display_name, tree.origin("JobSchedules", key, "CronSchedule"), str(exc)))
    timezone = str(values.get("timezone") or "UTC").strip()
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(
            ConfigProblem(spec.display_name, tree.origin("JobSchedules", key, "Timezone"),
                          f"unknown timezone '{timezone}' (use an IANA name such as UTC or Europe/Berlin)")
        )
    enabled = _as_bool(values.get("enabled", True))
    if enabled is None:
        problems.append(
            ConfigProblem(spec.display_name, tree.origin("JobSchedules", key, "Enabled"),
                          f"Enabled must be true or false, not '{values.get('enabled')}'")
        )
    if len(problems) > found:
        return None
    description = str(values.get("description") or f"Ingest {spec.display_name}")
    return ScheduleSettings(
        source=spec.name, cron=cron, written_as=written, description=description,
        enabled=bool(enabled), timezone=timezone,
    )


def _source_settings(
    spec: SourceConfigSpec, tree: _Tree, key: str | None, problems: list[ConfigProblem]
) -> BaseModel | None:
    raw = {k: v for k, v in (tree.section("Sources", key) if key else {}).items() if k != MAX_RUNTIME_KEY.lower()}
    model = spec.settings_model
    aliases = {(f.alias or name).lower(): (f.alias or name) for name, f in model.model_fields.items()}
    data = {aliases.get(k, tree.names.get(k, k)): v for k, v in raw.items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else ""
            origin = tree.origin("Sources", key or spec.display_name, field_name) if field_name else (
                f"Sources.{spec.display_name}")
            problems.append(ConfigProblem(spec.display_name, origin, f"{field_name}: {error['msg']}"))
        return None


def _max_runtime(
    spec: SourceConfigSpec, tree: _Tree, key: str | None, problems: list[ConfigProblem]
) -> float | None:
    """``Sources.<Source>.MaxRuntimeMinutes``: minutes (> 0), or 0 for no limit.

    Read here for every source, so no source's settings model has to know about it.
    """
    raw = (tree.section("Sources", key) if key else {}).get(MAX_RUNTIME_KEY.lower())
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return DEFAULT_MAX_RUNTIME_MINUTES
    try:
        minutes = float(raw)
    except (TypeError, ValueError):
        minutes = -1.0
    if minutes < 0 or minutes != minutes or minutes == float("inf"):
        problems.append(ConfigProblem(spec.display_name, tree.origin("Sources", key or spec.display_name,
                                                                     MAX_RUNTIME_KEY),
                                      f"{MAX_RUNTIME_KEY} must be a number of minutes >= 0 (0 = no limit), "
                                      f"not '{raw}'"))
        return DEFAULT_MAX_RUNTIME_MINUTES
    return None if minutes == 0 else minutes


def _operations(tree: _Tree, problems: list[ConfigProblem]) -> OperationsSettings | None:
    raw = tree.section(OPERATIONS_SECTION)
    aliases = {(f.alias or name).lower(): (f.alias or name) for name, f in OperationsSettings.model_fields.items()}
    data = {aliases.get(k, tree.names.get(k, k)): v for k, v in raw.items()}
    try:
        return OperationsSettings.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else ""
            problems.append(ConfigProblem(OPERATIONS_SECTION, tree.origin(OPERATIONS_SECTION, field_name),
                                          f"{field_name}: {error['msg']}"))
        return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _read_packaged_defaults() -> dict[str, Any]:
    text = resources.files("umlmm_pipelines").joinpath("defaults/appsettings.json").read_text("utf-8")
    return json.loads(text)


def _read_file(path: Path) -> dict[str, Any]:
    """Read a JSON file (``.json``, as the seed's appsettings.json) or YAML (anything else)."""
    text = path.read_text("utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot parse {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must contain a mapping at the top level, not {type(data).__name__}")
    return data
