"""``umlmm-pipelines``: the operator's command line.

    umlmm-pipelines health                  JSON health report; exit 0 healthy, 1 unhealthy
    umlmm-pipelines stats [--format json]   per-source metrics table (the operations/metrics asset)

Both read the Dagster instance of ``DAGSTER_HOME`` and the catalog of ``UMLMM_DATABASE_URL``
(else SQLite under ``DAGSTER_HOME``), with the same settings as the code location
(``UMLMM_CONFIG`` and ``Section__Source__Key`` variables).

Exit codes: 0 healthy / done; 1 unhealthy (``health``) or the data could not be read
(``stats``); 2 bad usage or invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TextIO

import dagster as dg

from umlmm_pipelines.catalog.database import open_catalog, redact, resolve_database_url
from umlmm_pipelines.config import ConfigError, Settings
from umlmm_pipelines.ingestion.source import SourceSpec

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umlmm-pipelines",
        description="Operations for UMLMM Pipelines: health, run statistics and pruning old run history.",
        epilog="Exit codes: 0 healthy/ok, 1 unhealthy (health) or data unreadable (stats), 2 usage or config error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    health = commands.add_parser("health", help="print a JSON health report; exit 1 when anything is unhealthy")
    health.add_argument("--catalog-url", default=None,
                        help="catalog SQLAlchemy URL (default: UMLMM_DATABASE_URL, else SQLite under DAGSTER_HOME)")
    stats = commands.add_parser("stats", help="print per-source run metrics")
    stats.add_argument("--format", choices=("text", "json"), default="text")
    stats.add_argument("--days", type=float, default=None,
                       help="window in days (default: Operations.MetricsWindowDays)")
    stats.add_argument("--catalog-url", default=None, help="catalog SQLAlchemy URL (as for health)")
    prune = commands.add_parser("prune", help="delete finished Dagster runs and their fetch_runs rows before a cut-off")
    prune.add_argument("--older-than-days", type=float, required=True,
                       help="delete what ended more than this many days ago")
    prune.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    prune.add_argument("--catalog-url", default=None, help="catalog SQLAlchemy URL (as for health)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse prints its own message
        return EXIT_OK if not exc.code else EXIT_USAGE
    try:
        settings, specs = _settings()
    except ConfigError as exc:
        print(str(exc), file=err)
        return EXIT_USAGE
    if args.command == "health":
        return _health(args, settings, specs, out)
    if args.command == "prune":
        return _prune(args, out, err)
    return _stats(args, settings, specs, out, err)


def _prune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from umlmm_pipelines.operations.retention import prune_history

    if args.older_than_days <= 0:
        print("--older-than-days must be greater than 0", file=err)
        return EXIT_USAGE
    instance, error = _instance()
    if instance is None:
        print(f"cannot read the Dagster instance: {error}", file=err)
        return EXIT_UNHEALTHY
    engine = open_catalog(resolve_database_url(args.catalog_url))
    try:
        report = prune_history(instance, engine, timedelta(days=args.older_than_days), dry_run=args.dry_run)
    finally:
        engine.dispose()
        instance.dispose()
    print(f"{report.summary()} (catalog {redact(engine.url)})", file=out)
    return EXIT_OK


def _settings() -> tuple[Settings, tuple[SourceSpec, ...]]:
    from umlmm_pipelines.definitions import load_source_settings
    from umlmm_pipelines.sources import all_sources

    return load_source_settings(os.environ), all_sources()


def _health(args: argparse.Namespace, settings: Settings, specs: Sequence[SourceSpec], out: TextIO) -> int:
    from umlmm_pipelines.operations.health import health_report

    instance, error = _instance()
    try:
        report = health_report(instance, settings, specs, catalog_url=args.catalog_url, instance_error=error)
    finally:
        if instance is not None:
            instance.dispose()
    print(json.dumps(report, indent=2), file=out)
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


def _stats(
    args: argparse.Namespace, settings: Settings, specs: Sequence[SourceSpec], out: TextIO, err: TextIO
) -> int:
    from umlmm_pipelines.operations.health import scrub_password
    from umlmm_pipelines.operations.metrics import as_records, source_metrics

    window = args.days if args.days is not None else settings.operations.metrics_window_days
    if window <= 0:
        print("--days must be greater than 0", file=err)
        return EXIT_USAGE
    instance, error = _instance()
    if instance is None:
        print(f"cannot read the Dagster instance: {error}", file=err)
        return EXIT_UNHEALTHY
    url = None
    try:
        url = resolve_database_url(args.catalog_url)
        engine = open_catalog(url)
        try:
            frame = source_metrics(engine, instance, specs, window)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
        where = f" at {redact(url)}" if url else ""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"cannot read the catalog{where}: {scrub_password(message, url)}", file=err)
        return EXIT_UNHEALTHY
    finally:
        instance.dispose()
    if args.format == "json":
        print(json.dumps({"window_days": window, "sources": as_records(frame)}, indent=2), file=out)
    else:
        print(f"UMLMM run metrics, last {window:g} day(s)", file=out)
        print(frame.to_string(index=False, na_rep="-"), file=out)
    return EXIT_OK


def _instance() -> tuple[dg.DagsterInstance | None, str | None]:
    try:
        return dg.DagsterInstance.get(), None
    except Exception as exc:  # noqa: BLE001 - DAGSTER_HOME unset or storage unreachable: say so
        text = str(exc).strip()
        return None, f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
