#!/usr/bin/env bash
# Start the Dagster UI, daemon and code server on the embedded default: Dagster's own storage
# and the UMLMM catalog both in SQLite under .dagster_home/ (override with DAGSTER_HOME).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
echo "DAGSTER_HOME=$DAGSTER_HOME; catalog: ${UMLMM_DATABASE_URL:-sqlite file $DAGSTER_HOME/umlmm_catalog.sqlite}"
exec dagster dev -w "$ROOT/workspace.yaml" -h "${UMLMM_UI_HOST:-127.0.0.1}" -p "${UMLMM_UI_PORT:-3000}" "$@"
