"""The sources: one module each, found by name so that a new source is one new module."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from umlmm_pipelines.ingestion.source import SourceSpec


@cache
def all_sources() -> tuple[SourceSpec, ...]:
    """Every ``SOURCE`` spec in this package, sorted by name."""
    specs = []
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        spec = getattr(module, "SOURCE", None)
        if isinstance(spec, SourceSpec):
            specs.append(spec)
    return tuple(sorted(specs, key=lambda s: s.name))
