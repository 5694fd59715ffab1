"""ComfyUI end to end through the real asset, on SQLite and PostgreSQL: workflow dirs plus a fake server."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from umlmm_pipelines_tests.fakes import png
from umlmm_pipelines_tests.fakes.comfyui_server import FakeComfyUI, running_fake_comfyui
from umlmm_pipelines_tests.fakes.ollama_server import unused_local_url
from umlmm_pipelines_tests.helpers import fetch_runs, make_defs, rows, run_source

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"
FAST = {"Sources__ComfyUI__BackoffSeconds": "0.01", "Sources__ComfyUI__MaxRetries": "2",
        "Sources__ComfyUI__TimeoutSeconds": "5"}
WORKFLOW_FILES = ["api/sdxl_lora_api.json", "flows/sdxl_lora.json", "renders/ComfyUI_00001_.png"]
NODE_TYPES = ["CheckpointLoaderSimple", "FaceDetailer", "KSampler", "LoraLoader", "SaveImage", "UpscaleModelLoader",
              "VAELoader"]
MODEL_FILES = ["checkpoints/SDXL/illustriousXL_v01.safetensors", "checkpoints/sd_xl_base_1.0.safetensors",
               "checkpoints/v1-5-pruned-emaonly-fp16.safetensors", "loras/SDXL/add-detail-xl.safetensors",
               "loras/pixel-art-xl.safetensors", "upscale_models/4x-UltraSharp.pth",
               "upscale_models/RealESRGAN_x4plus.pth", "vae/sdxl_vae.safetensors"]
EVERYTHING = len(WORKFLOW_FILES) + len(NODE_TYPES) + len(MODEL_FILES)


@pytest.fixture
def fake_comfyui() -> Iterator[FakeComfyUI]:
    with running_fake_comfyui() as fake:
        yield fake


@pytest.fixture
def workflow_dir(tmp_path) -> Path:
    """The shared samples as a user keeps them: a UI save, an API export and a render with both chunks."""
    root = tmp_path / "workflows"
    ui, api = (FIXTURES / "workflow.json").read_text(), (FIXTURES / "workflow_api.json").read_text()
    render = png.png(png.text("prompt", api), png.text("workflow", ui))
    for relative, content in [("flows/sdxl_lora.json", ui.encode()), ("api/sdxl_lora_api.json", api.encode()),
                              ("renders/ComfyUI_00001_.png", render)]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return root


def comfy_env(base_url: str, *dirs: Path | str, **settings: str) -> dict[str, str]:
    env = {**FAST, "Sources__ComfyUI__BaseUrl": base_url,
           "Sources__ComfyUI__WorkflowDirs": ",".join(str(d) for d in dirs)}
    env.update({f"Sources__ComfyUI__{key}": value for key, value in settings.items()})
    return env


def ingest(catalog_url: str, instance: dg.DagsterInstance, env: dict[str, str]) -> dg.ExecuteInProcessResult:
    return run_source(make_defs(catalog_url, env), "comfyui", instance)


def report(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node("comfyui__workflows")
    return {key: value.value for key, value in materialization.metadata.items()}


def logged(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, level: int, event: str) -> list[str]:
    """The run's log messages of one level that start with a logfmt event name."""
    records = instance.get_records_for_run(result.run_id).records
    return [r.event_log_entry.user_message for r in records
            if r.event_log_entry.level == level and event in (r.event_log_entry.user_message or "")]


def ids(catalog_url: str, table: str, live: bool = True) -> list[str]:
    condition = "removed_at IS NULL" if live else "removed_at IS NOT NULL"
    return [r["external_id"] for r in rows(
        catalog_url, f"SELECT external_id FROM {table} WHERE {condition} ORDER BY external_id")]


def counts(run: dict[str, Any]) -> tuple[int, ...]:
    return (run["records_fetched"], run["records_created"], run["records_updated"], run["records_unchanged"],
            run["records_failed"], run["records_removed"])


# ---------------------------------------------------------------------------------------------------------------
# a full run and a re-run
# ---------------------------------------------------------------------------------------------------------------


