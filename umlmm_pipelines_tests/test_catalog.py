"""The catalog schema: the same Alembic migrations on SQLite and PostgreSQL, applied idempotently."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from umlmm_pipelines.catalog.database import (
    alembic_config,
    create_catalog_engine,
    migrate,
    normalize_url,
    open_catalog,
    redact,
)
from umlmm_pipelines.catalog.schema import load_all_tables


def test_migrations_create_every_table_the_code_declares(catalog_url):
    engine = open_catalog(catalog_url)

    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), load_all_tables())

    assert differences == []
    tables = set(sa.inspect(engine).get_table_names())
    assert {"fetch_runs", "source_cursors", "ollama_models", "alembic_version"} <= tables


def test_migrating_twice_changes_nothing(catalog_url):
    engine = create_catalog_engine(catalog_url)
    migrate(engine)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()

    migrate(engine)

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == version
    assert len(version) == 1


@pytest.mark.postgres
def test_upgrading_a_catalog_with_jsonb_payloads_keeps_them_and_stores_them_as_json(postgres_url):
    engine = create_catalog_engine(postgres_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0005")
        conn.execute(sa.text(
            "INSERT INTO posts (source, external_id, post_id, content_hash, raw, first_seen_at, updated_at) "
            "VALUES ('danbooru', '1', 1, 'h', CAST(:raw AS jsonb), now(), now())"), {"raw": '{"id": 1, "tags": ["a"]}'})

    migrate(engine)

    with engine.connect() as conn:
        raw_types = conn.execute(sa.text(
            "SELECT DISTINCT data_type FROM information_schema.columns WHERE column_name = 'raw'")).scalars().all()
        assert raw_types == ["json"]
        assert conn.execute(sa.text("SELECT raw->>'id', raw->'tags'->>0 FROM posts")).one() == ("1", "a")
    with engine.begin() as conn:  # and back
        command.downgrade(alembic_config(conn), "0005")
        assert conn.execute(sa.text(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'posts' AND column_name = 'raw'"
        )).scalar_one() == "jsonb"


def test_bare_postgresql_urls_use_the_installed_psycopg2_driver():
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_logged_urls_hide_the_password():
    assert redact("postgresql+psycopg2://umlmm:hunter2@db:5432/catalog") == (
        "postgresql+psycopg2://umlmm:***@db:5432/catalog")


def test_default_catalog_is_sqlite_under_dagster_home(tmp_path):
    from umlmm_pipelines.catalog.database import resolve_database_url

    assert resolve_database_url(environ={"DAGSTER_HOME": str(tmp_path)}) == (
        f"sqlite:///{tmp_path.resolve() / 'umlmm_catalog.sqlite'}")
    assert resolve_database_url(environ={"DAGSTER_HOME": str(tmp_path), "UMLMM_DATABASE_URL": "postgresql://h/db"}) == (
        "postgresql+psycopg2://h/db")


def test_without_dagster_home_or_url_the_error_says_what_to_set():
    import pytest

    from umlmm_pipelines.catalog.database import CatalogConfigError, resolve_database_url

    with pytest.raises(CatalogConfigError, match="set UMLMM_DATABASE_URL .* or DAGSTER_HOME"):
        resolve_database_url(environ={})
