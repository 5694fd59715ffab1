"""Settings of the operations side: stuck-run detection, health thresholds, run time limits.

They are read by the same loader as the schedules and sources: the packaged defaults, then
``UMLMM_CONFIG``, then environment variables (``Operations__StuckAfterMinutes``). A source's
run time limit is a key of its own ``Sources`` section (``Sources__Ollama__MaxRuntimeMinutes``)
so that it sits beside the settings that make a run long, but it is read here, once for every
source, rather than by each source's settings model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: The key of a ``Sources.<Source>`` section that the loader reads for every source.
MAX_RUNTIME_KEY = "MaxRuntimeMinutes"
#: The limit of a source whose section does not say (a new source without an entry yet).
DEFAULT_MAX_RUNTIME_MINUTES = 240.0


class OperationsSettings(BaseModel):
    """``Operations`` section: how the health report and the operations sensors judge runs."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    #: A running fetch run whose row (heartbeat_at, written with every committed page) has not
    #: moved for this long is ended by the stuck-run sensor and reported by ``health``.
    stuck_after_minutes: float = Field(30.0, alias="StuckAfterMinutes", gt=0)
    #: How often the stuck-run and freshness sensors evaluate.
    sensor_interval_seconds: int = Field(60, alias="SensorIntervalSeconds", ge=5)
    #: A freshness check result is re-emitted at least this often even when nothing changed,
    #: so the UI shows a recent evaluation time without writing an event every sensor tick.
    freshness_reemit_minutes: float = Field(60.0, alias="FreshnessReemitMinutes", gt=0)
    #: A daemon whose last heartbeat is older than this is unhealthy (daemons beat every 30 s).
    daemon_heartbeat_max_age_seconds: float = Field(120.0, alias="DaemonHeartbeatMaxAgeSeconds", gt=0)
    #: The period the metrics asset and ``umlmm-pipelines stats`` summarize.
    metrics_window_days: float = Field(7.0, alias="MetricsWindowDays", gt=0)

    @property
    def stuck_after_seconds(self) -> float:
        return self.stuck_after_minutes * 60.0
