"""The tables the ``catalog/model_links`` asset rewrites on every materialization.

They are derived data: each materialization replaces their contents in one transaction, so a
reader sees either the previous links or the new ones, never half of each.
"""

from __future__ import annotations

import sqlalchemy as sa

from umlmm_pipelines.catalog.tables import Timestamp, metadata

#: How a local file was tied to a CivitAI file, strongest first.
MATCH_METHODS = ("sha256", "autov2", "download_url", "file_name")
AMBIGUOUS = "file_name_ambiguous"

_CIVITAI_COLUMNS = (
    sa.Column("civitai_model_id", sa.BigInteger, nullable=True),
    sa.Column("civitai_version_id", sa.BigInteger, nullable=True),
    sa.Column("civitai_file_id", sa.BigInteger, nullable=True),
    sa.Column("civitai_model_name", sa.Text, nullable=True),
    sa.Column("civitai_version_name", sa.Text, nullable=True),
    sa.Column("base_model", sa.Text, nullable=True),
    # sha256 / autov2 (a hash a workflow recorded for the file), download_url (a CivitAI download
    # link a workflow recorded), file_name (the only CivitAI file of that name),
    # file_name_ambiguous (several CivitAI files share the name: none chosen), or NULL (no match).
    sa.Column("match_method", sa.String(24), nullable=True),
    sa.Column("candidates", sa.Integer, nullable=False),
)

#: One row per model file the ComfyUI server lists, and which CivitAI file it is.
model_file_links = sa.Table(
    "model_file_links",
    metadata,
    sa.Column("model_file", sa.String(512), primary_key=True),  # comfyui_model_files.external_id
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("base_name", sa.Text, nullable=False),
    *(c.copy() for c in _CIVITAI_COLUMNS),
    sa.Column("linked_at", Timestamp, nullable=False),
    sa.Index("ix_model_file_links_civitai_version_id", "civitai_version_id"),
)

#: One row per model file a workflow names: whether it is installed and which CivitAI file it is.
workflow_model_links = sa.Table(
    "workflow_model_links",
    metadata,
    sa.Column("workflow", sa.String(512), nullable=False),  # comfyui_workflows.external_id
    sa.Column("relative_path", sa.Text, nullable=False),
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("class_type", sa.Text, nullable=False),
    sa.Column("input_name", sa.Text, nullable=False),
    sa.Column("folder", sa.Text, nullable=True),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("base_name", sa.Text, nullable=False),
    sa.Column("model_file", sa.String(512), nullable=True),  # the installed file, when the server lists it
    *(c.copy() for c in _CIVITAI_COLUMNS),
    sa.Column("linked_at", Timestamp, nullable=False),
    sa.PrimaryKeyConstraint("workflow", "node_id", "input_name"),
    sa.Index("ix_workflow_model_links_base_name", "base_name"),
    sa.Index("ix_workflow_model_links_civitai_version_id", "civitai_version_id"),
)

#: One row per Ollama model, with how many others share its manifest digest or its weights blob.
ollama_digest_links = sa.Table(
    "ollama_digest_links",
    metadata,
    sa.Column("model", sa.String(512), primary_key=True),  # ollama_models.external_id (host|name)
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("blob_digest", sa.String(71), nullable=True),
    sa.Column("same_digest", sa.Integer, nullable=False),  # models with this digest, itself included
    sa.Column("same_weights", sa.Integer, nullable=True),  # models whose FROM is this blob, itself included
    sa.Column("linked_at", Timestamp, nullable=False),
    sa.Index("ix_ollama_digest_links_digest", "digest"),
)

LINK_TABLES = (model_file_links, workflow_model_links, ollama_digest_links)
