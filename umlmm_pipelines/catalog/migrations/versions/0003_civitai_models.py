"""civitai: civitai_models and their versions, files and images

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    """JSON, stored as JSONB on PostgreSQL (``catalog.tables.JSONType``)."""
    jsonb = postgresql.JSONB(none_as_null=True, astext_type=sa.Text())
    return sa.JSON(none_as_null=True).with_variant(jsonb, "postgresql")


def upgrade() -> None:
    op.create_table(
        "civitai_model_files",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("file_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("size_kb", sa.Float(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=True),
        sa.Column("format", sa.String(length=64), nullable=True),
        sa.Column("fp", sa.String(length=64), nullable=True),
        sa.Column("size", sa.String(length=64), nullable=True),
        sa.Column("file_metadata", _json(), nullable=True),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("pickle_scan_result", sa.String(length=64), nullable=True),
        sa.Column("pickle_scan_message", sa.Text(), nullable=True),
        sa.Column("virus_scan_result", sa.String(length=64), nullable=True),
        sa.Column("virus_scan_message", sa.Text(), nullable=True),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sha256", sa.String(length=128), nullable=True),
        sa.Column("autov1", sa.String(length=128), nullable=True),
        sa.Column("autov2", sa.String(length=128), nullable=True),
        sa.Column("autov3", sa.String(length=128), nullable=True),
        sa.Column("blake3", sa.String(length=128), nullable=True),
        sa.Column("crc32", sa.String(length=128), nullable=True),
        sa.Column("download_url", sa.Text(), nullable=True),
        sa.Column("raw", _json(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "file_id", name=op.f("pk_civitai_model_files")),
    )
    with op.batch_alter_table("civitai_model_files", schema=None) as batch_op:
        batch_op.create_index("ix_civitai_model_files_name", ["name"], unique=False)
        batch_op.create_index("ix_civitai_model_files_sha256", ["sha256"], unique=False)
        batch_op.create_index("ix_civitai_model_files_version_id", ["version_id"], unique=False)

    op.create_table(
        "civitai_model_images",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("nsfw_level", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("hash", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=True),
        sa.Column("has_meta", sa.Boolean(), nullable=True),
        sa.Column("has_positive_prompt", sa.Boolean(), nullable=True),
        sa.Column("on_site", sa.Boolean(), nullable=True),
        sa.Column("minor", sa.Boolean(), nullable=True),
        sa.Column("poi", sa.Boolean(), nullable=True),
        sa.Column("remix_of_id", sa.BigInteger(), nullable=True),
        sa.Column("availability", sa.String(length=64), nullable=True),
        sa.Column("meta", _json(), nullable=True),
        sa.Column("raw", _json(), nullable=False),
    )
    with op.batch_alter_table("civitai_model_images", schema=None) as batch_op:
        batch_op.create_index("ix_civitai_model_images_model_id", ["model_id"], unique=False)
        batch_op.create_index("ix_civitai_model_images_version_id", ["version_id"], unique=False)

    op.create_table(
        "civitai_model_versions",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("base_model", sa.Text(), nullable=True),
        sa.Column("base_model_type", sa.String(length=64), nullable=True),
        sa.Column("trained_words", _json(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("availability", sa.String(length=64), nullable=True),
        sa.Column("nsfw_level", sa.Integer(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("download_url", sa.Text(), nullable=True),
        sa.Column("early_access_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("early_access_config", _json(), nullable=True),
        sa.Column("vae_id", sa.BigInteger(), nullable=True),
        sa.Column("supports_generation", sa.Boolean(), nullable=True),
        sa.Column("air", sa.Text(), nullable=True),
        sa.Column("download_count", sa.BigInteger(), nullable=True),
        sa.Column("thumbs_up_count", sa.BigInteger(), nullable=True),
        sa.Column("thumbs_down_count", sa.BigInteger(), nullable=True),
        sa.Column("stats", _json(), nullable=True),
        sa.Column("raw", _json(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "version_id", name=op.f("pk_civitai_model_versions")),
    )
    with op.batch_alter_table("civitai_model_versions", schema=None) as batch_op:
        batch_op.create_index("ix_civitai_model_versions_version_id", ["version_id"], unique=False)

    op.create_table(
        "civitai_models",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("raw", _json(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetch_run_id", sa.BigInteger(), nullable=True),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("nsfw", sa.Boolean(), nullable=True),
        sa.Column("nsfw_level", sa.Integer(), nullable=True),
        sa.Column("poi", sa.Boolean(), nullable=True),
        sa.Column("minor", sa.Boolean(), nullable=True),
        sa.Column("sfw_only", sa.Boolean(), nullable=True),
        sa.Column("availability", sa.String(length=64), nullable=True),
        sa.Column("mode", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("creator_username", sa.Text(), nullable=True),
        sa.Column("creator_image", sa.Text(), nullable=True),
        sa.Column("tags", _json(), nullable=True),
        sa.Column("base_models", _json(), nullable=True),
        sa.Column("allow_no_credit", sa.Boolean(), nullable=True),
        sa.Column("allow_commercial_use", _json(), nullable=True),
        sa.Column("allow_derivatives", sa.Boolean(), nullable=True),
        sa.Column("allow_different_license", sa.Boolean(), nullable=True),
        sa.Column("supports_generation", sa.Boolean(), nullable=True),
        sa.Column("cosmetic", _json(), nullable=True),
        sa.Column("download_count", sa.BigInteger(), nullable=True),
        sa.Column("thumbs_up_count", sa.BigInteger(), nullable=True),
        sa.Column("thumbs_down_count", sa.BigInteger(), nullable=True),
        sa.Column("comment_count", sa.BigInteger(), nullable=True),
        sa.Column("tipped_amount_count", sa.BigInteger(), nullable=True),
        sa.Column("favorite_count", sa.BigInteger(), nullable=True),
        sa.Column("rating_count", sa.BigInteger(), nullable=True),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("stats", _json(), nullable=True),
        sa.Column("version_count", sa.Integer(), nullable=False),
        sa.Column("latest_version_id", sa.BigInteger(), nullable=True),
        sa.Column("latest_published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_civitai_models")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_civitai_models_source_external_id")),
    )
    with op.batch_alter_table("civitai_models", schema=None) as batch_op:
        batch_op.create_index("ix_civitai_models_type", ["type"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("civitai_models", schema=None) as batch_op:
        batch_op.drop_index("ix_civitai_models_type")

    op.drop_table("civitai_models")
    with op.batch_alter_table("civitai_model_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_civitai_model_versions_version_id")

    op.drop_table("civitai_model_versions")
    with op.batch_alter_table("civitai_model_images", schema=None) as batch_op:
        batch_op.drop_index("ix_civitai_model_images_version_id")
        batch_op.drop_index("ix_civitai_model_images_model_id")

    op.drop_table("civitai_model_images")
    with op.batch_alter_table("civitai_model_files", schema=None) as batch_op:
        batch_op.drop_index("ix_civitai_model_files_version_id")
        batch_op.drop_index("ix_civitai_model_files_sha256")
        batch_op.drop_index("ix_civitai_model_files_name")

    op.drop_table("civitai_model_files")
