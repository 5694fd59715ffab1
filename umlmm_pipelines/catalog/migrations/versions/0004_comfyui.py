"""comfyui: workflows, the model files they reference, node types, server model files

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _entity_columns() -> list[sa.Column]:
    """The columns ``catalog.tables.entity_table`` gives every entity table."""
    return [
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("raw", _json(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetch_run_id", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "comfyui_workflows",
        *_entity_columns(),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("relative_path", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=True),
        sa.Column("node_count", sa.Integer(), nullable=False),
        sa.Column("node_types", _json(), nullable=False),
        sa.Column("workflow", _json(), nullable=True),
        sa.Column("prompt", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comfyui_workflows")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_comfyui_workflows_source_external_id")),
    )
    with op.batch_alter_table("comfyui_workflows", schema=None) as batch_op:
        batch_op.create_index("ix_comfyui_workflows_root", ["root"], unique=False)

    op.create_table(
        "comfyui_workflow_models",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=512), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("class_type", sa.Text(), nullable=False),
        sa.Column("input_name", sa.Text(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=True),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("base_name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source", "workflow", "node_id", "input_name", name=op.f("pk_comfyui_workflow_models")),
    )
    with op.batch_alter_table("comfyui_workflow_models", schema=None) as batch_op:
        batch_op.create_index("ix_comfyui_workflow_models_base_name", ["base_name"], unique=False)

    op.create_table(
        "comfyui_node_types",
        *_entity_columns(),
        sa.Column("class_name", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("python_module", sa.Text(), nullable=True),
        sa.Column("node_pack", sa.Text(), nullable=True),
        sa.Column("output_node", sa.Boolean(), nullable=False),
        sa.Column("inputs", _json(), nullable=True),
        sa.Column("input_order", _json(), nullable=True),
        sa.Column("outputs", _json(), nullable=False),
        sa.Column("model_inputs", _json(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("deprecated", sa.Boolean(), nullable=False),
        sa.Column("experimental", sa.Boolean(), nullable=False),
        sa.Column("api_node", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comfyui_node_types")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_comfyui_node_types_source_external_id")),
    )

    op.create_table(
        "comfyui_model_files",
        *_entity_columns(),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("subdirectory", sa.Text(), nullable=True),
        sa.Column("base_name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comfyui_model_files")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_comfyui_model_files_source_external_id")),
    )
    with op.batch_alter_table("comfyui_model_files", schema=None) as batch_op:
        batch_op.create_index("ix_comfyui_model_files_base_name", ["base_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("comfyui_model_files", schema=None) as batch_op:
        batch_op.drop_index("ix_comfyui_model_files_base_name")
    op.drop_table("comfyui_model_files")
    op.drop_table("comfyui_node_types")
    with op.batch_alter_table("comfyui_workflow_models", schema=None) as batch_op:
        batch_op.drop_index("ix_comfyui_workflow_models_base_name")
    op.drop_table("comfyui_workflow_models")
    with op.batch_alter_table("comfyui_workflows", schema=None) as batch_op:
        batch_op.drop_index("ix_comfyui_workflows_root")
    op.drop_table("comfyui_workflows")
