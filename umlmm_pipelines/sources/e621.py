"""e621, not implemented yet (issue 3): its runs fail with a clear error, no counts."""

from umlmm_pipelines.ingestion.source import SourceSpec
from umlmm_pipelines.sources._pending import PendingSettings

SOURCE = SourceSpec(
    name="e621",
    display_name="e621",
    asset_name="posts",
    description="e621 posts and tags by upload date. Not implemented yet: a run fails with a clear error.",
    settings_model=PendingSettings,
    not_implemented_reason="ingestion is not implemented yet (tracked in issue 3); nothing was fetched",
)
