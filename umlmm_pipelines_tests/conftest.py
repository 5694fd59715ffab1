"""Shared fixtures: catalogs on SQLite and PostgreSQL, a Dagster test instance, a fake Ollama."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

from umlmm_pipelines_tests.fakes.ollama_server import FakeOllama, running_fake_ollama

POSTGRES_URL_ENV = "UMLMM_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


def _postgres_problem() -> str | None:
    """None when the server answers, else why not."""
    try:
        engine = sa.create_engine(postgres_admin_url(), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL; mandatory when CI=true, else skipped with the reason."""
    problem = _postgres_problem()
    if problem:
        where = sa.make_url(postgres_admin_url()).render_as_string(hide_password=True)
        message = f"PostgreSQL at {where} is not reachable ({problem}); set {POSTGRES_URL_ENV} to run these tests"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}. PostgreSQL tests are mandatory when CI=true.")
        pytest.skip(message)
    return postgres_admin_url()


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server, dropped (connections and all) on exit."""
    name = f"umlmm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database(postgres_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request) -> str:
    """Each catalog test runs on both backends."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with running_fake_ollama() as fake:
        yield fake
