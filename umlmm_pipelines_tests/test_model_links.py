"""catalog/model_links: workflows → model files → CivitAI versions, and Ollama models sharing digests.

The catalog is filled by the real CivitAI, ComfyUI and Ollama runs against fake servers, then the
link asset is materialized and its tables are read back with SQL, as a user would.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from umlmm_pipelines.links.asset import MODEL_LINKS_KEY
from umlmm_pipelines_tests.fakes.civitai_server import FakeCivitAI, make_model, running_fake_civitai
from umlmm_pipelines_tests.fakes.comfyui_server import ComfyUIState, FakeComfyUI, running_fake_comfyui
from umlmm_pipelines_tests.fakes.ollama_server import FakeOllama, OllamaState, running_fake_ollama
from umlmm_pipelines_tests.helpers import make_defs, rows, run_source

HASHED, LINKED, NAMED, SHARED_NAME, LOCAL_ONLY = (
    "illustriousXL_v01.safetensors", "pixel-art-xl.safetensors", "sdxl_vae.safetensors", "4x-UltraSharp.pth",
    "sd_xl_base_1.0.safetensors",
)


def _civitai_model(model_id: int, model_type: str, file_names: list[str]) -> dict:
    """A model whose versions' files carry the given names (newest version first)."""
    model = make_model(model_id, model_type, versions=len(file_names))
    for version, name in zip(model["modelVersions"], file_names, strict=True):
        version["files"][0]["name"] = name
    return model


@pytest.fixture
def civitai() -> Iterator[FakeCivitAI]:
    with running_fake_civitai() as server:
        server.state.add_models([
            _civitai_model(1, "Checkpoint", [HASHED, "illustriousXL_v00.safetensors"]),
            _civitai_model(2, "LORA", ["pixel-art-xl-v2.safetensors", LINKED]),
            _civitai_model(3, "VAE", [NAMED]),
            _civitai_model(4, "Upscaler", [SHARED_NAME]),
            _civitai_model(5, "Upscaler", [SHARED_NAME]),
        ])
        yield server


@pytest.fixture
def comfyui() -> Iterator[FakeComfyUI]:
    state = ComfyUIState()
    state.models = {"checkpoints": [f"SDXL/{HASHED}", LOCAL_ONLY], "loras": [LINKED], "vae": [NAMED],
                    "upscale_models": [SHARED_NAME]}
    with running_fake_comfyui(state) as server:
        yield server


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    state = OllamaState()
    llama = next(m for m in state.models if m["name"] == "llama3.2:latest")
    state.models.append({**copy.deepcopy(llama), "name": "my-llama:latest", "model": "my-llama:latest"})
    with running_fake_ollama(state) as server:
        yield server


def _node(node_id: int, node_type: str, widgets: list, models: list[dict] | None = None) -> dict:
    node = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": node_id,
            "mode": 0, "inputs": [], "outputs": [], "properties": {"Node name for S&R": node_type},
            "widgets_values": widgets}
    if models is not None:
        node["properties"]["models"] = models
    return node


def _workflow_dir(tmp_path: Path, civitai: FakeCivitAI) -> Path:
    """A UI-format workflow naming five model files; for two it records a hash or a CivitAI link."""
    sha256 = civitai.state.model(1)["modelVersions"][0]["files"][0]["hashes"]["SHA256"].lower()
    graph = {"last_node_id": 5, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {},
             "version": 0.4, "nodes": [
                 _node(1, "CheckpointLoaderSimple", [f"SDXL/{HASHED}"],
                       [{"name": HASHED, "hash": sha256, "hash_type": "SHA256", "directory": "checkpoints"}]),
                 _node(2, "LoraLoader", [LINKED, 0.8, 0.8],
                       [{"name": LINKED, "url": "https://civitai.com/api/download/models/20?type=Model",
                         "directory": "loras"}]),
                 _node(3, "VAELoader", [NAMED]),
                 _node(4, "UpscaleModelLoader", [SHARED_NAME]),
                 _node(5, "UpscaleModelLoader", ["never-downloaded.pth"]),
             ]}
    root = tmp_path / "workflows"
    root.mkdir()
    (root / "portrait.json").write_text(json.dumps(graph))
    return root


@pytest.fixture
def linked_defs(catalog_url, instance, tmp_path, civitai, comfyui, ollama) -> dg.Definitions:
    """Definitions whose catalog holds what the three sources' real runs stored."""
    env = {
        "Sources__CivitAI__BaseUrl": civitai.url, "Sources__CivitAI__RequestsPerSecond": "0",
        "Sources__ComfyUI__BaseUrl": comfyui.url,
        "Sources__ComfyUI__WorkflowDirs": str(_workflow_dir(tmp_path, civitai)),
        "Sources__Ollama__BaseUrl": ollama.url,
    }
    defs = make_defs(catalog_url, env)
    for model_type in ("Checkpoint", "LORA", "VAE", "Upscaler"):
        assert run_source(defs, "civitai", instance, partition_key=model_type).success
    assert run_source(defs, "comfyui", instance).success
    assert run_source(defs, "ollama", instance).success
    return defs


