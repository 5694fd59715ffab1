"""CivitAI mapping: every field of the recorded payloads, and the odd shapes the API is known to send."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import dagster as dg
import pytest

from umlmm_pipelines.config.errors import ConfigError
from umlmm_pipelines.definitions import load_source_settings
from umlmm_pipelines.ingestion.source import RecordError
from umlmm_pipelines.sources.civitai import (
    CHILD_TABLES,
    MODEL_TYPES,
    SOURCE,
    CivitAISettings,
    WalkState,
    civitai_model_files,
    civitai_model_images,
    civitai_model_versions,
    commercial_use,
    map_image,
    map_model,
    map_version,
    without_counters,
)
from umlmm_pipelines_tests.fakes.civitai_server import fixture_models, load_fixture

CHECKPOINT, LORA, ARCHIVED = 0, 1, 2


def _model(which: int) -> dict:
    return fixture_models()[which]


def _children(mapped, table) -> list[dict]:
    return mapped.children[table]


def test_checkpoint_model_columns_come_from_every_field_of_the_listing() -> None:
    row = map_model(_model(CHECKPOINT)).row

    assert row == {
        "model_id": 827184,
        "name": "WAI-illustrious-SDXL",
        "description": "<p>Illustrious-based anime checkpoint. Recommended: Euler a, 25-30 steps, CFG 5-7.</p>",
        "type": "Checkpoint",
        "nsfw": False,
        "nsfw_level": 31,
        "poi": False,
        "minor": False,
        "sfw_only": False,
        "availability": "Public",
        "mode": None,
        "user_id": 2084451,
        "creator_username": "WAI0731",
        "creator_image": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/7f0e2a5c-3b1d-4c9e-9f2a-1b2c3d4e5f60/"
                         "width=96/WAI0731.jpeg",
        "tags": ["anime", "base model", "illustration", "illustrious"],
        "base_models": ["Illustrious"],
        "allow_no_credit": True,
        "allow_commercial_use": ["Image", "RentCivit"],
        "allow_derivatives": True,
        "allow_different_license": True,
        "supports_generation": True,
        "cosmetic": None,
        "download_count": 1272529,
        "thumbs_up_count": 79272,
        "thumbs_down_count": 202,
        "comment_count": 1931,
        "tipped_amount_count": 156742,
        "favorite_count": None,
        "rating_count": None,
        "rating": None,
        "stats": {"downloadCount": 1272529, "thumbsUpCount": 79272, "thumbsDownCount": 202, "commentCount": 1931,
                  "tippedAmountCount": 156742},
        "version_count": 2,
        "latest_version_id": 2514310,
        "latest_published_at": datetime(2025, 12, 18, 9, 16, 12, 62000, tzinfo=UTC),
    }


def test_versions_of_a_model_are_rows_with_their_own_fields_newest_first() -> None:
    versions = _children(map_model(_model(CHECKPOINT)), civitai_model_versions)

    assert [v["version_id"] for v in versions] == [2514310, 2283012]
    newest = versions[0]
    assert {k: v for k, v in newest.items() if k != "raw"} == {
        "model_id": 827184,
        "version_id": 2514310,
        "position": 0,
        "name": "v16.0",
        "base_model": "Illustrious",
        "base_model_type": "Standard",
        "trained_words": [],
        "published_at": datetime(2025, 12, 18, 9, 16, 12, 62000, tzinfo=UTC),
        "created_at": None,  # the listing has no createdAt/updatedAt/status; /model-versions/{id} does
        "updated_at": None,
        "status": None,
        "availability": "Public",
        "nsfw_level": 3,
        "description": None,
        "download_url": "https://civitai.com/api/download/models/2514310",
        "early_access_ends_at": None,
        "early_access_config": None,
        "vae_id": None,
        "supports_generation": True,
        "air": None,
        "download_count": 215627,
        "thumbs_up_count": 13828,
        "thumbs_down_count": 22,
        "stats": {"downloadCount": 215627, "thumbsUpCount": 13828, "thumbsDownCount": 22},
    }
    assert "files" not in newest["raw"] and "images" not in newest["raw"] and newest["raw"]["flags"] == 0
    assert versions[1]["description"] == "<p>Fixed hands.</p>" and versions[1]["position"] == 1


def test_a_file_carries_all_six_hashes_in_their_own_columns() -> None:
    files = _children(map_model(_model(CHECKPOINT)), civitai_model_files)

    primary = next(f for f in files if f["file_id"] == 2402203)
    assert {k: v for k, v in primary.items() if k != "raw"} == {
        "model_id": 827184,
        "version_id": 2514310,
        "file_id": 2402203,
        "name": "waiIllustriousSDXL_v160.safetensors",
        "size_kb": 6775430.35,
        "type": "Model",
        "format": "SafeTensor",
        "fp": "fp16",
        "size": "pruned",
        "file_metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
        "is_primary": True,
        "pickle_scan_result": "Success",
        "pickle_scan_message": "No Pickle imports",
        "virus_scan_result": "Success",
        "virus_scan_message": None,
        "scanned_at": datetime(2025, 12, 18, 9, 2, 44, 981000, tzinfo=UTC),
        "sha256": "A5F58EB1C33616C4F06BCA55AF39876A7B817913CD829CAA8ACB111B770C85CC",
        "autov1": "4748A7F6",
        "autov2": "A5F58EB1C3",
        "autov3": "22D8CB95B807",
        "blake3": "1A411D9B3E0C5F7A2D4B6C8E9F0A1B2C3D4E5F60718293A4B5C6D7E8F9012345",
        "crc32": "DAEE95B7",
        "download_url": "https://civitai.com/api/download/models/2514310",
    }
    assert primary["raw"]["overrideName"] is None


def test_missing_hashes_are_null_not_empty() -> None:
    files = _children(map_model(_model(CHECKPOINT)), civitai_model_files)

    older = next(f for f in files if f["file_id"] == 2177805)
    assert (older["autov2"], older["sha256"][:10]) == ("BEFC694A29", "BEFC694A29")
    assert (older["autov1"], older["autov3"], older["blake3"], older["crc32"]) == (None, None, None, None)


def test_hashes_are_stored_uppercase_whatever_case_the_keys_and_values_come_in() -> None:
    model = _model(LORA)
    model["modelVersions"][0]["files"][0]["hashes"] = {"sha256": "abc123", "AutoV2": "def456", "Unknown": "x"}

    [first, _] = _children(map_model(model), civitai_model_files)

    assert (first["sha256"], first["autov2"], first["autov1"]) == ("ABC123", "DEF456", None)


def test_a_listing_file_without_primary_is_not_primary_and_its_sparse_metadata_is_kept() -> None:
    files = _children(map_model(_model(LORA)), civitai_model_files)

    training = next(f for f in files if f["file_id"] == 90130)
    assert (training["is_primary"], training["type"], training["format"], training["fp"], training["size"]) == (
        False, "Training Data", "Other", None, None)
    assert (training["sha256"][:8], training["crc32"], training["autov2"]) == ("5E0C8D2B", "1B2C3D4E", None)
    assert training["download_url"].endswith("?type=Training%20Data")


def test_images_of_the_listing_have_ids_and_no_generation_meta() -> None:
    images = _children(map_model(_model(CHECKPOINT)), civitai_model_images)

    assert [(i["version_id"], i["image_id"], i["position"]) for i in images] == [
        (2514310, 113850871, 0), (2514310, 113850874, 1), (2283012, 98211456, 0)]
    first = images[0]
    assert {k: v for k, v in first.items() if k != "raw"} == {
        "model_id": 827184,
        "version_id": 2514310,
        "image_id": 113850871,
        "position": 0,
        "url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/cc242d6c-f960-4274-aa1d-f22a71e705ef/original=true/"
               "113850871.jpeg",
        "nsfw_level": 1,
        "width": 832,
        "height": 1216,
        "hash": "U8F=%Ut7~q%M~qof%Mof-;j[WBWB?bof%Mj[",
        "type": "image",
        "has_meta": True,
        "has_positive_prompt": True,
        "on_site": False,
        "minor": False,
        "poi": False,
        "remix_of_id": None,
        "availability": None,
        "meta": None,
    }


def test_the_model_version_endpoint_payload_maps_with_timestamps_status_and_image_meta() -> None:
    payload = load_fixture("model_version.json")

    row, files, images = map_version(payload, payload["modelId"])

    assert (row["version_id"], row["model_id"], row["position"]) == (2514310, 827184, None)
    assert row["created_at"] == datetime(2025, 12, 18, 8, 55, tzinfo=UTC)
    assert row["updated_at"] == datetime(2025, 12, 18, 9, 16, 12, 62000, tzinfo=UTC)
    assert (row["status"], row["air"]) == ("Published", "urn:air:sdxl:checkpoint:civitai:827184@2514310")
    assert (row["download_count"], row["thumbs_down_count"]) == (215627, None)
    assert [(f["file_id"], f["is_primary"], f["fp"], f["size"]) for f in files] == [
        (2402203, True, "fp16", "pruned"), (2402290, False, "fp32", "full")]
    [image] = images
    assert image["image_id"] is None and image["availability"] == "Public"
    assert image["meta"]["seed"] == 1938345220 and image["meta"]["civitaiResources"][0]["modelVersionId"] == 2514310
    assert "meta" not in image["raw"] and image["raw"]["metadata"]["size"] == 1403322


@pytest.mark.parametrize("name, level", [("None", 1), ("Soft", 2), ("Mature", 4), ("X", 8)])
def test_image_nsfw_level_names_of_the_images_endpoint_become_their_bit(name, level) -> None:
    image = {**load_fixture("images_page.json")["items"][0], "nsfwLevel": name}

    assert map_image(image, 827184, 2514310, 0)["nsfw_level"] == level


def test_archived_model_hides_download_counts_lists_no_files_and_keeps_its_catalogued_children() -> None:
    mapped = map_model(_model(ARCHIVED))

    row = mapped.row
    assert (row["mode"], row["download_count"], row["tipped_amount_count"], row["thumbs_up_count"]) == (
        "Archived", None, None, 3051)
    assert (row["description"], row["sfw_only"], row["allow_commercial_use"]) == (None, True, [])
    assert [v["download_url"] for v in mapped.children[civitai_model_versions]] == [None]
    assert mapped.children[civitai_model_versions][0]["trained_words"] == ["retro poster", "halftone"]
    assert mapped.children[civitai_model_files] == []
    assert mapped.keep_children == CHILD_TABLES


def test_taken_down_model_without_versions_keeps_its_catalogued_children() -> None:
    model = _model(LORA)
    model.update(mode="TakenDown", modelVersions=[])

    mapped = map_model(model)

    assert (mapped.row["mode"], mapped.row["version_count"], mapped.row["latest_version_id"]) == ("TakenDown", 0, None)
    assert all(mapped.children[t] == [] for t in CHILD_TABLES)
    assert mapped.keep_children == CHILD_TABLES


def test_a_live_model_without_versions_replaces_its_children_with_none() -> None:
    model = _model(LORA)
    model["modelVersions"] = []

    mapped = map_model(model)

    assert mapped.row["version_count"] == 0 and mapped.row["latest_published_at"] is None
    assert all(mapped.children[t] == [] for t in CHILD_TABLES) and mapped.keep_children == frozenset()


def test_nulls_and_omitted_fields_map_to_null() -> None:
    model = _model(LORA)
    for key in ("creator", "description", "tags", "baseModels", "stats", "allowCommercialUse", "cosmetic", "userId"):
        model.pop(key)
    model["modelVersions"] = None

    row = map_model(model).row

    assert (row["creator_username"], row["creator_image"], row["description"], row["tags"]) == (None, None, None, None)
    assert (row["stats"], row["download_count"], row["allow_commercial_use"]) == (None, None, None)
    assert row["user_id"] is None
    assert row["version_count"] == 0


@pytest.mark.parametrize(
    "value, expected",
    [
        ("{Image,RentCivit}", ["Image", "RentCivit"]),  # the listing: a PostgreSQL array literal
        (["Image", "RentCivit"], ["Image", "RentCivit"]),  # other endpoints: a JSON array
        ("Sell", ["Sell"]),  # very old models: one word
        ('{"Image",Sell}', ["Image", "Sell"]),
        ("{None}", []),
        ("None", []),
        ("{}", []),
        ([], []),
        (None, None),
    ],
)
def test_allow_commercial_use_is_a_list_in_every_form_the_api_sends(value, expected) -> None:
    assert commercial_use(value) == expected


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"id": "827184"}, "id is '827184', not an integer"),
        ({"name": None}, "name is None, not a string"),
        ({"modelVersions": "none"}, "modelVersions is str, not a list"),
        ({"stats": {"downloadCount": "lots"}}, "stats.downloadCount is 'lots', not an integer"),
        ({"nsfw": "no"}, "nsfw is 'no', not true or false"),
        ({"allowCommercialUse": 3}, "allowCommercialUse is 3"),
    ],
)
def test_a_malformed_model_is_a_record_error_that_says_which_field(change, reason) -> None:
    model = {**_model(CHECKPOINT), **change}

    with pytest.raises(RecordError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        map_model(model)


def test_a_malformed_file_names_its_id() -> None:
    model = _model(CHECKPOINT)
    model["modelVersions"][0]["files"][0]["scannedAt"] = "yesterday"

    with pytest.raises(RecordError, match="file 2402203 scannedAt is 'yesterday'"):
        map_model(model)


def test_a_version_listed_twice_is_kept_once() -> None:
    model = _model(CHECKPOINT)
    model["modelVersions"].append(copy.deepcopy(model["modelVersions"][0]))

    mapped = map_model(model)

    assert [v["version_id"] for v in mapped.children[civitai_model_versions]] == [2514310, 2283012]
    assert len(mapped.children[civitai_model_files]) == 2


def test_the_fingerprint_ignores_counters_but_not_real_changes() -> None:
    model = _model(CHECKPOINT)
    counted = copy.deepcopy(model)
    counted["stats"]["downloadCount"] += 1000
    counted["modelVersions"][1]["stats"]["thumbsUpCount"] += 5
    renamed = copy.deepcopy(model)
    renamed["modelVersions"][1]["files"][0]["hashes"]["CRC32"] = "00000000"

    assert without_counters(counted) == without_counters(model)
    assert without_counters(renamed) != without_counters(model)
    assert "stats" not in without_counters(model) and model["stats"]["downloadCount"] == 1272529  # not mutated


def test_settings_default_to_every_issue_type_one_hundred_a_page_and_a_weekly_full_walk() -> None:
    settings = load_source_settings({}).source("civitai")

    assert isinstance(settings, CivitAISettings)
    assert settings.types == list(MODEL_TYPES) and len(MODEL_TYPES) == 16
    assert (settings.base_url, settings.page_size, settings.full_refresh_days) == ("https://civitai.com", 100, 7)
    assert settings.include_nsfw is True and settings.api_token is None
    assert load_source_settings({}).schedules["civitai"].enabled is True


def test_types_from_the_environment_are_split_and_spelled_as_the_api_spells_them() -> None:
    settings = load_source_settings({"Sources__CivitAI__Types": "lora, checkpoint,LORA, TextEncoder"})

    assert settings.source("civitai").types == ["LORA", "Checkpoint", "TextEncoder"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"Sources__CivitAI__Types": "LORA, Lycoris"}, "unknown model type(s) Lycoris"),
        ({"Sources__CivitAI__PageSize": "200"}, "less than or equal to 100"),
        ({"Sources__CivitAI__FullRefreshDays": "-1"}, "greater than or equal to 0"),
        ({"Sources__CivitAI__BaseUrl": "civitai.com"}, "is not an http(s) URL"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(env, message) -> None:
    with pytest.raises(ConfigError) as raised:
        load_source_settings(env)

    [problem] = raised.value.problems
    assert problem.source == "CivitAI" and message in problem.message
    assert problem.origin == f"environment variable {next(iter(env))}"


def test_partitions_are_the_configured_types_and_a_tick_asks_for_all_of_them() -> None:
    settings = load_source_settings({"Sources__CivitAI__Types": "LORA,Checkpoint,VAE"}).source("civitai")

    partitions = SOURCE.partitions_def(settings)
    assert isinstance(partitions, dg.StaticPartitionsDefinition)
    assert partitions.get_partition_keys() == ["LORA", "Checkpoint", "VAE"]
    assert SOURCE.scheduled_partitions(settings, datetime(2026, 1, 1, tzinfo=UTC)) == ["LORA", "Checkpoint", "VAE"]
    assert SOURCE.backfill_policy(settings).max_partitions_per_run == 1


def test_walk_state_round_trips_and_an_unreadable_one_means_a_full_walk_is_due() -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    state = WalkState(completed_at=datetime(2026, 11, 20, tzinfo=UTC), resume_cursor="1|2", started_at=now)

    assert WalkState.parse(state.dump()) == state
    assert WalkState.parse("not json") == WalkState() and WalkState().full_walk_due(now, 7)
    assert not state.full_walk_due(now, 7) and state.full_walk_due(now, 6) and state.full_walk_due(now, 0)
