"""Settings: the packaged defaults, a user file (``UMLMM_CONFIG``) and environment overrides."""

from umlmm_pipelines.config.errors import ConfigError, ConfigProblem
from umlmm_pipelines.config.loader import Settings, load_settings
from umlmm_pipelines.config.schedules import ScheduleSettings

__all__ = ["ConfigError", "ConfigProblem", "ScheduleSettings", "Settings", "load_settings"]
