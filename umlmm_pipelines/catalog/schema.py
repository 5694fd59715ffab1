"""The complete catalog schema: shared tables plus every source's entity tables."""

from __future__ import annotations

import sqlalchemy as sa

from umlmm_pipelines.catalog.tables import metadata


def load_all_tables() -> sa.MetaData:
    """Import every module that declares tables so that they are registered on the shared metadata."""
    import umlmm_pipelines.links.tables  # noqa: F401 - registers the link tables
    from umlmm_pipelines.sources import all_sources

    all_sources()
    return metadata
