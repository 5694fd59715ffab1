#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised: the catalog gets its own database
# beside Dagster's (POSTGRES_DB). Its tables are created by the first run (Alembic migrations).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${UMLMM_CATALOG_DB:-umlmm_catalog}\" OWNER \"$POSTGRES_USER\""
