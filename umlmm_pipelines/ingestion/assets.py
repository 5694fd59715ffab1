"""Build one asset, one job and one schedule per source, all on the same mechanism."""

# No "from __future__ import annotations" here: Dagster inspects the real type of `context`.


import time
import traceback
import warnings
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import BaseModel

from umlmm_pipelines.catalog.cursors import read_cursor
from umlmm_pipelines.catalog.fetch_runs import Counts
from umlmm_pipelines.config import ScheduleSettings
from umlmm_pipelines.ingestion.inflight import describe_blockers
from umlmm_pipelines.ingestion.logfmt import kv
from umlmm_pipelines.ingestion.pages import PageLoop
from umlmm_pipelines.ingestion.recorder import FetchRunRecorder
from umlmm_pipelines.ingestion.source import SOURCE_TAG, RunInputs, SourceError, SourceSpec

RECORDER_KEY = "fetch_runs"


def build_source_asset(spec: SourceSpec, settings: BaseModel) -> dg.AssetsDefinition:
    with warnings.catch_warnings():
        # BackfillPolicy is marked beta in Dagster 1.13; chunked backfills rely on it on purpose.
        warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
        return _source_asset(spec, settings)


def _source_asset(spec: SourceSpec, settings: BaseModel) -> dg.AssetsDefinition:
    @dg.asset(
        key=spec.asset_key,
        group_name=spec.name,
        description=spec.description,
        partitions_def=spec.partitions_def(settings),
        backfill_policy=spec.backfill_policy(settings) if spec.backfill_policy else None,
        kinds={"python"},
        tags={SOURCE_TAG: spec.name},
        # A pool per source (limit 1 in dagster.yaml) holds back runs that carry no source tag,
        # such as the UI's "Materialize" button, which launches the implicit asset job.
        pool=pool_name(spec),
        required_resource_keys={RECORDER_KEY},
    )
    def _ingest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        recorder: FetchRunRecorder = getattr(context.resources, RECORDER_KEY)
        return ingest(context, spec, settings, recorder)

    return _ingest


def pool_name(spec: SourceSpec) -> str:
    return f"umlmm_{spec.name}"


def ingest(
    context: dg.AssetExecutionContext, spec: SourceSpec, settings: BaseModel, recorder: FetchRunRecorder
) -> dg.MaterializeResult:
    """One run of one source: fetch_runs row, guard, page loop, final status and metadata."""
    partition_keys = _partition_keys(context)
    partition_label = _partition_label(partition_keys)
    parameters: dict[str, Any] = {"settings": settings.model_dump(mode="json", by_alias=True)}
    if partition_keys:
        parameters["partitions"] = list(partition_keys)
    started = time.monotonic()
    context.log.info(kv("run_started", source=spec.name, run_id=context.run_id, partition=partition_label))
    fetch_run = recorder.begin(context, spec.name, partition_label, parameters)
    totals = Counts()
    loop: PageLoop | None = None
    inputs: RunInputs | None = None
    try:
        fetch_run.acquire_guard()
        if not spec.implemented or spec.run_factory is None:
            raise SourceError(f"{spec.display_name}: {spec.not_implemented_reason}")
        inputs = RunInputs(
            settings=settings,
            partition_keys=partition_keys,
            log=context.log,
            read_cursor=lambda scope: read_cursor(recorder.engine, spec.name, scope),
        )
        source_run = spec.run_factory(inputs)
        try:
            loop = PageLoop(spec, source_run, recorder.engine, fetch_run.id, context.log)
            totals = loop.run_all()
        finally:
            source_run.close()
        if inputs.deferred_failures:
            raise SourceError("; ".join(inputs.deferred_failures))
    except BaseException as exc:
        if loop is not None:
            totals = loop.totals
        status = fetch_run.end_with(totals, exc)
        duration_ms = int((time.monotonic() - started) * 1000)
        line = kv("run_ended", source=spec.name, run_id=context.run_id, status=status, duration_ms=duration_ms,
                  **totals.as_dict(), **(inputs.report if inputs else {}), error=str(exc) or type(exc).__name__)
        if status == "cancelled":
            context.log.warning(line)
        else:
            context.log.error(line + "\n" + "".join(traceback.format_exception(exc)))
        raise
    fetch_run.complete(totals)
    duration_ms = int((time.monotonic() - started) * 1000)
    context.log.info(kv("run_ended", source=spec.name, run_id=context.run_id, status="completed",
                        duration_ms=duration_ms, **totals.as_dict(), **inputs.report))
    return dg.MaterializeResult(
        metadata={
            **totals.as_dict(),
            **inputs.report,
            "duration_ms": duration_ms,
            "fetch_run_id": fetch_run.id,
            "partition": partition_label or "",
            "dagster_run": dg.MetadataValue.dagster_run(context.run_id),
        }
    )


def _partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The run's partition keys: one, a range (a chunk of a backfill), or none."""
    if context.has_partition_key_range:
        return list(context.partition_keys)
    if context.has_partition_key:
        return [context.partition_key]
    return []


def _partition_label(keys: list[str]) -> str | None:
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"


def source_job_tags(spec: SourceSpec, max_runtime_seconds: int | None = None) -> dict[str, str]:
    """Tags every run of the source's job carries, however it is launched.

    ``dagster/max_runtime`` makes Dagster's run monitoring end a run that outlives the source's
    ``MaxRuntimeMinutes``; job tags are copied onto schedule, backfill, UI and GraphQL runs alike.
    """
    tags = {SOURCE_TAG: spec.name}
    if max_runtime_seconds:
        tags[dg.MAX_RUNTIME_SECONDS_TAG] = str(int(max_runtime_seconds))
    return tags


def build_source_job(
    spec: SourceSpec, settings: BaseModel, max_runtime_seconds: int | None = None
) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=spec.job_name,
        selection=dg.AssetSelection.assets(spec.asset_key).without_checks(),
        tags=source_job_tags(spec, max_runtime_seconds),
        partitions_def=spec.partitions_def(settings),
        description=f"Ingest {spec.display_name} into the UMLMM catalog",
        # One step per run: a separate step process would only add start-up time, and with the
        # step in the run worker a terminate or a kill reaches the ingestion directly.
        executor_def=dg.in_process_executor,
    )


def build_source_schedule(
    spec: SourceSpec, job: UnresolvedAssetJobDefinition, schedule: ScheduleSettings, settings: BaseModel
) -> dg.ScheduleDefinition:
    """A schedule that skips (with a reason and a warning) while the source is busy."""
    if schedule.written_as != schedule.cron:
        written = f" Configured as '{schedule.written_as}' (Quartz), run as '{schedule.cron}' ({schedule.timezone})."
    else:
        written = f" Cron '{schedule.cron}' ({schedule.timezone})."

    @dg.schedule(
        name=spec.schedule_name,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        job=job,
        description=schedule.description + written,
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        blocker = describe_blockers(context.instance, spec)
        if blocker is not None:
            context.log.warning(kv("tick_skipped", source=spec.name, reason=blocker))
            return dg.SkipReason(blocker)
        if spec.scheduled_partitions is None:
            return [dg.RunRequest(tags={SOURCE_TAG: spec.name})]
        now = context.scheduled_execution_time or datetime.now(UTC)
        keys = spec.scheduled_partitions(settings, now)
        context.log.info(kv("tick_partitions", source=spec.name, partitions=",".join(keys)))
        # One tick may request several days; the run key makes each request of each tick distinct.
        return [dg.RunRequest(partition_key=key, run_key=f"{key}@{now.isoformat()}", tags={SOURCE_TAG: spec.name})
                for key in keys]

    return _schedule
