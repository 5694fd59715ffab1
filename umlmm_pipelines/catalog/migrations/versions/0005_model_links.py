"""model links: workflow -> model file -> CivitAI file, and Ollama models sharing a digest

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _civitai_columns() -> list[sa.Column]:
    return [
        sa.Column("civitai_model_id", sa.BigInteger(), nullable=True),
        sa.Column("civitai_version_id", sa.BigInteger(), nullable=True),
        sa.Column("civitai_file_id", sa.BigInteger(), nullable=True),
        sa.Column("civitai_model_name", sa.Text(), nullable=True),
        sa.Column("civitai_version_name", sa.Text(), nullable=True),
        sa.Column("base_model", sa.Text(), nullable=True),
        sa.Column("match_method", sa.String(length=24), nullable=True),
        sa.Column("candidates", sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "model_file_links",
        sa.Column("model_file", sa.String(length=512), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("base_name", sa.Text(), nullable=False),
        *_civitai_columns(),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model_file", name="pk_model_file_links"),
    )
    op.create_index("ix_model_file_links_civitai_version_id", "model_file_links", ["civitai_version_id"])
    op.create_table(
        "workflow_model_links",
        sa.Column("workflow", sa.String(length=512), nullable=False),
        sa.Column("relative_path", sa.Text(), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("class_type", sa.Text(), nullable=False),
        sa.Column("input_name", sa.Text(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=True),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("base_name", sa.Text(), nullable=False),
        sa.Column("model_file", sa.String(length=512), nullable=True),
        *_civitai_columns(),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow", "node_id", "input_name", name="pk_workflow_model_links"),
    )
    op.create_index("ix_workflow_model_links_base_name", "workflow_model_links", ["base_name"])
    op.create_index("ix_workflow_model_links_civitai_version_id", "workflow_model_links", ["civitai_version_id"])
    op.create_table(
        "ollama_digest_links",
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("blob_digest", sa.String(length=71), nullable=True),
        sa.Column("same_digest", sa.Integer(), nullable=False),
        sa.Column("same_weights", sa.Integer(), nullable=True),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_ollama_digest_links"),
    )
    op.create_index("ix_ollama_digest_links_digest", "ollama_digest_links", ["digest"])


def downgrade() -> None:
    op.drop_table("ollama_digest_links")
    op.drop_table("workflow_model_links")
    op.drop_table("model_file_links")
