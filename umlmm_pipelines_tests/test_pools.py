"""Each source's pool gets its limit before a run needs it (operations/pools.py)."""

from __future__ import annotations

import dagster as dg
import pytest

from umlmm_pipelines.operations.pools import build_source_pools_sensor, ensure_pool_limits
from umlmm_pipelines.sources import all_sources

POOLS = [f"umlmm_{spec.name}" for spec in all_sources()]


@pytest.fixture
def pooled_instance():
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1, "granularity": "run"}}}) as inst:
        yield inst


def _limits(instance: dg.DagsterInstance) -> dict[str, int]:
    return {limit.name: limit.limit for limit in instance.event_log_storage.get_pool_limits()}


def test_a_new_instance_gets_every_source_pool_at_the_default_limit_once(pooled_instance):
    assert _limits(pooled_instance) == {}

    assert ensure_pool_limits(pooled_instance, POOLS) == POOLS

    assert _limits(pooled_instance) == dict.fromkeys(POOLS, 1)
    assert ensure_pool_limits(pooled_instance, POOLS) == []


def test_a_limit_set_on_purpose_is_left_alone(pooled_instance):
    pooled_instance.event_log_storage.set_concurrency_slots("umlmm_ollama", 3)

    ensure_pool_limits(pooled_instance, POOLS)

    assert _limits(pooled_instance)["umlmm_ollama"] == 3
    assert _limits(pooled_instance)["umlmm_danbooru"] == 1


def test_the_sensor_sets_the_limits_and_says_which(pooled_instance):
    sensor = build_source_pools_sensor(all_sources())

    first = sensor(dg.build_sensor_context(instance=pooled_instance))
    again = sensor(dg.build_sensor_context(instance=pooled_instance))

    assert "umlmm_danbooru" in first.skip_message and again.skip_message == "every source pool has its limit"
    assert _limits(pooled_instance) == dict.fromkeys(POOLS, 1)
