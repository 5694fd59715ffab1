"""The catalog database: tables, migrations, upserts, fetch_runs and cursors."""
