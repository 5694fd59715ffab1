"""Structured log lines (logfmt: ``event key=value ...``) that grep and log shippers both read."""

from __future__ import annotations

from typing import Any


def kv(event: str, **fields: Any) -> str:
    parts = [event]
    for key, value in fields.items():
        text = "-" if value is None else str(value)
        if not text or any(ch in text for ch in ' "=\n\t'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)
