"""Settings for sources whose ingestion is not built yet: accept any keys, validate none."""

from pydantic import BaseModel, ConfigDict


class PendingSettings(BaseModel):
    """Keeps a user's settings for a source until its module validates them for real."""

    model_config = ConfigDict(extra="allow")
