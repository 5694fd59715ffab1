"""Real ``dagster-webserver`` and ``dagster-daemon`` processes on a temporary DAGSTER_HOME.

By default they load the project's ``workspace.yaml`` (the code location in a process the
webserver manages) and ``dagster.yaml``. For the production topology, pass the instance file of
a deployment profile and a gRPC workspace, and the stack starts a separate code server first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster_graphql import DagsterGraphQLClient

ROOT = Path(__file__).resolve().parent.parent
LOCATION = "umlmm_pipelines"
REPO = "__repository__"
DEFINITIONS_MODULE = "umlmm_pipelines.definitions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on PartitionSetNotFoundError { message } } }"""


class DagsterStack:
    """Webserver and daemon (and optionally a code server) as separate processes, as a user runs them in production.

    ``code_server=True`` starts ``dagster code-server start`` on a free port and passes its address
    as ``UMLMM_CODE_SERVER_HOST``/``UMLMM_CODE_SERVER_PORT``, which ``deploy/workspace.grpc.yaml`` reads.
    """

    def __init__(self, home: Path, env: Mapping[str, str], instance_yaml: Path = ROOT / "dagster.yaml",
                 workspace: Path = ROOT / "workspace.yaml", code_server: bool = False) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = yaml.safe_load(instance_yaml.read_text())
        # Faster queue and monitoring than production, so that tests wait seconds, not minutes.
        config["run_queue"]["dequeue_interval_seconds"] = 1
        config["run_monitoring"]["poll_interval_seconds"] = 5
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        self.workspace = workspace
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        self.code_server_port = free_port() if code_server else None
        if self.code_server_port is not None:
            self.env.update(UMLMM_CODE_SERVER_HOST="127.0.0.1", UMLMM_CODE_SERVER_PORT=str(self.code_server_port))
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self) -> DagsterStack:
        bin_dir = Path(sys.executable).parent
        if self.code_server_port is not None:
            self._spawn("code-server", [str(bin_dir / "dagster"), "code-server", "start", "-m", DEFINITIONS_MODULE,
                                        "-h", "127.0.0.1", "-p", str(self.code_server_port),
                                        "--location-name", LOCATION])
            wait_for(self._code_server_serving, 120, "the code server to load the definitions")
        workspace = str(self.workspace)
        self._spawn("webserver", [str(bin_dir / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                                  "-p", str(self.port)])
        self._spawn("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace])
        wait_for(self._ready, 120, "the webserver to serve the loaded code location")
        self.instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home)))
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=self.port)
        return self

    def _spawn(self, name: str, command: list[str]) -> None:
        log = self.home / f"{name}.log"
        self.logs.append(log)
        self.processes.append(
            subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        )

    def _check_alive(self) -> None:
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                raise AssertionError(f"{log.name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")

    def _code_server_serving(self) -> bool:
        """The server answers and has loaded the definitions (the proxy answers pings while it loads)."""
        self._check_alive()
        from dagster._grpc.client import DagsterGrpcClient

        client = DagsterGrpcClient(port=self.code_server_port, host="127.0.0.1")
        try:
            client.ping("ready")
            client.list_repositories()
        except Exception:  # noqa: BLE001 - any failure here means "not yet"
            return False
        return True

    def _ready(self) -> bool:
        self._check_alive()
        try:
            if httpx.get(f"{self.url}/server_info", timeout=2).status_code != 200:
                return False
            data = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                                    locationOrLoadError { __typename } } } } }""")
        except httpx.HTTPError:
            return False
        entries = data["workspaceOrError"]["locationEntries"]
        return bool(entries) and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] is not None
                                     and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                                     for e in entries)

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(body["errors"])
        return body["data"]

    def launch(self, job: str, tags: Mapping[str, str] | None = None,
               asset_selection: list[list[str]] | None = None) -> str:
        return self.client.submit_job_execution(job, repository_location_name=LOCATION, repository_name=REPO,
                                                tags=dict(tags or {}), asset_selection=asset_selection)

    def run(self, run_id: str) -> dg.DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run

    def wait_finished(self, run_ids: list[str], timeout: float = 120) -> list[dg.DagsterRun]:
        finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
        wait_for(lambda: all(self.run(r).status in finished for r in run_ids), timeout, f"runs {run_ids} to finish")
        return [self.run(r) for r in run_ids]

    def launch_backfill(self, **params: Any) -> str:
        """A partition backfill launched over GraphQL as the UI does (``LaunchBackfillParams``); its id."""
        data = self.graphql(LAUNCH_BACKFILL, params=params)
        assert data["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", data
        return data["launchPartitionBackfill"]["backfillId"]

    def wait_backfill(self, backfill_id: str, timeout: float = 240) -> list[dg.DagsterRun]:
        """The backfill's runs (sorted by run id) once the daemon has marked it complete."""
        wait_for(lambda: (b := self.instance.get_backfill(backfill_id)) is not None
                 and b.status.value.startswith("COMPLETED"), timeout, f"backfill {backfill_id} to complete", interval=2)
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        return sorted(runs, key=lambda run: run.run_id)

    def schedule_selector(self, name: str) -> dict[str, str]:
        return {"repositoryLocationName": LOCATION, "repositoryName": REPO, "scheduleName": name}

    def start_schedule(self, name: str) -> None:
        data = self.graphql(
            """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) {
                 __typename ... on PythonError { message } } }""",
            s=self.schedule_selector(name),
        )
        assert data["startSchedule"]["__typename"] == "ScheduleStateResult", data

    def ticks(self, name: str) -> list[dict[str, Any]]:
        data = self.graphql(
            """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) { ... on Schedule {
                 scheduleState { ticks(limit: 20) { tickId status timestamp skipReason runIds } } } } }""",
            s=self.schedule_selector(name),
        )
        return data["scheduleOrError"]["scheduleState"]["ticks"]

    def run_worker_pid(self, run_id: str) -> int:
        def pid() -> int | None:
            for record in self.instance.get_records_for_run(run_id).records:
                message = record.event_log_entry.message or ""
                if "Executing steps in process (pid: " in message:
                    return int(message.split("(pid: ")[1].split(")")[0])
            return None

        return wait_for(pid, 60, f"the run worker of {run_id} to start")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if hasattr(self, "instance"):
            self.instance.dispose()
