"""The ``catalog/model_links`` asset: rebuilds the link tables whenever a model source has new data."""

# No "from __future__ import annotations" here: Dagster inspects the real type of `context`.

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa

from umlmm_pipelines.catalog.fetch_runs import utcnow
from umlmm_pipelines.catalog.upsert import insert_rows
from umlmm_pipelines.ingestion.logfmt import kv
from umlmm_pipelines.ingestion.recorder import FetchRunRecorder
from umlmm_pipelines.links.matching import CivitAIFiles, Match, missing, name_key, read_frame, workflow_hints
from umlmm_pipelines.links.tables import (
    AMBIGUOUS,
    LINK_TABLES,
    MATCH_METHODS,
    model_file_links,
    ollama_digest_links,
    workflow_model_links,
)

MODEL_LINKS_KEY = dg.AssetKey(["catalog", "model_links"])
#: Sources whose catalog the links read; the asset runs after any of them has new data.
LINKED_SOURCES = (dg.AssetKey(["civitai", "models"]), dg.AssetKey(["comfyui", "workflows"]),
                  dg.AssetKey(["ollama", "models"]))

_CIVITAI_FILES = """
SELECT f.file_id, f.version_id, f.model_id, f.name, f.sha256, f.autov2, f.is_primary,
       m.name AS model_name, v.name AS version_name, v.base_model
FROM civitai_model_files f
JOIN civitai_models m ON m.source = f.source AND m.model_id = f.model_id
LEFT JOIN civitai_model_versions v ON v.source = f.source AND v.model_id = f.model_id AND v.version_id = f.version_id
"""
_LOCAL_FILES = """
SELECT external_id, folder, file_name, base_name FROM comfyui_model_files WHERE removed_at IS NULL
ORDER BY external_id
"""
_WORKFLOW_REFERENCES = """
SELECT w.external_id AS workflow, w.relative_path, m.node_id, m.class_type, m.input_name, m.folder,
       m.file_name, m.base_name
FROM comfyui_workflows w
JOIN comfyui_workflow_models m ON m.source = w.source AND m.workflow = w.external_id
WHERE w.removed_at IS NULL
ORDER BY w.external_id, m.node_id, m.input_name
"""
_OLLAMA_MODELS = """
SELECT external_id, host, name, digest, blob_digest FROM ollama_models WHERE removed_at IS NULL
ORDER BY external_id
"""


@dataclass
class LinkSummary:
    """What a rebuild found: the figures shown as materialization metadata."""

    model_files: Counter[str] = field(default_factory=Counter)
    workflow_references: int = 0
    workflow_references_installed: int = 0
    workflow_references_matched: int = 0
    ollama_models: int = 0
    ollama_shared_digests: int = 0

    def metadata(self) -> dict[str, Any]:
        files = self.model_files
        matched = sum(files[m] for m in MATCH_METHODS)
        table = "\n".join(
            ["| local model files | count |", "|---|---|"]
            + [f"| matched by {m} | {files[m]} |" for m in MATCH_METHODS]
            + [f"| ambiguous name | {files[AMBIGUOUS]} |", f"| unmatched | {files['unmatched']} |"]
        )
        return {
            "model_files": sum(files.values()),
            "model_files_matched": matched,
            "model_files_unmatched": files["unmatched"],
            "model_files_ambiguous": files[AMBIGUOUS],
            **{f"model_files_matched_by_{m}": files[m] for m in MATCH_METHODS},
            "workflow_references": self.workflow_references,
            "workflow_references_installed": self.workflow_references_installed,
            "workflow_references_matched": self.workflow_references_matched,
            "ollama_models": self.ollama_models,
            "ollama_shared_digests": self.ollama_shared_digests,
            "matches": dg.MetadataValue.md(table),
        }


