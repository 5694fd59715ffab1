"""raw payloads: JSON instead of JSONB on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

The raw payload is an archive of what the source sent; parsing it into JSONB on every insert was
a tenth of a first load's time. SQLite stores JSON as text either way: nothing to do there.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES_WITH_RAW = (
    "ollama_models",
    "posts",
    "civitai_models",
    "civitai_model_versions",
    "civitai_model_files",
    "civitai_model_images",
    "comfyui_workflows",
    "comfyui_node_types",
    "comfyui_model_files",
)


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine, cast: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES_WITH_RAW:
        op.alter_column(table, "raw", existing_type=old, type_=new, existing_nullable=False,
                        postgresql_using=f"raw::{cast}")


def upgrade() -> None:
    _retype(postgresql.JSONB(astext_type=sa.Text()), sa.JSON(), "json")


def downgrade() -> None:
    _retype(sa.JSON(), postgresql.JSONB(astext_type=sa.Text()), "jsonb")
