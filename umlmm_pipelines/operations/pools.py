"""Every source's pool has its limit before the first run of the source is queued.

Runs that carry no source tag (the Materialize button, asset backfills) are held one at a time by
the source's pool (``concurrency.pools`` in dagster.yaml, enforced per run). Dagster gives a pool
its default limit only in the first queue pass that sees the pool, and decides that pass's runs
from the limits it read before: on a new instance, every chunk of a first backfill, or two quick
Materialize clicks, would start at once (the in-run guard still keeps their ingestion apart). This
sensor creates the limits as soon as the daemon runs, the way the queue itself would.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from umlmm_pipelines.ingestion.assets import pool_name
from umlmm_pipelines.ingestion.source import SourceSpec


def ensure_pool_limits(instance: dg.DagsterInstance, pools: Sequence[str]) -> list[str]:
    """Give each pool the instance's default limit where it has none (or a stale default); return those set.

    A limit someone set on purpose (UI, ``dagster instance concurrency set``) is left alone: the
    condition is the queue's own, in ``GlobalOpConcurrencyLimitsCounter``.
    """
    default = instance.global_op_concurrency_default_limit
    if not default:
        return []
    storage = instance.event_log_storage
    limits = {limit.name: limit for limit in storage.get_pool_limits()}
    initialized = []
    for pool in pools:
        known = limits.get(pool)
        if known is None or (known.from_default and known.limit != default):
            storage.initialize_concurrency_limit_to_default(pool)
            initialized.append(pool)
    return initialized


def build_source_pools_sensor(specs: Sequence[SourceSpec]) -> dg.SensorDefinition:
    pools = [pool_name(spec) for spec in specs]

    @dg.sensor(
        name="source_pools_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Gives each source's concurrency pool its default limit before a run needs it, so that "
        "the first backfill or Materialize runs of a source on a new instance queue one at a time.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        initialized = ensure_pool_limits(context.instance, pools)
        if initialized:
            context.log.info(f"pool limits set to the default for: {', '.join(initialized)}")
            return dg.SkipReason(f"set the default limit for {', '.join(initialized)}")
        return dg.SkipReason("every source pool has its limit")

    return _sensor
