"""CivitAI, not implemented yet (issue 4): its runs fail with a clear error, no counts."""

from umlmm_pipelines.ingestion.source import SourceSpec
from umlmm_pipelines.sources._pending import PendingSettings

SOURCE = SourceSpec(
    name="civitai",
    display_name="CivitAI",
    asset_name="models",
    description="CivitAI models, versions, files and images. Not implemented yet: a run fails with a clear error.",
    settings_model=PendingSettings,
    not_implemented_reason="ingestion is not implemented yet (tracked in issue 4); nothing was fetched",
)
