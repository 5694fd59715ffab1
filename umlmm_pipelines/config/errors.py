"""Configuration errors that name every bad entry at once.

A user fixing a config file should not have to restart the UI once per mistake, so validation
collects every problem (with the file key or environment variable it came from) and fails once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    """One bad entry: which source it concerns, where the value came from, and what is wrong."""

    source: str
    origin: str
    message: str

    def __str__(self) -> str:
        return f"[{self.source}] {self.origin}: {self.message}"


class ConfigError(ValueError):
    """Raised when the configuration cannot be loaded; lists every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"UMLMM configuration is invalid ({len(self.problems)} problem(s)):\n{lines}")
