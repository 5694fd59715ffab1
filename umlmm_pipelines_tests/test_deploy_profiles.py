"""The deployment files say the same thing as the project's own configuration.

Production runs on copies (deploy/dagster.postgres.yaml, the Helm values, the images), so these
tests fail as soon as one of them drifts from dagster.yaml, workspace.yaml or pyproject.toml, or
lets a secret in.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster_postgres import PostgresRunStorage

from umlmm_pipelines_tests.dagster_stack import ROOT

DEPLOY = ROOT / "deploy"
PG_ONLY_KEYS = {"storage", "retention"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def pinned_dagster_packages() -> dict[str, str]:
    """``{"dagster": "1.13.27", ...}`` from pyproject.toml's dependencies."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.split("==", 1) for d in dependencies if "==" in d)
    return {name: version for name, version in pins.items() if name.startswith(("dagster", "psycopg2"))}


def test_production_profile_is_the_default_instance_plus_postgres_storage_and_retention():
    default, production = load(ROOT / "dagster.yaml"), load(DEPLOY / "dagster.postgres.yaml")

    assert {k: v for k, v in production.items() if k not in PG_ONLY_KEYS} == default
    assert not PG_ONLY_KEYS & set(default)
    # Every connection setting comes from the environment; only the driver is written down.
    db = production["storage"]["postgres"]["postgres_db"]
    assert db.pop("scheme") == "postgresql+psycopg2"
    assert db == {key: {"env": f"DAGSTER_PG_{name}"} for key, name in
                  [("username", "USER"), ("password", "PASSWORD"), ("hostname", "HOST"), ("db_name", "DB"),
                   ("port", "PORT")]}


@pytest.mark.postgres
def test_production_profile_loads_postgres_storage_queue_limits_monitoring_and_retention(
    tmp_path, postgres_url, monkeypatch
):
    url = sa.make_url(postgres_url)
    for name, value in {"USER": url.username, "PASSWORD": url.password or "", "HOST": url.host,
                        "DB": url.database, "PORT": str(url.port or 5432)}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.postgres.yaml").read_text())

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert limits == [{"key": "umlmm/source", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds == 30
        schedule_retention = instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
        assert schedule_retention[TickStatus.SKIPPED] == 30 and schedule_retention[TickStatus.SUCCESS] == 365
        assert instance.get_tick_retention_settings(InstigatorType.SENSOR)[TickStatus.SKIPPED] == 3
        # The tables exist: the first process to load the profile creates them.
        instance.add_run(dg.DagsterRun(job_name="probe"))
        assert instance.get_runs_count() == 1


def test_grpc_workspace_serves_the_same_location_at_the_address_in_the_environment(monkeypatch):
    monkeypatch.setenv("UMLMM_CODE_SERVER_HOST", "code")
    monkeypatch.setenv("UMLMM_CODE_SERVER_PORT", "4000")

    [origin] = location_origins_from_yaml_paths([str(DEPLOY / "workspace.grpc.yaml")])
    [local] = load(ROOT / "workspace.yaml")["load_from"]

    assert isinstance(origin, GrpcServerCodeLocationOrigin)
    assert (origin.host, origin.port) == ("code", 4000)
    assert origin.location_name == local["python_module"]["location_name"]


def test_images_install_the_pinned_release_set_and_run_as_a_non_root_user():
    pins = pinned_dagster_packages()
    lock = dict(line.split("==", 1) for line in (DEPLOY / "requirements.lock").read_text().splitlines()
                if line and not line.startswith("#"))
    code_image, dagster_image = (ROOT / "Dockerfile").read_text(), (DEPLOY / "Dockerfile.dagster").read_text()
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]

    assert set(pins) >= {"dagster", "dagster-webserver", "dagster-graphql", "dagster-postgres"}
    assert {name: lock[name] for name in pins} == pins
    for package in ("dagster", "dagster-webserver", "dagster-graphql", "dagster-postgres", "psycopg2-binary"):
        assert f"{package}=={pins[package]}" in dagster_image
    assert f"dagster-k8s=={pins['dagster-postgres']}" in code_image  # the library release of the same set
    assert "pip install -r requirements.lock" in code_image and "FROM python:3.11-slim" in code_image
    assert f'"code-server", "start", "-m", "{module}", "-h", "0.0.0.0", "-p", "4000"' in code_image
    for image in (code_image, dagster_image):
        assert re.search(r"^USER dagster$", image, re.MULTILINE)
        assert not re.search(r"^\s*(ENV|ARG)\b.*(PASSWORD|TOKEN|SECRET|API_?KEY)", image, re.MULTILINE | re.IGNORECASE)


def test_compose_passes_secrets_from_the_environment_and_shares_one_instance_profile():
    compose = load(DEPLOY / "compose.yaml")
    services = compose["services"]

    assert set(services) == {"postgres", "code", "webserver", "daemon"}
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD", key):
                assert str(value).startswith("${POSTGRES_PASSWORD:?"), (name, key)
    for name in ("code", "webserver", "daemon"):
        env = services[name]["environment"]
        assert env["DAGSTER_PG_HOST"] == "postgres" and env["UMLMM_CODE_SERVER_HOST"] == "code", name
    assert "PASSWORD" not in services["code"]["environment"]["UMLMM_DATABASE_URL"].upper()
    assert services["code"]["build"]["dockerfile"] == "Dockerfile"
    assert services["daemon"]["image"] == services["webserver"]["image"]
    assert services["webserver"]["ports"] == ["127.0.0.1:${UMLMM_UI_PORT:-3000}:3000"]
    # The local secrets file is never committed.
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT)
    assert ignored.returncode == 0


def test_helm_values_mirror_the_instance_profile():
    values, default = load(DEPLOY / "helm" / "values.yaml"), load(ROOT / "dagster.yaml")
    production = load(DEPLOY / "dagster.postgres.yaml")
    runs, monitoring = default["concurrency"]["runs"], default["run_monitoring"]

    assert values["concurrency"]["runs"] == {"maxConcurrentRuns": runs["max_concurrent_runs"],
                                             "tagConcurrencyLimits": runs["tag_concurrency_limits"]}
    pools = default["concurrency"]["pools"]
    assert values["concurrency"]["pools"] == {"defaultLimit": pools["default_limit"],
                                              "granularity": pools["granularity"]}
    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"]["config"]["queuedRunCoordinator"]["dequeueIntervalSeconds"] == (
        default["run_queue"]["dequeue_interval_seconds"])
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"], "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "cancelTimeoutSeconds": monitoring["cancel_timeout_seconds"],
        "pollIntervalSeconds": monitoring["poll_interval_seconds"],
        "freeSlotsAfterRunEndSeconds": monitoring["free_slots_after_run_end_seconds"]}
    assert {kind: values["retention"][kind]["purgeAfterDays"] for kind in ("schedule", "sensor")} == {
        kind: production["retention"][kind]["purge_after_days"] for kind in ("schedule", "sensor")}
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "umlmm_pipelines.definitions"]