def test_full_run_stores_workflows_node_types_and_model_files(catalog_url, instance, fake_comfyui, workflow_dir):
    result = ingest(catalog_url, instance, comfy_env(fake_comfyui.url, workflow_dir))

    assert result.success
    [run] = fetch_runs(catalog_url, "comfyui")
    assert run["status"] == "completed"
    assert counts(run) == (EVERYTHING, EVERYTHING, 0, 0, 0, 0)
    assert run["records_processed"] == EVERYTHING and run["pages_committed"] == 3
    assert ids(catalog_url, "comfyui_workflows") == [f"{workflow_dir}|{path}" for path in WORKFLOW_FILES]
    assert ids(catalog_url, "comfyui_node_types") == NODE_TYPES
    assert ids(catalog_url, "comfyui_model_files") == MODEL_FILES
    formats = rows(catalog_url, "SELECT relative_path, format, node_count FROM comfyui_workflows ORDER BY 1")
    assert [(f["relative_path"], f["format"], f["node_count"]) for f in formats] == [
        ("api/sdxl_lora_api.json", "api", 8), ("flows/sdxl_lora.json", "ui", 10),
        ("renders/ComfyUI_00001_.png", "png-ui+api", 10)]
    references = rows(catalog_url, "SELECT workflow, node_id, class_type, input_name, folder, file_name "
                                   "FROM comfyui_workflow_models ORDER BY workflow, node_id")
    assert [tuple(r.values()) for r in references] == [
        (f"{workflow_dir}|{path}", node, cls, name, folder, file_name)
        for path in WORKFLOW_FILES
        for node, cls, name, folder, file_name in [
            ("10", "LoraLoader", "lora_name", "loras", "SDXL/add-detail-xl.safetensors"),
            ("4", "CheckpointLoaderSimple", "ckpt_name", "checkpoints", "SDXL/illustriousXL_v01.safetensors")]]


def test_workflow_references_join_the_servers_model_files_by_folder_and_name(
    catalog_url, instance, fake_comfyui, workflow_dir
):
    ingest(catalog_url, instance, comfy_env(fake_comfyui.url, workflow_dir))

    joined = rows(catalog_url, """
        SELECT w.relative_path, f.external_id
        FROM comfyui_workflows w
        JOIN comfyui_workflow_models m ON m.source = w.source AND m.workflow = w.external_id
        JOIN comfyui_model_files f ON f.source = m.source AND f.folder = m.folder AND f.file_name = m.file_name
        WHERE w.relative_path = 'flows/sdxl_lora.json' ORDER BY f.external_id""")

    assert [r["external_id"] for r in joined] == [
        "checkpoints/SDXL/illustriousXL_v01.safetensors", "loras/SDXL/add-detail-xl.safetensors"]


def test_report_says_which_parts_were_read(catalog_url, instance, fake_comfyui, workflow_dir):
    result = ingest(catalog_url, instance, comfy_env(fake_comfyui.url, workflow_dir))

    metadata = report(result)
    assert metadata["workflow_dirs"] == "scanned 1 of 1 dirs, 3 files"
    assert metadata["server"] == f"read {fake_comfyui.url}: ComfyUI 0.3.64, 7 node types, 8 model files in 5 folders"
    assert metadata["system_stats"]["system"]["pytorch_version"] == "2.8.0+cu128"
    assert "argv" not in metadata["system_stats"]["system"]
    assert "/models/custom_nodes" not in fake_comfyui.state.paths_requested()


def test_unchanged_rerun_counts_everything_unchanged(catalog_url, instance, fake_comfyui, workflow_dir):
    env = comfy_env(fake_comfyui.url, workflow_dir)
    ingest(catalog_url, instance, env)
    before = rows(catalog_url, "SELECT external_id, updated_at FROM comfyui_workflows ORDER BY external_id")

    assert ingest(catalog_url, instance, env).success

    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (EVERYTHING, 0, 0, EVERYTHING, 0, 0)
    assert rows(catalog_url, "SELECT external_id, updated_at FROM comfyui_workflows ORDER BY external_id") == before
    assert rows(catalog_url, "SELECT count(*) AS n FROM comfyui_workflow_models")[0]["n"] == 6


def test_edited_workflow_is_updated_and_its_model_references_replaced(catalog_url, instance, fake_comfyui,
                                                                     workflow_dir):
    env = comfy_env(fake_comfyui.url, workflow_dir)
    ingest(catalog_url, instance, env)
    api_file = workflow_dir / "api" / "sdxl_lora_api.json"
    api_file.write_text(api_file.read_text().replace("SDXL/add-detail-xl.safetensors", "pixel-art-xl.safetensors"))
    os.utime(api_file, ns=(1, 1))

    ingest(catalog_url, instance, env)

    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (EVERYTHING, 0, 1, EVERYTHING - 1, 0, 0)
    loras = rows(catalog_url, "SELECT workflow, file_name FROM comfyui_workflow_models WHERE folder = 'loras' "
                              "ORDER BY workflow")
    assert [(r["workflow"].split("|")[1], r["file_name"]) for r in loras] == [
        ("api/sdxl_lora_api.json", "pixel-art-xl.safetensors"),
        ("flows/sdxl_lora.json", "SDXL/add-detail-xl.safetensors"),
        ("renders/ComfyUI_00001_.png", "SDXL/add-detail-xl.safetensors")]


