"""Alembic environment: runs on the connection handed over by ``catalog.database.migrate``."""

from alembic import context

from umlmm_pipelines.catalog.schema import load_all_tables

target_metadata = load_all_tables()
config = context.config
connection = config.attributes.get("connection")

if connection is None:
    raise RuntimeError("run migrations through umlmm_pipelines.catalog.database.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