def refresh_links(engine: sa.Engine) -> LinkSummary:
    """Recompute every link table from the catalog and replace their contents in one transaction."""
    summary = LinkSummary()
    now = utcnow()
    with engine.begin() as conn:
        civitai = CivitAIFiles(read_frame(conn, _CIVITAI_FILES))
        graphs = conn.execute(sa.text(
            "SELECT workflow FROM comfyui_workflows WHERE removed_at IS NULL AND workflow IS NOT NULL"
        ).columns(workflow=sa.JSON())).scalars()
        hints = workflow_hints(graphs)
        matches: dict[str, Match] = {}

        def match(file_name: str) -> Match:
            key = name_key(file_name)
            if key not in matches:
                matches[key] = civitai.match(key, hints.get(key, ()))
            return matches[key]

        local = read_frame(conn, _LOCAL_FILES).to_dict("records")
        file_rows = []
        for row in local:
            found = match(row["file_name"])
            summary.model_files[found.method or "unmatched"] += 1
            file_rows.append({"model_file": row["external_id"], "folder": row["folder"], "file_name": row["file_name"],
                              "base_name": row["base_name"], **found.columns(), "linked_at": now})

        by_path = {(r["folder"], r["file_name"]): r["external_id"] for r in local}
        by_name: dict[str, list[str]] = {}
        for r in local:
            by_name.setdefault(name_key(r["file_name"]), []).append(r["external_id"])
        reference_rows = []
        for ref in read_frame(conn, _WORKFLOW_REFERENCES).to_dict("records"):
            folder = None if missing(ref["folder"]) else ref["folder"]
            installed = by_path.get((folder, ref["file_name"]))
            if installed is None and len(by_name.get(name_key(ref["file_name"]), [])) == 1:
                installed = by_name[name_key(ref["file_name"])][0]
            found = match(ref["file_name"])
            summary.workflow_references += 1
            summary.workflow_references_installed += installed is not None
            summary.workflow_references_matched += found.method in MATCH_METHODS
            reference_rows.append({**ref, "folder": folder, "model_file": installed, **found.columns(),
                                   "linked_at": now})

        ollama = read_frame(conn, _OLLAMA_MODELS)
        same_digest = ollama.groupby("digest")["external_id"].transform("count")
        same_weights = ollama.groupby("blob_digest")["external_id"].transform("count")
        summary.ollama_models = len(ollama)
        summary.ollama_shared_digests = int((ollama["digest"].value_counts() > 1).sum())
        ollama_rows = [
            {"model": r.external_id, "host": r.host, "name": r.name, "digest": r.digest,
             "blob_digest": r.blob_digest if isinstance(r.blob_digest, str) else None,
             "same_digest": int(same_digest[i]),
             "same_weights": int(same_weights[i]) if isinstance(r.blob_digest, str) else None, "linked_at": now}
            for i, r in zip(ollama.index, ollama.itertuples(index=False), strict=True)
        ]

        for table in LINK_TABLES:
            conn.execute(sa.delete(table))
        insert_rows(conn, model_file_links, file_rows)
        insert_rows(conn, workflow_model_links, reference_rows)
        insert_rows(conn, ollama_digest_links, ollama_rows)
    return summary


def build_model_links_asset(resource_key: str, deps: Sequence[dg.AssetKey] = LINKED_SOURCES) -> dg.AssetsDefinition:
    @dg.asset(
        key=MODEL_LINKS_KEY,
        deps=list(deps),
        group_name="catalog",
        kinds={"sql"},
        description=(
            "Links across the sources, as SQL tables: workflow_model_links (which workflows use which "
            "model files), model_file_links (which CivitAI model version each local file is, with the "
            "match method), ollama_digest_links (which Ollama models share a digest or weights). "
            "Rebuilt after any of CivitAI, ComfyUI or Ollama has new data."
        ),
        automation_condition=(
            dg.AutomationCondition.any_deps_updated().since_last_handled()
            & ~dg.AutomationCondition.any_deps_in_progress()
            & ~dg.AutomationCondition.in_progress()
        ).with_label("after new CivitAI, ComfyUI or Ollama data"),
        required_resource_keys={resource_key},
    )
    def _model_links(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        recorder: FetchRunRecorder = getattr(context.resources, resource_key)
        summary = refresh_links(recorder.engine)
        metadata = summary.metadata()
        context.log.info(kv("links_refreshed", **{k: v for k, v in metadata.items() if isinstance(v, int)}))
        return dg.MaterializeResult(metadata=metadata)

    return _model_links


def build_links_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the link asset's condition; running by default so links follow the sources."""
    return dg.AutomationConditionSensorDefinition(
        "model_links_automation",
        target=dg.AssetSelection.assets(MODEL_LINKS_KEY),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Requests catalog/model_links after CivitAI, ComfyUI or Ollama materialize new data.",
    )