# ---------------------------------------------------------------------------------------------------------------
# removal
# ---------------------------------------------------------------------------------------------------------------


def test_deleted_workflow_file_gets_removed_at_on_the_next_run(catalog_url, instance, fake_comfyui, workflow_dir):
    env = comfy_env(fake_comfyui.url, workflow_dir)
    ingest(catalog_url, instance, env)
    (workflow_dir / "flows" / "sdxl_lora.json").unlink()

    assert ingest(catalog_url, instance, env).success

    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (EVERYTHING - 1, 0, 0, EVERYTHING - 1, 0, 1)
    assert ids(catalog_url, "comfyui_workflows", live=False) == [f"{workflow_dir}|flows/sdxl_lora.json"]
    assert len(ids(catalog_url, "comfyui_workflows")) == 2


def test_restored_workflow_file_is_live_again(catalog_url, instance, fake_comfyui, workflow_dir):
    env = comfy_env(fake_comfyui.url, workflow_dir)
    ingest(catalog_url, instance, env)
    moved = workflow_dir.parent / "aside.json"
    shutil.move(workflow_dir / "flows" / "sdxl_lora.json", moved)
    ingest(catalog_url, instance, env)
    shutil.move(moved, workflow_dir / "flows" / "sdxl_lora.json")

    ingest(catalog_url, instance, env)

    assert fetch_runs(catalog_url, "comfyui")[-1]["records_updated"] == 1
    assert ids(catalog_url, "comfyui_workflows", live=False) == []


def test_a_root_written_in_several_pages_is_still_one_complete_listing(catalog_url, instance, workflow_dir):
    env = comfy_env("", workflow_dir, FilesPerPage="2")
    ingest(catalog_url, instance, env)
    first = fetch_runs(catalog_url, "comfyui")[-1]
    ingest(catalog_url, instance, env)
    rerun = fetch_runs(catalog_url, "comfyui")[-1]
    (workflow_dir / "flows" / "sdxl_lora.json").unlink()  # listed on the first page, not the last

    ingest(catalog_url, instance, env)

    assert (first["pages_committed"], counts(first)) == (2, (3, 3, 0, 0, 0, 0))
    assert counts(rerun) == (3, 0, 0, 3, 0, 0)  # files of the first page are not taken for removed
    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (2, 0, 0, 2, 0, 1)
    assert ids(catalog_url, "comfyui_workflows", live=False) == [f"{workflow_dir}|flows/sdxl_lora.json"]


def test_an_emptied_root_marks_all_its_workflows_removed(catalog_url, instance, workflow_dir):
    env = comfy_env("", workflow_dir)
    ingest(catalog_url, instance, env)
    shutil.rmtree(workflow_dir)
    workflow_dir.mkdir()

    assert ingest(catalog_url, instance, env).success

    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (0, 0, 0, 0, 0, 3)
    assert ids(catalog_url, "comfyui_workflows") == []


def test_node_types_and_model_files_gone_from_the_server_are_marked_removed(catalog_url, instance, fake_comfyui):
    env = comfy_env(fake_comfyui.url)
    ingest(catalog_url, instance, env)
    del fake_comfyui.state.object_info["FaceDetailer"]
    fake_comfyui.state.models["loras"].remove("pixel-art-xl.safetensors")
    del fake_comfyui.state.models["upscale_models"]  # a folder the server no longer has

    assert ingest(catalog_url, instance, env).success

    assert fetch_runs(catalog_url, "comfyui")[-1]["records_removed"] == 4
    assert ids(catalog_url, "comfyui_node_types", live=False) == ["FaceDetailer"]
    assert ids(catalog_url, "comfyui_model_files", live=False) == [
        "loras/pixel-art-xl.safetensors", "upscale_models/4x-UltraSharp.pth", "upscale_models/RealESRGAN_x4plus.pth"]


def test_workflows_of_two_roots_are_kept_apart_and_removed_per_root(catalog_url, instance, tmp_path, workflow_dir):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(workflow_dir / "flows" / "sdxl_lora.json", other / "sdxl_lora.json")
    env = comfy_env("", workflow_dir, other)
    ingest(catalog_url, instance, env)
    (other / "sdxl_lora.json").unlink()

    ingest(catalog_url, instance, env)

    roots = rows(catalog_url, "SELECT root, count(*) AS n, count(removed_at) AS removed FROM comfyui_workflows "
                              "GROUP BY root ORDER BY root")
    assert [(r["root"], r["n"], r["removed"]) for r in roots] == [(str(other), 1, 1), (str(workflow_dir), 3, 0)]