def _materialize_links(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict:
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[MODEL_LINKS_KEY])
    assert result.success
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == MODEL_LINKS_KEY]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _file_links(catalog_url: str) -> dict[str, dict]:
    found = rows(catalog_url, "SELECT * FROM model_file_links")
    return {r["base_name"]: r for r in found}


def test_each_local_file_is_tied_to_its_civitai_version_by_the_strongest_evidence(catalog_url, instance,
                                                                                  linked_defs):
    _materialize_links(linked_defs, instance)

    links = _file_links(catalog_url)
    assert {name: (r["match_method"], r["civitai_version_id"]) for name, r in links.items()} == {
        HASHED: ("sha256", 10),  # the hash the workflow recorded is version 10's file
        # the workflow's CivitAI link names version 20; it beats version 21, whose file merely has this name
        LINKED: ("download_url", 20),
        NAMED: ("file_name", 30),  # the only CivitAI file of that name
        SHARED_NAME: ("file_name_ambiguous", None),  # two models ship different files under this name
        LOCAL_ONLY: (None, None),
    }
    assert links[HASHED]["civitai_model_id"] == 1 and links[HASHED]["civitai_model_name"] == "Model 1"
    assert links[SHARED_NAME]["candidates"] == 2


def test_workflows_are_linked_to_the_installed_files_they_use(catalog_url, instance, linked_defs):
    _materialize_links(linked_defs, instance)

    found = rows(catalog_url, "SELECT node_id, base_name, model_file, match_method, civitai_version_id "
                              "FROM workflow_model_links WHERE relative_path = 'portrait.json' ORDER BY node_id")
    assert [(r["node_id"], r["base_name"], r["model_file"], r["match_method"]) for r in found] == [
        ("1", HASHED, f"checkpoints/SDXL/{HASHED}", "sha256"),
        ("2", LINKED, f"loras/{LINKED}", "download_url"),
        ("3", NAMED, f"vae/{NAMED}", "file_name"),
        ("4", SHARED_NAME, f"upscale_models/{SHARED_NAME}", "file_name_ambiguous"),
        ("5", "never-downloaded.pth", None, None),  # named by the workflow, not installed, unknown to CivitAI
    ]


def test_ollama_models_sharing_a_digest_are_grouped(catalog_url, instance, linked_defs):
    _materialize_links(linked_defs, instance)

    shared = rows(catalog_url, "SELECT name, same_digest FROM ollama_digest_links WHERE same_digest > 1 ORDER BY name")
    assert [(r["name"], r["same_digest"]) for r in shared] == [("llama3.2:latest", 2), ("my-llama:latest", 2)]
    assert len(rows(catalog_url, "SELECT model FROM ollama_digest_links")) == 5


def test_the_materialization_counts_matched_and_unmatched_files(catalog_url, instance, linked_defs):
    metadata = _materialize_links(linked_defs, instance)

    assert (metadata["model_files"], metadata["model_files_matched"], metadata["model_files_ambiguous"],
            metadata["model_files_unmatched"]) == (5, 3, 1, 1)
    assert (metadata["model_files_matched_by_sha256"], metadata["model_files_matched_by_download_url"],
            metadata["model_files_matched_by_file_name"]) == (1, 1, 1)
    assert (metadata["workflow_references"], metadata["workflow_references_installed"],
            metadata["workflow_references_matched"]) == (5, 4, 3)
    assert metadata["ollama_shared_digests"] == 1
    assert "| matched by sha256 | 1 |" in metadata["matches"]


def test_a_rebuild_replaces_the_links_instead_of_adding_to_them(catalog_url, instance, linked_defs):
    _materialize_links(linked_defs, instance)
    _materialize_links(linked_defs, instance)

    assert len(rows(catalog_url, "SELECT model_file FROM model_file_links")) == 5
    assert len(rows(catalog_url, "SELECT workflow FROM workflow_model_links")) == 5


def test_links_are_requested_after_a_linked_source_has_new_data(sqlite_url, instance, ollama):
    defs = make_defs(sqlite_url, {"Sources__Ollama__BaseUrl": ollama.url})
    selection = dg.AssetSelection.assets(MODEL_LINKS_KEY)

    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert run_source(defs, "ollama", instance).success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                              cursor=quiet.cursor)

    assert quiet.total_requested == 0
    assert after.total_requested == 1


def test_an_empty_catalog_links_nothing_and_says_so(sqlite_url, instance):
    metadata = _materialize_links(make_defs(sqlite_url), instance)

    assert (metadata["model_files"], metadata["workflow_references"], metadata["ollama_models"]) == (0, 0, 0)
