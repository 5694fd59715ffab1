"""Ollama record mapping: /api/tags entries and /api/show answers to ollama_models columns."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from umlmm_pipelines.ingestion.source import RecordError
from umlmm_pipelines.sources.ollama import (
    context_length,
    map_model,
    modelfile_from,
    parse_parameters,
    parse_timestamp,
    split_name,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ollama"
HOST = "http://127.0.0.1:11434"
LLAMA_BLOB = "dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff"
LLAMA_STOPS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def listing(name: str) -> dict[str, Any]:
    [entry] = [m for m in load("api_tags.json")["models"] if m["name"] == name]
    return entry


@pytest.fixture
def show() -> dict[str, Any]:
    return load("api_show.json")


# ---------------------------------------------------------------------------------------------------------------
# every field of every /api/tags sample
# ---------------------------------------------------------------------------------------------------------------


def test_maps_qwen3_listing_without_show():
    row = map_model(HOST, listing("qwen3:8b"), None)

    assert row == {
        "host": HOST,
        "name": "qwen3:8b",
        "model": "qwen3",
        "tag": "8b",
        "digest": "500a1f067a9f782620b40bee6f7b0c89e17ae61f686b92c24933e4ca4b2b8b41",
        "size": 5225388164,
        "modified_at": datetime(2025, 10, 14, 7, 12, 3, 418067, tzinfo=UTC),
        "format": "gguf",
        "family": "qwen3",
        "families": ["qwen3"],
        "parameter_size": "8.2B",
        "quantization_level": "Q4_K_M",
        "capabilities": ["completion", "tools", "thinking"],
        "context_length": None,
        "remote_model": None,
        "remote_host": None,
        "parent": None,
        "blob_digest": None,
        "parameters": None,
        "template": None,
        "system": None,
        "license": None,
        "model_info": None,
    }


def test_maps_llama32_listing_with_show(show):
    row = map_model(HOST, listing("llama3.2:latest"), show)

    assert row == {
        "host": HOST,
        "name": "llama3.2:latest",
        "model": "llama3.2",
        "tag": "latest",
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "size": 2019393189,
        "modified_at": datetime(2025, 5, 5, 0, 37, 44, 706015, tzinfo=UTC),
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
        "capabilities": ["completion", "tools"],
        "context_length": 131072,
        "remote_model": None,
        "remote_host": None,
        "parent": f"/root/.ollama/models/blobs/sha256-{LLAMA_BLOB}",
        "blob_digest": f"sha256:{LLAMA_BLOB}",
        "parameters": {"stop": LLAMA_STOPS},
        "template": show["template"],
        "system": None,
        "license": show["license"],
        "model_info": show["model_info"],
    }


def test_maps_hugging_face_registry_model():
    row = map_model(HOST, listing("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0"), None)

    assert row == {
        "host": HOST,
        "name": "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
        "model": "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF",
        "tag": "Q8_0",
        "digest": "7a5f1e4a6b0c7ed9d8e2b1f9c3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
        "size": 1321083280,
        "modified_at": datetime(2025, 3, 2, 11, 20, 51, tzinfo=UTC),
        "format": "gguf",
        "family": "llama",
        "families": None,
        "parameter_size": "1.24B",
        "quantization_level": "Q8_0",
        "capabilities": None,
        "context_length": None,
        "remote_model": None,
        "remote_host": None,
        "parent": None,
        "blob_digest": None,
        "parameters": None,
        "template": None,
        "system": None,
        "license": None,
        "model_info": None,
    }


def test_maps_cloud_stub():
    row = map_model(HOST, listing("gpt-oss:120b-cloud"), None)

    assert row == {
        "host": HOST,
        "name": "gpt-oss:120b-cloud",
        "model": "gpt-oss",
        "tag": "120b-cloud",
        "digest": "569662207105a5e2e1b5a5f0cd4d0c6e5bd1a0cf2ee3c1b2b1d0f5f6e8a9b0c1",
        "size": 384,
        "modified_at": datetime(2025, 9, 23, 22, 2, 11, 183724, tzinfo=UTC),
        "format": None,
        "family": "gptoss",
        "families": None,
        "parameter_size": "116.8B",
        "quantization_level": "MXFP4",
        "capabilities": None,
        "context_length": None,
        "remote_model": "gpt-oss:120b",
        "remote_host": "https://ollama.com:443",
        "parent": None,
        "blob_digest": None,
        "parameters": None,
        "template": None,
        "system": None,
        "license": None,
        "model_info": None,
    }


@pytest.mark.parametrize("entry", load("api_tags.json")["models"], ids=lambda m: m["name"])
def test_every_listing_maps_to_an_aware_utc_modified_at(entry):
    modified_at = map_model(HOST, entry, None)["modified_at"]

    assert modified_at.tzinfo is not None
    assert modified_at.utcoffset() == timedelta(0)


def test_mapping_does_not_modify_its_inputs(show):
    entry = listing("llama3.2:latest")
    before = (copy.deepcopy(entry), copy.deepcopy(show))

    map_model(HOST, entry, show)

    assert (entry, show) == before


# ---------------------------------------------------------------------------------------------------------------
# individual fields
# ---------------------------------------------------------------------------------------------------------------


def test_host_is_kept_as_given():
    assert map_model("http://gpu-box:11434", listing("qwen3:8b"), None)["host"] == "http://gpu-box:11434"


def test_empty_format_becomes_none():
    assert map_model(HOST, listing("gpt-oss:120b-cloud"), None)["format"] is None


def test_null_families_stays_none():
    assert map_model(HOST, listing("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0"), None)["families"] is None


def test_capabilities_come_from_the_listing_when_show_has_none(show):
    del show["capabilities"]

    row = map_model(HOST, listing("qwen3:8b"), show)

    assert row["capabilities"] == ["completion", "tools", "thinking"]


def test_capabilities_from_show_win_over_the_listing(show):
    row = map_model(HOST, listing("qwen3:8b"), show)

    assert row["capabilities"] == ["completion", "tools"]


def test_context_length_comes_from_model_info(show):
    assert map_model(HOST, listing("llama3.2:latest"), show)["context_length"] == 131072


def test_model_info_is_kept_whole(show):
    model_info = map_model(HOST, listing("llama3.2:latest"), show)["model_info"]

    assert model_info == show["model_info"]
    assert len(model_info) == 30
    assert model_info["general.parameter_count"] == 3212749888
    assert model_info["tokenizer.ggml.tokens"] == []
    assert model_info["llama.attention.layer_norm_rms_epsilon"] == 1e-05


def test_parent_and_blob_digest_come_from_the_modelfile_from_line(show):
    row = map_model(HOST, listing("llama3.2:latest"), show)

    assert row["parent"] == f"/root/.ollama/models/blobs/sha256-{LLAMA_BLOB}"
    assert row["blob_digest"] == f"sha256:{LLAMA_BLOB}"


def test_parent_falls_back_to_details_parent_model():
    entry = listing("qwen3:8b")
    entry["details"]["parent_model"] = "qwen3:latest"

    row = map_model(HOST, entry, None)

    assert row["parent"] == "qwen3:latest"
    assert row["blob_digest"] is None


def test_parameters_are_parsed_into_lists_of_stop_tokens(show):
    assert map_model(HOST, listing("llama3.2:latest"), show)["parameters"] == {"stop": LLAMA_STOPS}


def test_template_and_license_come_from_show(show):
    row = map_model(HOST, listing("llama3.2:latest"), show)

    assert row["template"].startswith("<|start_header_id|>system<|end_header_id|>")
    assert row["template"] == show["template"]
    assert row["license"].startswith("LLAMA 3.2 COMMUNITY LICENSE AGREEMENT")


def test_system_comes_from_show(show):
    show["system"] = "You are a helpful assistant."

    assert map_model(HOST, listing("llama3.2:latest"), show)["system"] == "You are a helpful assistant."


def test_modified_at_falls_back_to_show():
    entry = listing("llama3.2:latest")
    del entry["modified_at"]

    row = map_model(HOST, entry, {"modified_at": "2025-05-04T17:37:44.706015396-07:00"})

    assert row["modified_at"] == datetime(2025, 5, 5, 0, 37, 44, 706015, tzinfo=UTC)


def test_sha256_prefix_is_removed_from_the_digest():
    entry = listing("qwen3:8b")
    entry["digest"] = "sha256:" + entry["digest"]

    assert map_model(HOST, entry, None)["digest"] == "500a1f067a9f782620b40bee6f7b0c89e17ae61f686b92c24933e4ca4b2b8b41"


def test_listing_without_digest_raises_record_error():
    entry = listing("qwen3:8b")
    del entry["digest"]

    with pytest.raises(RecordError, match="qwen3:8b"):
        map_model(HOST, entry, None)


@pytest.mark.parametrize("digest", ["", None])
def test_listing_with_empty_digest_raises_record_error(digest):
    entry = listing("qwen3:8b")
    entry["digest"] = digest

    with pytest.raises(RecordError, match="no digest"):
        map_model(HOST, entry, None)


@pytest.mark.parametrize("entry", load("api_ps.json")["models"], ids=lambda m: m["name"])
def test_ps_entries_without_modified_at_or_capabilities_still_map(entry):
    row = map_model(HOST, entry, None)

    assert (row["name"], row["digest"], row["size"]) == (entry["name"], entry["digest"], entry["size"])
    assert (row["model"], row["tag"]) == split_name(entry["name"])
    assert row["family"] == entry["details"]["family"]
    assert row["families"] == entry["details"]["families"]
    assert row["quantization_level"] == entry["details"]["quantization_level"]
    assert row["modified_at"] is None
    assert row["capabilities"] is None


# ---------------------------------------------------------------------------------------------------------------
# split_name
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("qwen3:8b", ("qwen3", "8b")),
        ("llama3.2:latest", ("llama3.2", "latest")),
        ("gpt-oss:120b-cloud", ("gpt-oss", "120b-cloud")),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0", ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", "Q8_0")),
        ("user/model:tag", ("user/model", "tag")),
        ("nomic-embed-text", ("nomic-embed-text", "latest")),
        ("hf.co/org/repo", ("hf.co/org/repo", "latest")),
        ("localhost:5000/foo", ("localhost:5000/foo", "latest")),
        ("localhost:5000/foo:v1", ("localhost:5000/foo", "v1")),
    ],
)
def test_split_name(name, expected):
    assert split_name(name) == expected


# ---------------------------------------------------------------------------------------------------------------
# modelfile_from
# ---------------------------------------------------------------------------------------------------------------


def test_modelfile_from_ignores_the_commented_from_line(show):
    assert modelfile_from(show["modelfile"]) == f"/root/.ollama/models/blobs/sha256-{LLAMA_BLOB}"


def test_modelfile_from_accepts_lowercase_instruction():
    assert modelfile_from("# comment\nfrom   llama3.2:latest  \nPARAMETER stop x\n") == "llama3.2:latest"


@pytest.mark.parametrize("modelfile", ["", "# FROM llama3.2:latest\nPARAMETER stop x\n"])
def test_modelfile_without_from_line_gives_none(modelfile):
    assert modelfile_from(modelfile) is None


# ---------------------------------------------------------------------------------------------------------------
# parse_parameters
# ---------------------------------------------------------------------------------------------------------------


def test_parse_parameters_of_the_show_sample(show):
    assert parse_parameters(show["parameters"]) == {"stop": LLAMA_STOPS}


def test_parse_parameters_reads_numbers():
    parsed = parse_parameters("temperature                    0.7\nnum_ctx                        4096")

    assert parsed == {"temperature": 0.7, "num_ctx": 4096}
    assert isinstance(parsed["temperature"], float)
    assert isinstance(parsed["num_ctx"], int)


def test_parse_parameters_reads_booleans_and_quoted_strings():
    assert parse_parameters('use_mmap                       false\nsystem_hint                    "be brief"') == {
        "use_mmap": False, "system_hint": "be brief"}


def test_parse_parameters_single_stop_is_still_a_list():
    assert parse_parameters('stop                           "</s>"') == {"stop": ["</s>"]}


def test_parse_parameters_repeated_non_stop_key_becomes_a_list():
    parsed = parse_parameters("num_gpu 1\nnum_gpu 2\nnum_gpu 3\ntemperature 0.2")

    assert parsed == {"num_gpu": [1, 2, 3], "temperature": 0.2}


def test_parse_parameters_skips_blank_lines():
    assert parse_parameters("\n  \ntop_k 40\n\n") == {"top_k": 40}


@pytest.mark.parametrize("text", [None, ""])
def test_parse_parameters_of_nothing_is_empty(text):
    assert parse_parameters(text) == {}


# ---------------------------------------------------------------------------------------------------------------
# parse_timestamp
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2025-05-10T08:06:48.639712648-07:00", datetime(2025, 5, 10, 15, 6, 48, 639712, tzinfo=UTC),
                     id="nine-digits-negative-offset"),
        pytest.param("2025-10-14T09:12:03.41806712+02:00", datetime(2025, 10, 14, 7, 12, 3, 418067, tzinfo=UTC),
                     id="eight-digits-positive-offset"),
        pytest.param("2025-03-02T11:20:51Z", datetime(2025, 3, 2, 11, 20, 51, tzinfo=UTC), id="zulu-no-fraction"),
        pytest.param("2025-03-02T11:20:51.5Z", datetime(2025, 3, 2, 11, 20, 51, 500000, tzinfo=UTC),
                     id="one-digit-zulu"),
        pytest.param("2025-09-23T15:02:11.183724-07:00", datetime(2025, 9, 23, 22, 2, 11, 183724, tzinfo=UTC),
                     id="six-digits"),
        pytest.param("2025-12-31T23:30:00-01:00", datetime(2026, 1, 1, 0, 30, tzinfo=UTC), id="crosses-new-year"),
        pytest.param("2318-01-22T07:39:56.262937102+01:00", datetime(2318, 1, 22, 6, 39, 56, 262937, tzinfo=UTC),
                     id="far-future-keep-alive"),
        pytest.param("2025-03-02T11:20:51", datetime(2025, 3, 2, 11, 20, 51, tzinfo=UTC), id="naive-is-utc"),
    ],
)
def test_parse_timestamp(text, expected):
    parsed = parse_timestamp(text)

    assert parsed == expected
    assert parsed.tzinfo == UTC


def test_parse_timestamp_converts_rather_than_relabels_the_offset():
    parsed = parse_timestamp("2025-05-10T08:06:48-07:00")

    assert parsed == datetime(2025, 5, 10, 8, 6, 48, tzinfo=timezone(timedelta(hours=-7)))
    assert parsed.hour == 15


@pytest.mark.parametrize("text", [None, ""])
def test_parse_timestamp_of_nothing_is_none(text):
    assert parse_timestamp(text) is None


# ---------------------------------------------------------------------------------------------------------------
# context_length
# ---------------------------------------------------------------------------------------------------------------


def test_context_length_from_model_info(show):
    assert context_length(show["details"], show["model_info"]) == 131072


def test_context_length_from_details_wins():
    assert context_length({"context_length": 8192}, {"llama.context_length": 131072}) == 8192


def test_context_length_ignores_non_integer_values():
    assert context_length({"context_length": "8192"}, {"qwen3.context_length": "big"}) is None


@pytest.mark.parametrize("model_info", [None, {}, {"general.architecture": "llama"}])
def test_context_length_missing_is_none(model_info):
    assert context_length({}, model_info) is None