# ---------------------------------------------------------------------------------------------------------------
# one part absent
# ---------------------------------------------------------------------------------------------------------------


def test_server_down_while_directories_scan_completes_with_a_warning_and_says_so(catalog_url, instance,
                                                                                 workflow_dir):
    down = unused_local_url()

    result = ingest(catalog_url, instance, comfy_env(down, workflow_dir))

    assert result.success
    [run] = fetch_runs(catalog_url, "comfyui")
    assert run["status"] == "completed" and counts(run) == (3, 3, 0, 0, 0, 0)
    expected = (f"unreachable: ComfyUI at {down}: GET /system_stats failed: connection refused "
                "(gave up after 3 attempts)")
    assert report(result)["server"] == expected
    assert report(result)["workflow_dirs"] == "scanned 1 of 1 dirs, 3 files"
    [warning] = logged(instance, result, logging.WARNING, "server_unreachable")
    assert f"server={down}" in warning and "connection refused" in warning


def test_server_going_down_leaves_node_types_and_model_files_live(catalog_url, instance, fake_comfyui, workflow_dir):
    env = comfy_env(fake_comfyui.url, workflow_dir)
    ingest(catalog_url, instance, env)
    fake_comfyui.go_down()

    result = ingest(catalog_url, instance, env)

    assert result.success
    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (3, 0, 0, 3, 0, 0)
    assert ids(catalog_url, "comfyui_node_types") == NODE_TYPES
    assert ids(catalog_url, "comfyui_model_files") == MODEL_FILES
    assert report(result)["server"].startswith(f"unreachable: ComfyUI at {fake_comfyui.url}")


def test_no_directories_configured_reads_the_server_and_says_the_directories_were_skipped(
    catalog_url, instance, fake_comfyui
):
    result = ingest(catalog_url, instance, comfy_env(fake_comfyui.url))

    assert result.success
    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (15, 15, 0, 0, 0, 0)
    assert report(result)["workflow_dirs"] == (
        "none configured (set Sources__ComfyUI__WorkflowDirs); directory part skipped")


def test_both_parts_absent_fails_the_run_naming_comfyui_and_both_causes(catalog_url, instance):
    down = unused_local_url()

    result = ingest(catalog_url, instance, comfy_env(down))

    assert not result.success
    [run] = fetch_runs(catalog_url, "comfyui")
    assert run["status"] == "failed" and counts(run) == (0, 0, 0, 0, 0, 0)
    assert run["error_message"] == (
        "ComfyUI: nothing could be read. Workflow dirs: none configured (set Sources__ComfyUI__WorkflowDirs); "
        f"directory part skipped. Server: unreachable: ComfyUI at {down}: GET /system_stats failed: "
        "connection refused (gave up after 3 attempts)")


def test_unreadable_directories_and_no_server_fail_the_run_naming_each_directory(catalog_url, instance, tmp_path):
    missing, a_file = tmp_path / "missing", tmp_path / "file.json"
    a_file.write_text("{}")

    result = ingest(catalog_url, instance, comfy_env("", missing, a_file))

    assert not result.success
    message = fetch_runs(catalog_url, "comfyui")[-1]["error_message"]
    assert message.startswith("ComfyUI: nothing could be read. Workflow dirs: scanned 0 of 2 dirs, 0 files; ")
    assert f"{missing}: does not exist" in message and f"{a_file}: not a directory" in message
    assert message.endswith("Server: none configured (Sources__ComfyUI__BaseUrl is empty); server part skipped")


def test_one_unreadable_directory_is_reported_while_the_other_is_stored(catalog_url, instance, workflow_dir,
                                                                        tmp_path):
    missing = tmp_path / "missing"

    result = ingest(catalog_url, instance, comfy_env("", missing, workflow_dir))

    assert result.success
    assert report(result)["workflow_dirs"] == f"scanned 1 of 2 dirs, 3 files; {missing}: does not exist"
    [warning] = logged(instance, result, logging.WARNING, "workflow_dir_unreadable")
    assert str(missing) in warning


# ---------------------------------------------------------------------------------------------------------------
# files that must not be read
# ---------------------------------------------------------------------------------------------------------------


