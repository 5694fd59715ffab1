"""initial catalog: fetch_runs, source_cursors, ollama_models

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fetch_runs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=False),
        sa.Column("partition_key", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("records_fetched", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records_processed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records_created", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records_updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records_unchanged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records_removed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pages_committed", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_details", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_fetch_runs_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fetch_runs")),
        sa.UniqueConstraint("dagster_run_id", "source", name=op.f("uq_fetch_runs_dagster_run_id_source")),
    )
    with op.batch_alter_table("fetch_runs", schema=None) as batch_op:
        batch_op.create_index("ix_fetch_runs_source_started_at", ["source", "started_at"], unique=False)
        batch_op.create_index(
            "uq_fetch_runs_one_running_per_source",
            ["source"],
            unique=True,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        )

    op.create_table(
        "ollama_models",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "raw",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetch_run_id", sa.BigInteger(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("format", sa.String(length=32), nullable=True),
        sa.Column("family", sa.String(length=64), nullable=True),
        sa.Column(
            "families",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("parameter_size", sa.String(length=32), nullable=True),
        sa.Column("quantization_level", sa.String(length=32), nullable=True),
        sa.Column(
            "capabilities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("context_length", sa.Integer(), nullable=True),
        sa.Column("remote_model", sa.String(length=255), nullable=True),
        sa.Column("remote_host", sa.String(length=255), nullable=True),
        sa.Column("parent", sa.Text(), nullable=True),
        sa.Column("blob_digest", sa.String(length=71), nullable=True),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("template", sa.Text(), nullable=True),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("license", sa.Text(), nullable=True),
        sa.Column(
            "model_info",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ollama_models")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_ollama_models_source_external_id")),
    )
    with op.batch_alter_table("ollama_models", schema=None) as batch_op:
        batch_op.create_index("ix_ollama_models_digest", ["digest"], unique=False)
        batch_op.create_index("ix_ollama_models_host_name", ["host", "name"], unique=False)

    op.create_table(
        "source_cursors",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("fetch_run_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "scope", name=op.f("pk_source_cursors")),
    )


def downgrade() -> None:
    op.drop_table("source_cursors")
    with op.batch_alter_table("ollama_models", schema=None) as batch_op:
        batch_op.drop_index("ix_ollama_models_host_name")
        batch_op.drop_index("ix_ollama_models_digest")

    op.drop_table("ollama_models")
    with op.batch_alter_table("fetch_runs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_fetch_runs_one_running_per_source",
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        )
        batch_op.drop_index("ix_fetch_runs_source_started_at")

    op.drop_table("fetch_runs")
