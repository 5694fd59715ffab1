"""ComfyUI mapping: workflow files (UI, API, PNG text chunks), model references, node types, model files, scans."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from umlmm_pipelines.config import ConfigError
from umlmm_pipelines.definitions import load_source_settings
from umlmm_pipelines.ingestion.source import RecordError
from umlmm_pipelines.sources._comfyui_files import GlobSet, SkippedFile, open_within, scan_root
from umlmm_pipelines.sources._comfyui_graphs import api_model_references, parse_json, ui_model_references
from umlmm_pipelines.sources.comfyui import (
    comfyui_workflow_models,
    map_model_file,
    map_node_type,
    map_workflow,
    read_workflow_file,
    system_summary,
)
from umlmm_pipelines_tests.fakes import png

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"
MTIME_NS = 1_760_432_000_123_456_789
MTIME = datetime(2025, 10, 14, 8, 53, 20, 123457, tzinfo=UTC)
WORKFLOW_ID = "5c1e8a7e-2f7b-4d47-9a51-3a9f1f0c2b61"
UI_TYPES = ["CLIPTextEncode", "CheckpointLoaderSimple", "EmptyLatentImage", "KSampler", "LoraLoader", "Note",
            "PreviewImage", "SaveImage", "VAEDecode"]
API_TYPES = ["CLIPTextEncode", "CheckpointLoaderSimple", "EmptyLatentImage", "KSampler", "LoraLoader", "SaveImage",
             "VAEDecode"]
SAMPLE_MODELS = [
    {"node_id": "4", "class_type": "CheckpointLoaderSimple", "input_name": "ckpt_name", "folder": "checkpoints",
     "file_name": "SDXL/illustriousXL_v01.safetensors", "base_name": "illustriousXL_v01.safetensors"},
    {"node_id": "10", "class_type": "LoraLoader", "input_name": "lora_name", "folder": "loras",
     "file_name": "SDXL/add-detail-xl.safetensors", "base_name": "add-detail-xl.safetensors"},
]


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture(name: str) -> Any:
    return json.loads(fixture_text(name))


UI_TEXT, API_TEXT = fixture_text("workflow.json"), fixture_text("workflow_api.json")


def read_and_map(root: Path, relative: str, content: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write one file under ``root``, read it as the run does, and map it: (row, model references)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    record = {"kind": "workflow", "root": str(root), "path": relative, "size": len(content), "mtime_ns": MTIME_NS,
              "problem": None, "category": None}
    documents = read_workflow_file(str(root), relative, 20 * 1024 * 1024)
    mapped = map_workflow({**record, **documents})
    return mapped.row, mapped.children[comfyui_workflow_models]


def read_skipped(root: Path, relative: str, content: bytes, max_bytes: int = 20 * 1024 * 1024) -> SkippedFile:
    (root / relative).write_bytes(content)
    with pytest.raises(SkippedFile) as info:
        read_workflow_file(str(root), relative, max_bytes)
    return info.value


# ---------------------------------------------------------------------------------------------------------------
# workflow files: every column
# ---------------------------------------------------------------------------------------------------------------


def test_ui_format_file_maps_every_column(tmp_path):
    row, models = read_and_map(tmp_path, "flows/sdxl_lora.json", UI_TEXT.encode())

    assert row == {
        "root": str(tmp_path),
        "relative_path": "flows/sdxl_lora.json",
        "name": "sdxl_lora",
        "format": "ui",
        "file_size": len(UI_TEXT.encode()),
        "modified_at": MTIME,
        "workflow_id": WORKFLOW_ID,
        "node_count": 10,
        "node_types": UI_TYPES,
        "workflow": fixture("workflow.json"),
        "prompt": None,
    }
    assert models == SAMPLE_MODELS


def test_api_format_file_maps_every_column(tmp_path):
    row, models = read_and_map(tmp_path, "sdxl_lora_api.json", API_TEXT.encode())

    assert row == {
        "root": str(tmp_path),
        "relative_path": "sdxl_lora_api.json",
        "name": "sdxl_lora_api",
        "format": "api",
        "file_size": len(API_TEXT.encode()),
        "modified_at": MTIME,
        "workflow_id": None,
        "node_count": 8,
        "node_types": API_TYPES,
        "workflow": None,
        "prompt": fixture("workflow_api.json"),
    }
    assert models == SAMPLE_MODELS


def test_json_with_a_byte_order_mark_is_read(tmp_path):
    row, _ = read_and_map(tmp_path, "bom.json", b"\xef\xbb\xbf" + API_TEXT.encode())

    assert row["format"] == "api"


def test_png_with_both_text_chunks_keeps_both_graphs_and_takes_models_from_the_prompt(tmp_path):
    content = png.png(png.text("prompt", API_TEXT), png.text("workflow", UI_TEXT), pixels=64)

    row, models = read_and_map(tmp_path, "renders/ComfyUI_00001_.png", content)

    assert (row["format"], row["name"], row["file_size"]) == ("png-ui+api", "ComfyUI_00001_", len(content))
    assert row["workflow"] == fixture("workflow.json") and row["prompt"] == fixture("workflow_api.json")
    assert row["node_count"] == 10 and row["node_types"] == UI_TYPES
    assert row["workflow_id"] == WORKFLOW_ID
    assert models == SAMPLE_MODELS


def test_png_ztxt_prompt_alone_is_the_api_format(tmp_path):
    row, models = read_and_map(tmp_path, "api_only.png", png.png(png.ztxt("prompt", API_TEXT)))

    assert (row["format"], row["node_count"], row["node_types"]) == ("png-api", 8, API_TYPES)
    assert row["workflow"] is None and row["prompt"] == fixture("workflow_api.json")
    assert models == SAMPLE_MODELS


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_png_itxt_workflow_alone_is_the_ui_format_with_models_from_widgets(tmp_path, compressed):
    content = png.png(png.itxt("workflow", UI_TEXT, compressed=compressed))

    row, models = read_and_map(tmp_path, "ui_only.png", content)

    assert (row["format"], row["node_count"], row["workflow_id"]) == ("png-ui", 10, WORKFLOW_ID)
    assert row["workflow"] == fixture("workflow.json") and row["prompt"] is None
    assert models == SAMPLE_MODELS


def test_png_text_chunks_after_the_image_data_are_found(tmp_path):
    content = png.png(after_image=(png.text("prompt", API_TEXT),))

    row, _ = read_and_map(tmp_path, "late.png", content)

    assert row["format"] == "png-api"


def test_png_with_unicode_itxt_keeps_the_text(tmp_path):
    prompt = fixture("workflow_api.json")
    prompt["6"]["inputs"]["text"] = "夜の街, neon — rain"

    row, _ = read_and_map(tmp_path, "unicode.png", png.png(png.itxt("prompt", json.dumps(prompt, ensure_ascii=False))))

    assert row["prompt"]["6"]["inputs"]["text"] == "夜の街, neon — rain"


def test_png_without_comfyui_chunks_is_skipped_as_an_image_without_a_workflow(tmp_path):
    skipped = read_skipped(tmp_path, "a1111.png", png.png(png.text("parameters", "1girl, Steps: 20")))

    assert skipped.category == "PNG without a workflow"
    assert str(skipped) == "PNG without a ComfyUI 'workflow' or 'prompt' text chunk"


def test_png_text_chunk_with_a_wrong_crc_is_refused(tmp_path):
    data = b"prompt\0" + API_TEXT.encode()
    content = png.png(png.chunk(b"tEXt", data, crc=0))

    skipped = read_skipped(tmp_path, "corrupt.png", content)

    assert skipped.category == "corrupt PNG" and "CRC mismatch" in str(skipped)


def test_png_text_that_inflates_above_the_cap_is_refused_without_inflating_it(tmp_path):
    bomb = png.png(png.ztxt("workflow", " " * 200_000))

    skipped = read_skipped(tmp_path, "bomb.png", bomb, max_bytes=50_000)

    assert len(bomb) < 50_000
    assert skipped.category == "above MaxFileBytes" and "inflates above MaxFileBytes (50000)" in str(skipped)


def test_png_with_a_broken_workflow_chunk_keeps_its_valid_prompt(tmp_path):
    content = png.png(png.text("workflow", "{broken"), png.text("prompt", API_TEXT))

    row, models = read_and_map(tmp_path, "half.png", content)

    assert row["format"] == "png-api" and row["workflow"] is None
    assert models == SAMPLE_MODELS


def test_png_whose_chunks_are_both_unusable_is_skipped_as_not_a_workflow(tmp_path):
    content = png.png(png.text("workflow", "{broken"), png.text("prompt", "[1, 2]"))

    skipped = read_skipped(tmp_path, "useless.png", content)

    assert skipped.category == "not a workflow"
    assert "'workflow' chunk: Expecting property name" in str(skipped)
    assert "'prompt' chunk: JSON list, not a workflow object" in str(skipped)


def test_nan_infinity_and_integers_beyond_64_bits_become_storable_values():
    parsed = parse_json('{"a": NaN, "b": [Infinity, -Infinity], "c": 18446744073709551615, '
                        '"d": 18446744073709551616, "e": "x\\u0000y", "f": 1.5}')

    assert parsed == {"a": None, "b": [None, None], "c": 18446744073709551615, "d": "18446744073709551616",
                      "e": "xy", "f": 1.5}


@pytest.mark.parametrize(
    ("content", "category", "reason"),
    [
        pytest.param(b"{not json", "not valid JSON", "not valid JSON: Expecting property name", id="broken"),
        pytest.param(b"\xff\xfe{}", "not valid JSON", "not valid JSON: 'utf-8' codec can't decode", id="not-utf8"),
        pytest.param(b"[1, 2, 3]", "not a workflow", "JSON list, not a workflow object", id="list"),
        pytest.param(b'{"theme": "dark", "fontSize": 12}', "not a workflow",
                     "JSON object with neither a 'nodes' list nor API nodes with class_type (theme, fontSize)",
                     id="settings-file"),
        pytest.param(b"{}", "not a workflow", "(no keys)", id="empty-object"),
        pytest.param(b'{"3": {"inputs": {}}}', "not a workflow", "nor API nodes with class_type", id="no-class-type"),
    ],
)
def test_json_that_is_not_a_workflow_is_skipped_with_its_reason(tmp_path, content, category, reason):
    skipped = read_skipped(tmp_path, "x.json", content)

    assert skipped.category == category
    assert reason in str(skipped)


def test_a_file_grown_above_the_cap_after_the_scan_is_not_read(tmp_path):
    skipped = read_skipped(tmp_path, "big.json", UI_TEXT.encode(), max_bytes=1000)

    assert skipped.category == "above MaxFileBytes"
    assert f"{len(UI_TEXT.encode())} bytes is above MaxFileBytes (1000)" == str(skipped)


def test_a_file_swapped_for_a_symlink_leaving_the_root_is_not_opened(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside.json"
    root.mkdir()
    outside.write_text(UI_TEXT)
    (root / "swapped.json").symlink_to(outside)

    with pytest.raises(SkippedFile) as info, open_within(str(root), "swapped.json", 10**6):
        pass

    assert info.value.category == "symlink leaving its root"
    assert str(outside) in str(info.value)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.json")

    with pytest.raises(SkippedFile, match="not a regular file"):
        read_workflow_file(str(tmp_path), "pipe.json", 10**6)


# ---------------------------------------------------------------------------------------------------------------
# model references
# ---------------------------------------------------------------------------------------------------------------


def ui_node(node_id: Any, node_type: str, widgets: Any, mode: int = 0) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "mode": mode, "widgets_values": widgets}


def refs(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["node_id"], r["class_type"], r["input_name"], r["folder"], r["file_name"]) for r in found]


def test_ui_loader_widgets_are_read_by_position_with_the_servers_folder_names():
    workflow = {"nodes": [
        ui_node(1, "CheckpointLoader", ["v1-inference.yaml", "sd15.ckpt"]),
        ui_node(2, "UNETLoader", ["flux1-dev.safetensors", "fp8_e4m3fn"]),
        ui_node(3, "DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"]),
        ui_node(4, "CLIPVisionLoader", ["clip_vision_h.safetensors"]),
        ui_node(5, "UpscaleModelLoader", ["4x-UltraSharp.pth"]),
        ui_node(6, "VAELoader", ["ae.safetensors"], mode=2),
        ui_node(7, "ControlNetLoader", ["control_v11p_sd15_canny.pth"]),
        ui_node(8, "LoraLoaderModelOnly", ["None", 1.0]),
    ]}

    assert refs(ui_model_references(workflow)) == [
        ("1", "CheckpointLoader", "config_name", "configs", "v1-inference.yaml"),
        ("1", "CheckpointLoader", "ckpt_name", "checkpoints", "sd15.ckpt"),
        ("2", "UNETLoader", "unet_name", "diffusion_models", "flux1-dev.safetensors"),
        ("3", "DualCLIPLoader", "clip_name1", "text_encoders", "clip_l.safetensors"),
        ("3", "DualCLIPLoader", "clip_name2", "text_encoders", "t5xxl_fp16.safetensors"),
        ("4", "CLIPVisionLoader", "clip_name", "clip_vision", "clip_vision_h.safetensors"),
        ("5", "UpscaleModelLoader", "model_name", "upscale_models", "4x-UltraSharp.pth"),
        ("6", "VAELoader", "vae_name", "vae", "ae.safetensors"),
        ("7", "ControlNetLoader", "control_net_name", "controlnet", "control_v11p_sd15_canny.pth"),
    ]


def test_ui_custom_nodes_contribute_widget_values_that_look_like_model_files():
    workflow = {"nodes": [
        ui_node(20, "SAMLoader", ["sam_vit_b_01ec64.pth", "AUTO"]),
        ui_node(21, "IPAdapterModelLoader", {"ipadapter_file": "ip-adapter_sdxl.safetensors", "weight": 1}),
        ui_node(22, "Note", ["remember to download x.safetensors"]),
        ui_node(23, "KSampler", [1, "randomize", 20, 7.0, "euler", "normal", 1.0]),
        ui_node(24, "LoadImage", ["example.png", "image"]),
    ]}

    assert refs(ui_model_references(workflow)) == [
        ("20", "SAMLoader", "widgets_values[0]", None, "sam_vit_b_01ec64.pth"),
        ("21", "IPAdapterModelLoader", "ipadapter_file", None, "ip-adapter_sdxl.safetensors"),
    ]


def test_ui_subgraph_inner_nodes_count_as_types_and_references():
    subgraph_id = "a7f3c2d1-0000-4000-8000-000000000001"
    workflow = {
        "nodes": [ui_node(5, subgraph_id, []), ui_node(6, "SaveImage", ["ComfyUI"])],
        "definitions": {"subgraphs": [
            {"id": subgraph_id, "nodes": [ui_node(1, "LoraLoader", ["x.safetensors", 1, 1])]}]},
    }
    record = {"root": "/r", "path": "sub.json", "size": 1, "mtime_ns": MTIME_NS, "format": "ui",
              "workflow": workflow, "prompt": None}

    mapped = map_workflow(record)

    assert mapped.row["node_types"] == ["LoraLoader", "SaveImage"] and mapped.row["node_count"] == 2
    assert refs(mapped.children[comfyui_workflow_models]) == [
        (f"{subgraph_id}:1", "LoraLoader", "lora_name", "loras", "x.safetensors")]


def test_api_inputs_skip_links_numbers_and_names_that_are_not_model_files():
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["9", 0]}},
        "2": {"class_type": "OpenAIChatNode", "inputs": {"model_name": "gpt-4o", "seed": 3}},
        "3": {"class_type": "UltralyticsDetectorProvider", "inputs": {"model_name": "bbox/face_yolov8m.pt"}},
        "4": {"class_type": "LoraLoader", "inputs": {"lora_name": "SDXL\\add-detail-xl.safetensors"}},
    }

    found = api_model_references(prompt)

    assert refs(found) == [
        ("3", "UltralyticsDetectorProvider", "model_name", None, "bbox/face_yolov8m.pt"),
        ("4", "LoraLoader", "lora_name", "loras", "SDXL\\add-detail-xl.safetensors"),
    ]
    assert [r["base_name"] for r in found] == ["face_yolov8m.pt", "add-detail-xl.safetensors"]


# ---------------------------------------------------------------------------------------------------------------
# node types (object_info_excerpt.json)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    return fixture("object_info_excerpt.json")


def test_ksampler_node_type_maps_every_column(object_info):
    info = object_info["KSampler"]

    row = map_node_type("KSampler", info)

    assert row == {
        "class_name": "KSampler",
        "display_name": "KSampler",
        "category": "sampling",
        "python_module": "nodes",
        "node_pack": "comfy-core",
        "output_node": False,
        "inputs": info["input"],
        "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                     "negative", "latent_image", "denoise"]},
        "outputs": [{"type": "LATENT", "name": "LATENT", "is_list": False, "tooltip": "The denoised latent."}],
        "model_inputs": {},
        "description": "Uses the provided model, positive and negative conditioning to denoise the latent image.",
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    }
    assert row["inputs"]["required"]["seed"][1]["max"] == 18446744073709551615


def test_loader_node_types_offer_their_model_lists(object_info):
    checkpoint = map_node_type("CheckpointLoaderSimple", object_info["CheckpointLoaderSimple"])
    lora = map_node_type("LoraLoader", object_info["LoraLoader"])
    vae = map_node_type("VAELoader", object_info["VAELoader"])

    assert checkpoint["model_inputs"] == {"ckpt_name": {"folder": "checkpoints", "choices": [
        "SDXL/illustriousXL_v01.safetensors", "sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly-fp16.safetensors"]}}
    assert [o["name"] for o in checkpoint["outputs"]] == ["MODEL", "CLIP", "VAE"]
    assert checkpoint["display_name"] == "Load Checkpoint" and checkpoint["category"] == "loaders"
    assert lora["model_inputs"] == {"lora_name": {"folder": "loras", "choices": [
        "SDXL/add-detail-xl.safetensors", "pixel-art-xl.safetensors"]}}
    assert vae["model_inputs"] == {"vae_name": {"folder": "vae", "choices": [
        "sdxl_vae.safetensors", "taesd", "taesdxl"]}}
    assert vae["description"] is None  # "" in the payload
    assert vae["outputs"] == [{"type": "VAE", "name": "VAE", "is_list": False, "tooltip": None}]


def test_v3_combo_node_type_reads_options_and_its_flags(object_info):
    row = map_node_type("UpscaleModelLoader", object_info["UpscaleModelLoader"])

    assert row["model_inputs"] == {"model_name": {"folder": "upscale_models",
                                                  "choices": ["4x-UltraSharp.pth", "RealESRGAN_x4plus.pth"]}}
    assert (row["python_module"], row["node_pack"]) == ("comfy_extras.nodes_upscale_model", "comfy-core")
    assert (row["deprecated"], row["experimental"], row["api_node"]) == (False, False, False)
    assert row["outputs"] == [{"type": "UPSCALE_MODEL", "name": "UPSCALE_MODEL", "is_list": False, "tooltip": None}]


def test_output_node_with_hidden_inputs_and_no_outputs(object_info):
    row = map_node_type("SaveImage", object_info["SaveImage"])

    assert row["output_node"] is True and row["outputs"] == []
    assert row["inputs"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert row["input_order"]["hidden"] == ["prompt", "extra_pnginfo"]
    assert row["model_inputs"] == {}


def test_custom_node_type_names_its_pack_and_list_outputs(object_info):
    row = map_node_type("FaceDetailer", object_info["FaceDetailer"])

    assert (row["python_module"], row["node_pack"]) == ("custom_nodes.comfyui-impact-pack", "comfyui-impact-pack")
    assert row["category"] == "ImpactPack/Simple"
    assert [(o["name"], o["type"], o["is_list"]) for o in row["outputs"]] == [
        ("image", "IMAGE", False), ("cropped_refined", "IMAGE", True), ("cropped_enhanced_alpha", "IMAGE", True),
        ("mask", "MASK", False), ("detailer_pipe", "DETAILER_PIPE", False), ("cnet_images", "IMAGE", True)]
    assert row["model_inputs"] == {}  # sampler_name is a combo, but not of model files
    assert row["inputs"]["optional"] == {"sam_model_opt": ["SAM_MODEL"], "detailer_hook": ["DETAILER_HOOK"]}


def test_deprecated_and_experimental_flags_are_kept():
    row = map_node_type("OldNode", {"input": {}, "deprecated": True, "experimental": True, "api_node": True})

    assert (row["deprecated"], row["experimental"], row["api_node"]) == (True, True, True)
    assert row["display_name"] is None and row["node_pack"] is None and row["outputs"] == []


def test_node_type_that_is_not_an_object_fails():
    with pytest.raises(RecordError, match="'Broken': list, not an object"):
        map_node_type("Broken", [])


# ---------------------------------------------------------------------------------------------------------------
# model files and system stats
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subdirectory", "base"),
    [
        ("sd_xl_base_1.0.safetensors", None, "sd_xl_base_1.0.safetensors"),
        ("SDXL/illustriousXL_v01.safetensors", "SDXL", "illustriousXL_v01.safetensors"),
        ("SDXL\\pony\\x.safetensors", "SDXL/pony", "x.safetensors"),
    ],
    ids=["top-level", "subdirectory", "windows-server"],
)
def test_model_file_keeps_the_listed_name_and_splits_its_subdirectory(name, subdirectory, base):
    assert map_model_file("checkpoints", name) == {
        "folder": "checkpoints", "file_name": name, "subdirectory": subdirectory, "base_name": base}


def test_model_file_entry_that_is_not_a_name_fails():
    with pytest.raises(RecordError, match="model folder 'loras': entry 42 is not a file name"):
        map_model_file("loras", 42)


def test_system_stats_in_the_report_leave_out_the_servers_command_line():
    stats = fixture("system_stats.json")

    summary = system_summary(stats)

    assert "argv" not in summary["system"]
    assert summary["system"]["comfyui_version"] == "0.3.64"
    assert summary["devices"] == stats["devices"]


# ---------------------------------------------------------------------------------------------------------------
# scanning roots
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("**/*.json", ["a.json", "x/y/a.json", "A.JSON"], ["a.png", "a.json.bak"]),
        ("*.png", ["a.png", "deep/er/a.PNG"], ["a.png.txt"]),
        ("flows/*.json", ["flows/a.json"], ["a.json", "x/flows/a.json", "flows/x/a.json"]),
        ("/top.json", ["top.json"], ["x/top.json"]),
        ("old/**", ["old/a.json", "old/x/b.png"], ["older/a.json"]),
        ("**/.git/**", [".git/a.json", "x/.git/b.json"], ["x/git/b.json"]),
        ("temp_[0-9].json", ["temp_1.json"], ["temp_a.json"]),
        ("draft?.json", ["draft1.json"], ["draft.json", "draft12.json"]),
    ],
)
def test_glob_patterns(pattern, matching, not_matching):
    patterns = GlobSet((pattern,))

    assert [p for p in matching if patterns.matches(p)] == matching
    assert [p for p in not_matching if patterns.matches(p)] == []


def scan(root: Path, include=("**/*.json", "**/*.png"), exclude=(), max_bytes=10**6):
    return scan_root(str(root), GlobSet(tuple(include)), GlobSet(tuple(exclude)), max_bytes, 400)


def test_scan_lists_matching_files_and_explains_each_one_it_will_not_read(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    (root / "a.json").write_text("{}")
    (root / "sub" / "b.png").write_bytes(b"x")
    (root / "notes.txt").write_text("ignored")
    (root / "big.json").write_bytes(b" " * 2000)
    (root / "escape.json").symlink_to(outside / "secret.json")
    (root / "inside.json").symlink_to(root / "a.json")
    (root / "dangling.json").symlink_to(root / "gone.json")
    (root / "linked_dir").symlink_to(outside)
    (root / "sub_again").symlink_to(root / "sub")

    result = scan(root, max_bytes=1000)

    found = {f.relative_path: (f.category, f.problem) for f in result.files}
    assert found == {
        "a.json": (None, None),
        "big.json": ("above MaxFileBytes", "2000 bytes is above MaxFileBytes (1000)"),
        "dangling.json": ("unreadable", f"broken symlink (-> {root / 'gone.json'}): No such file or directory"),
        "escape.json": ("symlink leaving its root", f"symlink leaves its root (-> {outside / 'secret.json'})"),
        "inside.json": (None, None),
        "sub/b.png": (None, None),
    }
    assert result.outside_dir_links == [f"linked_dir -> {outside}"]
    assert result.complete


def test_scan_prunes_excluded_directories_and_skips_excluded_files(tmp_path):
    for relative in ("keep.json", "old/a.json", "old/deep/b.json", "x.tmp.json"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("{}")

    result = scan(tmp_path, exclude=("old/**", "*.tmp.json"))

    assert [f.relative_path for f in result.files] == ["keep.json"]


def test_scan_of_a_missing_root_raises(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        scan(tmp_path / "nope")


def test_scan_refuses_paths_too_long_for_the_catalog_key(tmp_path):
    (tmp_path / ("w" * 60 + ".json")).write_text("{}")

    result = scan_root(str(tmp_path), GlobSet(("*.json",)), GlobSet(()), 10**6, 50)

    assert [f.category for f in result.files] == ["unreadable"]
    assert "longer than the catalog key allows (50 characters)" in result.files[0].problem


# ---------------------------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------------------------


def test_default_settings_read_the_local_server_and_no_directories():
    settings = load_source_settings({}).source("comfyui")

    assert settings.base_url == "http://127.0.0.1:8188"
    assert settings.workflow_dirs == [] and settings.exclude == []
    assert settings.include == ["**/*.json", "**/*.png"]
    assert settings.max_file_bytes == 20 * 1024 * 1024 and settings.files_per_page == 200
    assert settings.skip_model_folders == ["custom_nodes"]
    assert load_source_settings({}).schedules["comfyui"].enabled is True


def test_environment_lists_are_comma_separated_and_dirs_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_source_settings({
        "Sources__ComfyUI__WorkflowDirs": "flows, /srv/comfy/output/ ,flows",
        "Sources__ComfyUI__Exclude": "old/**,*.tmp.json",
        "Sources__ComfyUI__BaseUrl": "http://gpu-box:8188/",
    }).source("comfyui")

    assert settings.workflow_dirs == [str(tmp_path / "flows"), "/srv/comfy/output"]
    assert settings.exclude == ["old/**", "*.tmp.json"]
    assert settings.base_url == "http://gpu-box:8188"


def test_empty_base_url_turns_the_server_part_off():
    assert load_source_settings({"Sources__ComfyUI__BaseUrl": ""}).source("comfyui").base_url == ""


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("BaseUrl", "gpu-box:8188", "'gpu-box:8188' is not an http(s) URL"),
        ("MaxFileBytes", "0", "greater than 0"),
        ("Include", "", "at least 1 item"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(key, value, message):
    with pytest.raises(ConfigError) as info:
        load_source_settings({f"Sources__ComfyUI__{key}": value})

    [problem] = info.value.problems
    assert problem.origin == f"environment variable Sources__ComfyUI__{key}"
    assert message in problem.message