def test_escaping_symlink_oversized_file_and_bad_json_are_failed_with_reasons_and_the_rest_stored(
    catalog_url, instance, tmp_path, workflow_dir
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text((FIXTURES / "workflow_api.json").read_text())
    (workflow_dir / "escape.json").symlink_to(outside / "secret.json")
    (workflow_dir / "huge.json").write_bytes(b" " * 30_000)
    (workflow_dir / "broken.json").write_text('{"nodes": [')
    (workflow_dir / "settings.json").write_text('{"Comfy.ColorPalette": "dark"}')
    (workflow_dir / "photo.png").write_bytes(png.png(png.text("parameters", "1girl, Steps: 20")))
    (workflow_dir / "linked").symlink_to(outside)

    result = ingest(catalog_url, instance, comfy_env("", workflow_dir, MaxFileBytes="20000"))

    assert result.success
    run = fetch_runs(catalog_url, "comfyui")[-1]
    assert counts(run) == (8, 3, 0, 0, 5, 0)
    assert ids(catalog_url, "comfyui_workflows") == [f"{workflow_dir}|{path}" for path in WORKFLOW_FILES]
    failures = {line.split(" id=")[1].split(" reason=")[0].strip('"').split("|")[1]: line.split(" reason=")[1]
                for line in logged(instance, result, logging.WARNING, "record_failed")}
    assert failures == {
        "broken.json": '"not valid JSON: Expecting value: line 1 column 12 (char 11)"',
        "escape.json": f'"symlink leaves its root (-> {outside / "secret.json"})"',
        "huge.json": '"30000 bytes is above MaxFileBytes (20000)"',
        "photo.png": "\"PNG without a ComfyUI 'workflow' or 'prompt' text chunk\"",
        "settings.json": "\"not a ComfyUI workflow: JSON object with neither a 'nodes' list nor API nodes with "
                         'class_type (Comfy.ColorPalette)"',
    }
    assert report(result)["workflow_dirs"] == (
        f"scanned 1 of 1 dirs, 8 files; {workflow_dir}: directory symlink linked -> {outside} not followed "
        "(leaves the root); 5 skipped (1 PNG without a workflow, 1 above MaxFileBytes, 1 not a workflow, "
        "1 not valid JSON, 1 symlink leaving its root)")
    [link_warning] = logged(instance, result, logging.WARNING, "symlink_skipped")
    assert f"link=\"linked -> {outside}\"" in link_warning


def test_failed_files_stay_seen_and_are_failed_again_until_fixed(catalog_url, instance, workflow_dir):
    (workflow_dir / "broken.json").write_text("{")
    env = comfy_env("", workflow_dir)
    ingest(catalog_url, instance, env)

    ingest(catalog_url, instance, env)
    second = fetch_runs(catalog_url, "comfyui")[-1]
    (workflow_dir / "broken.json").write_text((FIXTURES / "workflow.json").read_text())
    ingest(catalog_url, instance, env)

    assert counts(second) == (4, 0, 0, 3, 1, 0)
    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (4, 1, 0, 3, 0, 0)


# ---------------------------------------------------------------------------------------------------------------
# politeness
# ---------------------------------------------------------------------------------------------------------------


def test_429_and_503_with_retry_after_are_waited_out_and_retried(catalog_url, instance, fake_comfyui):
    fake_comfyui.state.failures = {"/object_info": [(429, "1")], "/models/loras": [(503, "1")]}

    result = ingest(catalog_url, instance, comfy_env(fake_comfyui.url))

    assert result.success
    for path in ("/object_info", "/models/loras"):
        first, second = fake_comfyui.state.times_of(path)
        assert second - first >= 0.95, f"{path} retried after {second - first:.2f}s, not after Retry-After: 1"
    assert counts(fetch_runs(catalog_url, "comfyui")[-1]) == (15, 15, 0, 0, 0, 0)


def test_model_folder_failing_for_good_keeps_every_model_file_live(catalog_url, instance, fake_comfyui):
    env = comfy_env(fake_comfyui.url)
    ingest(catalog_url, instance, env)
    fake_comfyui.state.models["vae"] = []  # would be removed, if the listing were complete
    fake_comfyui.state.failures = {"/models/loras": [(500, None)] * 3}

    result = ingest(catalog_url, instance, env)

    assert result.success
    assert fetch_runs(catalog_url, "comfyui")[-1]["records_removed"] == 0
    assert ids(catalog_url, "comfyui_model_files") == MODEL_FILES
    assert report(result)["server"] == (
        f"read {fake_comfyui.url}: ComfyUI 0.3.64, 7 node types, 5 model files in 4 folders; problems: "
        f"ComfyUI at {fake_comfyui.url}: GET /models/loras failed: HTTP 500 (gave up after 3 attempts)")
