"""The one Definitions object of the ``umlmm_pipelines`` code location."""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from umlmm_pipelines.config import Settings, load_settings
from umlmm_pipelines.config.loader import SourceConfigSpec
from umlmm_pipelines.ingestion.assets import RECORDER_KEY, build_source_asset, build_source_job, build_source_schedule
from umlmm_pipelines.ingestion.recorder import FetchRunRecorder
from umlmm_pipelines.links.asset import build_links_automation_sensor, build_model_links_asset
from umlmm_pipelines.operations.reconcile import fetch_runs_reconciliation_sensor
from umlmm_pipelines.sources import all_sources


def load_source_settings(environ: Mapping[str, str] | None = None) -> Settings:
    return load_settings(
        [SourceConfigSpec(s.name, s.display_name, s.settings_model) for s in all_sources()],
        environ=environ,
    )


def build_definitions(settings: Settings, recorder: FetchRunRecorder | None = None) -> dg.Definitions:
    assets, jobs, schedules = [], [], []
    for spec in all_sources():
        source_settings = settings.source(spec.name)
        assets.append(build_source_asset(spec, source_settings))
        job = build_source_job(spec, source_settings)
        jobs.append(job)
        schedules.append(build_source_schedule(spec, job, settings.schedules[spec.name], source_settings))
    return dg.Definitions(
        assets=[*assets, build_model_links_asset(RECORDER_KEY)],
        jobs=jobs,
        schedules=schedules,
        sensors=[fetch_runs_reconciliation_sensor, build_links_automation_sensor()],
        resources={RECORDER_KEY: recorder or FetchRunRecorder()},
    )


defs = build_definitions(load_source_settings(os.environ))
