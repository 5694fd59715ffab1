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
from umlmm_pipelines.operations.freshness import build_freshness_check, build_freshness_sensor
from umlmm_pipelines.operations.metrics import build_metrics_asset, build_metrics_job_and_schedule
from umlmm_pipelines.operations.pools import build_source_pools_sensor
from umlmm_pipelines.operations.reconcile import fetch_runs_reconciliation_sensor
from umlmm_pipelines.operations.stuck_runs import build_stuck_runs_sensor
from umlmm_pipelines.sources import all_sources


def load_source_settings(environ: Mapping[str, str] | None = None) -> Settings:
    return load_settings(
        [SourceConfigSpec(s.name, s.display_name, s.settings_model) for s in all_sources()],
        environ=environ,
    )


def build_definitions(settings: Settings, recorder: FetchRunRecorder | None = None) -> dg.Definitions:
    specs = all_sources()
    assets, jobs, schedules, checks = [], [], [], []
    for spec in specs:
        source_settings = settings.source(spec.name)
        assets.append(build_source_asset(spec, source_settings))
        job = build_source_job(spec, source_settings, settings.max_runtime_seconds(spec.name))
        jobs.append(job)
        schedules.append(build_source_schedule(spec, job, settings.schedules[spec.name], source_settings))
        checks.append(build_freshness_check(spec, settings.schedules[spec.name], RECORDER_KEY))
    # Operations: the metrics asset (hourly), freshness checks and the sensors that keep runs honest.
    assets.append(build_metrics_asset(specs, settings.operations.metrics_window_days, RECORDER_KEY))
    metrics_job, metrics_schedule = build_metrics_job_and_schedule()
    return dg.Definitions(
        assets=[*assets, build_model_links_asset(RECORDER_KEY)],
        asset_checks=checks,
        jobs=[*jobs, metrics_job],
        schedules=[*schedules, metrics_schedule],
        sensors=[
            fetch_runs_reconciliation_sensor,
            build_stuck_runs_sensor(specs, settings, RECORDER_KEY),
            build_freshness_sensor(specs, settings, RECORDER_KEY),
            build_links_automation_sensor(),
            build_source_pools_sensor(specs),
        ],
        resources={RECORDER_KEY: recorder or FetchRunRecorder()},
    )


defs = build_definitions(load_source_settings(os.environ))
