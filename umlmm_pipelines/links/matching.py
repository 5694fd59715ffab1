"""Which CivitAI file a model file is, from what the catalog knows of it.

Local model files (ComfyUI's ``/models`` listing) carry only a folder and a name. What else is
known comes from workflows: a UI-format workflow may record, per loader node, the models it
needs (``properties.models[]`` with ``name``, ``url`` and sometimes ``hash``/``hash_type``).
A file is therefore matched, strongest evidence first:

1. ``sha256`` / ``autov2`` — a workflow recorded a hash for a file of this name, and a CivitAI
   file has that hash;
2. ``download_url`` — a workflow recorded a CivitAI download link (``/api/download/models/<version>``)
   for it: that version's file of the same name, else its primary file;
3. ``file_name`` — exactly one CivitAI file (or several copies with one hash) has this name
   (compared case-insensitively, without directories);
4. ``file_name_ambiguous`` — several different CivitAI files have the name: none is chosen;
5. no match.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from umlmm_pipelines.links.tables import AMBIGUOUS

_CIVITAI_VERSION_URL = re.compile(
    r"civitai\.com/(?:api/download/models/(\d+)|models/\d+[^?#]*\?(?:[^#]*&)?modelVersionId=(\d+))", re.IGNORECASE
)


def name_key(file_name: str) -> str:
    """A file's name without directories, case-folded: how names are compared across sources."""
    return re.split(r"[\\/]", file_name)[-1].casefold()


@dataclass(frozen=True)
class Hint:
    """What one workflow recorded about a model file it needs."""

    hash: str | None
    version_id: int | None


@dataclass(frozen=True)
class Match:
    model_id: int | None = None
    version_id: int | None = None
    file_id: int | None = None
    model_name: str | None = None
    version_name: str | None = None
    base_model: str | None = None
    method: str | None = None
    candidates: int = 0

    def columns(self) -> dict[str, Any]:
        return {
            "civitai_model_id": self.model_id, "civitai_version_id": self.version_id,
            "civitai_file_id": self.file_id, "civitai_model_name": self.model_name,
            "civitai_version_name": self.version_name, "base_model": self.base_model,
            "match_method": self.method, "candidates": self.candidates,
        }


def workflow_hints(graphs: Iterable[Any]) -> dict[str, list[Hint]]:
    """``name_key -> hints`` from the ``properties.models`` of every node of UI-format graphs."""
    hints: dict[str, list[Hint]] = defaultdict(list)
    for graph in graphs:
        for entry in _model_entries(graph):
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                continue
            digest = entry.get("hash")
            url = entry.get("url")
            found = _CIVITAI_VERSION_URL.search(url) if isinstance(url, str) else None
            version = int(found.group(1) or found.group(2)) if found else None
            hint = Hint(digest.strip().upper() if isinstance(digest, str) and digest.strip() else None, version)
            if hint.hash or hint.version_id:
                hints[name_key(name)].append(hint)
    return hints


def _model_entries(graph: Any) -> Iterator[Mapping[str, Any]]:
    if not isinstance(graph, Mapping):
        return
    nodes: list[Any] = list(graph.get("nodes") or [])
    for subgraph in (graph.get("definitions") or {}).get("subgraphs") or []:
        if isinstance(subgraph, Mapping):
            nodes.extend(subgraph.get("nodes") or [])
    nodes.append(graph.get("extra") or {})  # some front-ends keep the list at the top level
    nodes.append(graph)
    for node in nodes:
        properties = node.get("properties") if isinstance(node, Mapping) else None
        holder = properties if isinstance(properties, Mapping) else node
        models = holder.get("models") if isinstance(holder, Mapping) else None
        if isinstance(models, list):
            yield from (m for m in models if isinstance(m, Mapping))


class CivitAIFiles:
    """CivitAI's files indexed by hash, by version and by name."""

    def __init__(self, files: pd.DataFrame) -> None:
        records = files.to_dict("records")
        self.by_sha256: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_autov2: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_version: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in records:
            row = {k: (None if missing(v) else v) for k, v in row.items()}
            if row["sha256"]:
                self.by_sha256[str(row["sha256"]).upper()].append(row)
            if row["autov2"]:
                self.by_autov2[str(row["autov2"]).upper()].append(row)
            self.by_version[int(row["version_id"])].append(row)
            if row["name"]:
                self.by_name[name_key(str(row["name"]))].append(row)

    def match(self, key: str, hints: Iterable[Hint]) -> Match:
        hints = list(hints)
        for hint in hints:
            if hint.hash and len(hint.hash) == 64 and self.by_sha256.get(hint.hash):
                return _matched(self.by_sha256[hint.hash], "sha256")
            if hint.hash and len(hint.hash) == 10 and self.by_autov2.get(hint.hash):
                return _matched(self.by_autov2[hint.hash], "autov2")
        for hint in hints:
            files = self.by_version.get(hint.version_id) if hint.version_id else None
            if files:
                same_name = [f for f in files if f["name"] and name_key(str(f["name"])) == key]
                primary = [f for f in files if f["is_primary"]]
                return _matched(same_name or primary or files, "download_url")
        named = self.by_name.get(key, [])
        if not named:
            return Match()
        hashes = {f["sha256"] for f in named}
        if len(named) == 1 or (len(hashes) == 1 and None not in hashes):
            return _matched(named, "file_name")
        return Match(method=AMBIGUOUS, candidates=len(named))


def _matched(files: list[dict[str, Any]], method: str) -> Match:
    """The newest version's file among equally good candidates."""
    best = max(files, key=lambda f: (f["version_id"], f["file_id"]))
    return Match(
        model_id=int(best["model_id"]), version_id=int(best["version_id"]), file_id=int(best["file_id"]),
        model_name=best["model_name"], version_name=best["version_name"], base_model=best["base_model"],
        method=method, candidates=len(files),
    )


def missing(value: Any) -> bool:
    """None, or the NaN pandas reads a SQL NULL as."""
    return value is None or (isinstance(value, float) and pd.isna(value))


def read_frame(conn: sa.Connection, query: str) -> pd.DataFrame:
    return pd.read_sql_query(sa.text(query), conn)
