"""Entry point for a separate process that runs one Ollama ingestion (used by the race test)."""

from __future__ import annotations

import dagster as dg
from dagster._core.instance.ref import InstanceRef


def run_ollama_once(instance_dir: str, catalog_url: str, ollama_url: str) -> bool:
    from umlmm_pipelines_tests.helpers import make_defs, run_source

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(instance_dir)) as instance:
        defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": ollama_url}, guard_poll_seconds=0.2)
        return run_source(defs, "ollama", instance).success
