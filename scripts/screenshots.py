#!/usr/bin/env python3
"""Screenshots of what a user sees: the UI on an example DAGSTER_HOME filled by real runs.

It starts fake Ollama, Danbooru, e621, CivitAI and ComfyUI servers on 127.0.0.1 (and a ComfyUI
workflow directory), a real dagster-webserver
and dagster-daemon on a fresh DAGSTER_HOME (SQLite catalog and storage, the project's dagster.yaml),
launches runs of every source over GraphQL with the fakes' data changing between runs (so that
the plots have a history), and then photographs the pages with headless Chromium, driven over the
DevTools protocol so that it waits for each page's data and can click the "Plots" toggle:

    .venv/bin/python scripts/screenshots.py                      # writes docs/screenshots/*.png
    .venv/bin/python scripts/screenshots.py --keep-home /tmp/ui  # keep the example home to browse it

Chromium comes from Debian (``sudo apt-get install -y chromium``); set CHROMIUM to use another binary.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from umlmm_pipelines.operations.metrics import METRICS_JOB_NAME  # noqa: E402
from umlmm_pipelines_tests.dagster_stack import DagsterStack, wait_for  # noqa: E402
from umlmm_pipelines_tests.fakes.civitai_server import CivitAIState, make_model  # noqa: E402
from umlmm_pipelines_tests.fakes.ollama_server import FakeOllama  # noqa: E402
from umlmm_pipelines_tests.fakes.sources import SourceFakes, running_source_fakes  # noqa: E402

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
POSTS_PER_DAY = [60, 140, 90, 200, 120]  # different per day, so the partition plot has a shape
WINDOW = (1600, 1100)


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@contextmanager
def running_fakes() -> Iterator[SourceFakes]:
    civitai = CivitAIState()
    civitai.add_models([make_model(1000 + n, "LORA") for n in range(12)])
    civitai.add_models([make_model(2000 + n, "Checkpoint") for n in range(5)])
    # The CivitAI checkpoint the example workflow loads, so that model_links has a match to show.
    checkpoint = make_model(2100, "Checkpoint", versions=1)
    checkpoint["name"] = "Illustrious XL"
    checkpoint["modelVersions"][0]["files"][0]["name"] = "illustriousXL_v01.safetensors"
    civitai.add_models([checkpoint])
    with tempfile.TemporaryDirectory(prefix="umlmm_workflows_") as workflows, \
            running_source_fakes(dict(zip(DAYS, POSTS_PER_DAY, strict=True)), civitai, Path(workflows)) as fakes:
        yield fakes


def settings_for(fakes: SourceFakes) -> dict:
    booru = {"StartDate": "2024-01-01", "BackoffSeconds": 0.1, "PageSize": 50}
    return {
        "Sources": {
            "Ollama": {"BaseUrl": fakes.ollama.url},
            "Danbooru": {**booru, "BaseUrl": fakes.danbooru.url, "RequestsPerSecond": 0},
            "E621": {**booru, "BaseUrl": fakes.e621.url, "RequestsPerSecond": 2},
            "CivitAI": {"BaseUrl": fakes.civitai.url, "Types": ["Checkpoint", "LORA"], "RequestsPerSecond": 0,
                        "PageSize": 5},
            "ComfyUI": {"BaseUrl": fakes.comfyui.url, "WorkflowDirs": [str(fakes.workflows)]},
        },
    }


def add_ollama_models(fake: FakeOllama, count: int, start: int) -> None:
    """New models appear on the host, as after `ollama pull`."""
    with fake.state.lock:
        template = fake.state.models[0]
        for n in range(start, start + count):
            model = copy.deepcopy(template)
            model["name"] = model["model"] = f"example-{n}:latest"
            model["digest"] = f"{n:064x}"
            fake.state.models.append(model)


def make_history(stack: DagsterStack, fakes: SourceFakes) -> dict[str, str]:
    """Runs of every source, one after another, the data changing in between; returns notable run ids."""
    def run(job: str, partition: str | None = None) -> str:
        run_id = stack.launch(job, tags={"dagster/partition": partition} if partition else None)
        stack.wait_finished([run_id], timeout=180)
        time.sleep(1)  # distinct points in time on the plots
        return run_id

    notable = {}
    notable["ollama_first"] = run("ollama_ingestion")
    add_ollama_models(fakes.ollama, 3, start=100)
    run("ollama_ingestion")
    fakes.ollama.state.new_digest_each_listing = True  # every model re-pulled: all updated
    run("ollama_ingestion")
    fakes.ollama.state.new_digest_each_listing = False
    add_ollama_models(fakes.ollama, 5, start=200)
    notable["ollama_last"] = run("ollama_ingestion")
    for day in DAYS:
        notable["danbooru"] = run("danbooru_ingestion", day)
    for day in DAYS[:3]:
        run("e621_ingestion", day)
    for model_type in ("Checkpoint", "LORA"):
        run("civitai_ingestion", model_type)
    notable["comfyui"] = run("comfyui_ingestion")
    run(METRICS_JOB_NAME)
    links = dg.AssetKey(["catalog", "model_links"])
    wait_for(lambda: stack.instance.get_latest_materialization_event(links) is not None, 300,
             "the model_links_automation sensor to materialize catalog/model_links", interval=0.25)
    return notable


class HeadlessChromium:
    """Headless Chromium driven over the DevTools protocol: navigate, wait for text, click, capture.

    ``chromium --screenshot`` alone cannot wait for a single-page app's data to arrive nor close
    the UI's first-visit dialog, so a few protocol calls do it, over ``websockets`` (installed with
    dagster-webserver's uvicorn[standard]); one browser profile keeps the dialog dismissed across pages.
    """

    def __init__(self, binary: str, width: int, height: int) -> None:
        self.profile = tempfile.mkdtemp(prefix="umlmm_chromium_")
        command = [binary, "--headless=new", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
                   f"--window-size={width},{height}", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
                   "about:blank"]
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 30, "Chromium to start", interval=0.25)
        port = int(port_file.read_text().split()[0])
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json", timeout=10).json() if t["type"] == "page")
        self._connection = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.socket = self._connection.__enter__()
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, wait_for_text: str) -> None:
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.js(f"document.body && document.body.innerText.includes({json.dumps(wait_for_text)})"),
                 60, f"{url} to show {wait_for_text!r}", interval=0.25)
        self.dismiss_community_dialog()
        time.sleep(1.5)  # let charts and lazy panels finish drawing

    def dismiss_community_dialog(self, appear_within: float = 4.0) -> None:
        """The UI opens "Join the Dagster community" shortly after the first page renders; "Skip" closes it
        for the profile. Later pages do not show it, and then this costs only the short wait."""
        deadline = time.monotonic() + appear_within
        while time.monotonic() < deadline:
            if self.click_button("Skip"):
                wait_for(lambda: not self.js("document.body.innerText.includes('Join the Dagster community')"),
                         10, "the community dialog to close", interval=0.25)
                return
            time.sleep(0.25)

    def click_button(self, label: str) -> bool:
        return bool(self.js(f"""(() => {{ const b = [...document.querySelectorAll('button')]
            .find(x => x.innerText.trim() === {json.dumps(label)}); if (b) {{ b.click(); return true; }}
            return false; }})()"""))

    def scroll_to_button(self, label: str) -> None:
        self.js(f"""[...document.querySelectorAll('button')].find(x => x.innerText.trim() === {json.dumps(label)})
            ?.scrollIntoView({{block: 'start'}})""")
        time.sleep(1)

    def capture(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        if path.stat().st_size < 20_000:
            raise RuntimeError(f"{path} looks empty")
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self.process.terminate()
        self.process.wait(timeout=20)
        shutil.rmtree(self.profile, ignore_errors=True)


def take_screenshots(browser: HeadlessChromium, base: str, out: Path, notable: dict[str, str]) -> None:
    """The pages a user looks at: jobs, schedules, one run with its metadata, plots over time, partitions."""
    browser.open(f"{base}/jobs", "ollama_ingestion")
    browser.capture(out / "jobs.png")
    browser.open(f"{base}/automation", "ollama_schedule")
    browser.capture(out / "automation.png")
    browser.open(f"{base}/runs/{notable['ollama_last']}", "records_created")
    browser.capture(out / "run.png")
    browser.open(f"{base}/assets/ollama/models", "Plots")
    browser.click_button("Plots")
    browser.scroll_to_button("Plots")
    browser.capture(out / "asset_plots.png")
    browser.open(f"{base}/assets/danbooru/posts?view=partitions", "Partitions")
    browser.capture(out / "danbooru_partitions.png")
    # Requested by the model_links_automation sensor after the CivitAI, ComfyUI and Ollama runs.
    browser.open(f"{base}/assets/catalog/model_links", "model_files_matched")
    browser.scroll_to_button("Plots")
    browser.capture(out / "model_links.png")
    browser.open(f"{base}/assets/operations/metrics", "success_rate")
    browser.scroll_to_button("Table")
    browser.capture(out / "metrics.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--keep-home", type=Path, help="use (and keep) this DAGSTER_HOME instead of a temporary one")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("Chromium not found: install it with `sudo apt-get install -y chromium` (Debian/Ubuntu) "
              "or set CHROMIUM=/path/to/chrome", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        if args.keep_home:
            home = args.keep_home.resolve()
            home.mkdir(parents=True, exist_ok=True)
        else:
            home = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="umlmm_ui_")))
        fakes = cleanup.enter_context(running_fakes())
        config = home / "umlmm.json"
        config.write_text(json.dumps(settings_for(fakes)))
        stack = DagsterStack(home, {"UMLMM_CONFIG": str(config)}).start()
        cleanup.callback(stack.stop)
        print(f"UI on {stack.url} (DAGSTER_HOME={home}); making history")
        notable = make_history(stack, fakes)
        browser = HeadlessChromium(chromium, *WINDOW)
        cleanup.callback(browser.close)
        take_screenshots(browser, stack.url, args.out, notable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
