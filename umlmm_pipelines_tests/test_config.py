"""Settings: packaged defaults, the UMLMM_CONFIG user file, environment overrides and Quartz cron translation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from umlmm_pipelines.config import ConfigError
from umlmm_pipelines.config.quartz import CronTranslationError, to_dagster_cron
from umlmm_pipelines.definitions import load_source_settings

# ---------------------------------------------------------------------------------------------------------------
# packaged defaults
# ---------------------------------------------------------------------------------------------------------------

DEFAULT_SCHEDULES = {
    "civitai": ("0 0 */6 * * ?", "0 */6 * * *"),
    "danbooru": ("0 0 */4 * * ?", "0 */4 * * *"),
    "e621": ("0 0 */4 * * ?", "0 */4 * * *"),
    "comfyui": ("0 0 */12 * * ?", "0 */12 * * *"),
    "ollama": ("0 0 0 * * ?", "0 0 * * *"),
}


def write_json(path: Path, data: object, **dump_options: object) -> Path:
    path.write_text(json.dumps(data, **dump_options), encoding="utf-8")
    return path


def ollama_block(**values: object) -> dict:
    return {"JobSchedules": {"Ollama": values}}


def test_defaults_define_exactly_the_five_schedules():
    settings = load_source_settings({})

    assert set(settings.schedules) == set(DEFAULT_SCHEDULES)


@pytest.mark.parametrize(("source", "quartz", "cron"), [(s, q, c) for s, (q, c) in DEFAULT_SCHEDULES.items()])
def test_default_quartz_cron_is_translated_for_dagster(source, quartz, cron):
    schedule = load_source_settings({}).schedules[source]

    assert schedule.cron == cron
    assert schedule.source == source


@pytest.mark.parametrize(("source", "quartz"), [(s, q) for s, (q, _) in DEFAULT_SCHEDULES.items()])
def test_default_written_as_keeps_the_quartz_expression(source, quartz):
    assert load_source_settings({}).schedules[source].written_as == quartz


@pytest.mark.parametrize("source", sorted(DEFAULT_SCHEDULES))
def test_default_timezone_is_utc(source):
    assert load_source_settings({}).schedules[source].timezone == "UTC"


@pytest.mark.parametrize("source", sorted(DEFAULT_SCHEDULES))
def test_default_description_is_not_empty(source):
    description = load_source_settings({}).schedules[source].description

    assert isinstance(description, str)
    assert description.strip()


def test_default_ollama_settings_point_at_the_local_server():
    ollama = load_source_settings({}).source("ollama")

    assert ollama.base_urls == ["http://127.0.0.1:11434"]
    assert ollama.timeout_seconds == 30.0


# ---------------------------------------------------------------------------------------------------------------
# Quartz translation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quartz", "cron"),
    [
        pytest.param("0 0 */6 * * ?", "0 */6 * * *", id="question-mark-weekday"),
        pytest.param("0 30 2 ? * *", "30 2 * * *", id="question-mark-day-of-month"),
        pytest.param("0 0 6 * * ? *", "0 6 * * *", id="seven-fields-any-year"),
        pytest.param("0 0 6 ? * 2-6", "0 6 * * 1-5", id="weekday-range-shifts"),
        pytest.param("0 0 6 ? * 1", "0 6 * * 0", id="quartz-sunday-is-cron-0"),
        pytest.param("0 0 6 ? * 7", "0 6 * * 6", id="quartz-saturday-is-cron-6"),
        pytest.param("0 0 6 ? * 2,4,6", "0 6 * * 1,3,5", id="weekday-list-shifts"),
        pytest.param("0 0 6 ? * 6#3", "0 6 * * 5#3", id="nth-weekday-count-not-shifted"),
        pytest.param("0 0 6 ? * MON-FRI", "0 6 * * MON-FRI", id="weekday-names-unchanged"),
        pytest.param("00 15 10 ? * SUN", "15 10 * * SUN", id="two-digit-zero-seconds"),
    ],
)
def test_quartz_expression_translates_to_five_field_cron(quartz, cron):
    assert to_dagster_cron(quartz) == cron


@pytest.mark.parametrize("cron", ["0 */6 * * *", "0 6 * * 1#2", "0 6 L * *", "*/15 9-17 * * 1-5"])
def test_five_field_cron_passes_through_unchanged(cron):
    assert to_dagster_cron(cron) == cron


@pytest.mark.parametrize("macro", ["@hourly", "@daily", "@weekly", "@monthly", "@yearly"])
def test_cron_macros_pass_through(macro):
    assert to_dagster_cron(macro) == macro


def test_extra_whitespace_is_collapsed():
    assert to_dagster_cron("  0  0   */6 * *  ? ") == "0 */6 * * *"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param("30 0 * * * ?", "seconds field", id="non-zero-seconds"),
        pytest.param("*/10 0 * * * ?", "seconds field", id="seconds-step"),
        pytest.param("0 0 0 * * ? 2025", "year field", id="specific-year"),
        pytest.param("0 0 0 ? * 6L", "last weekday", id="last-weekday-of-month"),
        pytest.param("0 0 0 15W * ?", "nearest weekday", id="nearest-weekday"),
        pytest.param("61 * * * *", "not a valid cron expression", id="minute-out-of-range"),
        pytest.param("nonsense", "has 1 fields", id="nonsense"),
        pytest.param("", "empty cron expression", id="empty"),
        pytest.param("   ", "empty cron expression", id="blank"),
        pytest.param("0 0 0 ? * 8", "out of range 1-7", id="quartz-weekday-8"),
        pytest.param("0 0 0 ? * 0", "out of range 1-7", id="quartz-weekday-0"),
    ],
)
def test_untranslatable_expression_is_refused_with_a_reason(expression, message):
    with pytest.raises(CronTranslationError, match=message):
        to_dagster_cron(expression)


def test_refused_quartz_translation_names_the_quartz_source():
    with pytest.raises(CronTranslationError) as info:
        to_dagster_cron("0 61 * * * ?")

    assert "translated from Quartz '0 61 * * * ?'" in str(info.value)


def test_cron_translation_error_is_a_value_error():
    assert issubclass(CronTranslationError, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# environment overrides
# ---------------------------------------------------------------------------------------------------------------


def test_env_overrides_a_cron_schedule():
    settings = load_source_settings({"JobSchedules__CivitAI__CronSchedule": "0 30 2 ? * 2-6"})

    civitai = settings.schedules["civitai"]
    assert civitai.cron == "30 2 * * 1-5"
    assert civitai.written_as == "0 30 2 ? * 2-6"
    assert civitai.description == load_source_settings({}).schedules["civitai"].description
    assert settings.schedules["danbooru"].cron == "0 */4 * * *"


def test_env_override_records_its_origin():
    settings = load_source_settings({"JobSchedules__CivitAI__CronSchedule": "0 0 1 * *"})

    assert settings.origins["jobschedules.civitai.cronschedule"] == (
        "environment variable JobSchedules__CivitAI__CronSchedule")


def test_env_override_names_are_case_insensitive():
    settings = load_source_settings({"JOBSCHEDULES__civitai__cronschedule": "0 0 1 * * ?"})

    assert settings.schedules["civitai"].cron == "0 1 * * *"
    assert settings.schedules["civitai"].written_as == "0 0 1 * * ?"


def test_env_source_name_can_be_the_lowercase_source_name():
    settings = load_source_settings({"JobSchedules__e621__Timezone": "Asia/Tokyo"})

    assert settings.schedules["e621"].timezone == "Asia/Tokyo"


@pytest.mark.parametrize("value", ["false", "False", "FALSE", "0", "no", "off"])
def test_env_disables_a_schedule(value):
    settings = load_source_settings({"JobSchedules__Ollama__Enabled": value})

    assert settings.schedules["ollama"].enabled is False


@pytest.mark.parametrize("value", ["true", "True", "1", "yes", "on"])
def test_env_enables_a_schedule(value):
    settings = load_source_settings({"JobSchedules__CivitAI__Enabled": value})

    assert settings.schedules["civitai"].enabled is True


def test_env_sets_a_timezone():
    settings = load_source_settings({"JobSchedules__Ollama__Timezone": "Europe/Berlin"})

    assert settings.schedules["ollama"].timezone == "Europe/Berlin"
    assert settings.schedules["ollama"].cron == "0 0 * * *"


def test_env_sets_one_ollama_base_url():
    settings = load_source_settings({"Sources__Ollama__BaseUrl": "http://gpu-box:11434/"})

    assert settings.source("ollama").base_urls == ["http://gpu-box:11434"]


def test_env_sets_several_ollama_base_urls_separated_by_commas():
    settings = load_source_settings(
        {"Sources__Ollama__BaseUrl": "http://gpu-box:11434, https://ollama.example.org/ollama/,http://10.0.0.7:11434"})

    assert settings.source("ollama").base_urls == [
        "http://gpu-box:11434", "https://ollama.example.org/ollama", "http://10.0.0.7:11434"]


def test_env_sets_ollama_timeout_seconds():
    settings = load_source_settings({"Sources__Ollama__TimeoutSeconds": "7.5"})

    ollama = settings.source("ollama")
    assert ollama.timeout_seconds == 7.5
    assert ollama.max_retries == 3
    assert ollama.base_urls == ["http://127.0.0.1:11434"]


def test_env_source_settings_names_are_case_insensitive():
    settings = load_source_settings({"SOURCES__ollama__timeoutseconds": "12"})

    assert settings.source("ollama").timeout_seconds == 12.0


def test_unrelated_env_variables_are_ignored():
    settings = load_source_settings({"PATH": "/usr/bin", "Logging__LogLevel__Default": "Debug", "HOME": "/root"})

    assert settings.schedules["ollama"].cron == "0 0 * * *"


# ---------------------------------------------------------------------------------------------------------------
# the user file (UMLMM_CONFIG)
# ---------------------------------------------------------------------------------------------------------------

USER_OLLAMA = {"CronSchedule": "0 0 6 ? * 2-6", "Description": "Ollama on weekday mornings", "Enabled": False,
               "Timezone": "Europe/Berlin"}


def assert_user_ollama_schedule(schedule):
    assert schedule.cron == "0 6 * * 1-5"
    assert schedule.written_as == "0 0 6 ? * 2-6"
    assert schedule.description == "Ollama on weekday mornings"
    assert schedule.enabled is False
    assert schedule.timezone == "Europe/Berlin"


def test_json_user_file_overrides_defaults(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"JobSchedules": {"Ollama": USER_OLLAMA}}, indent=2)

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    assert_user_ollama_schedule(settings.schedules["ollama"])
    assert settings.schedules["civitai"].cron == "0 */6 * * *"


def test_yaml_user_file_overrides_defaults(tmp_path):
    path = tmp_path / "umlmm.yaml"
    path.write_text(
        "JobSchedules:\n"
        "  Ollama:\n"
        "    CronSchedule: '0 0 6 ? * 2-6'\n"
        "    Description: Ollama on weekday mornings\n"
        "    Enabled: false\n"
        "    Timezone: Europe/Berlin\n",
        encoding="utf-8",
    )

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    assert_user_ollama_schedule(settings.schedules["ollama"])


def test_tab_indented_json_user_file_is_read(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"JobSchedules": {"Ollama": USER_OLLAMA}}, indent="\t")

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    assert_user_ollama_schedule(settings.schedules["ollama"])


def test_json_user_file_decodes_escaped_non_bmp_characters(tmp_path):
    description = "Ollama 🦙 models"
    path = write_json(tmp_path / "umlmm.json", ollama_block(Description=description))  # ensure_ascii: \ud83e\udd99

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    assert settings.schedules["ollama"].description == description


def test_user_file_keys_are_case_insensitive(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"jobschedules": {"OLLAMA": {"cronschedule": "0 15 3 * * ?"}}})

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    assert settings.schedules["ollama"].cron == "15 3 * * *"


def test_user_file_beats_defaults_only_for_the_keys_it_sets(tmp_path):
    path = write_json(tmp_path / "umlmm.json", ollama_block(Timezone="America/New_York"))

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    ollama = settings.schedules["ollama"]
    assert ollama.timezone == "America/New_York"
    assert ollama.cron == "0 0 * * *"
    assert ollama.written_as == "0 0 0 * * ?"
    assert ollama.enabled is True
    assert ollama.description == load_source_settings({}).schedules["ollama"].description


def test_user_file_records_the_file_key_as_origin(tmp_path):
    path = write_json(tmp_path / "umlmm.json", ollama_block(Timezone="America/New_York"))

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    assert settings.origins["jobschedules.ollama.timezone"] == f"file {path}: JobSchedules.Ollama.Timezone"


def test_env_beats_user_file(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"JobSchedules": {"Ollama": USER_OLLAMA}})

    settings = load_source_settings({
        "UMLMM_CONFIG": str(path),
        "JobSchedules__Ollama__CronSchedule": "0 0 22 * * ?",
        "JobSchedules__Ollama__Enabled": "true",
    })

    ollama = settings.schedules["ollama"]
    assert ollama.cron == "0 22 * * *"
    assert ollama.enabled is True
    assert ollama.description == "Ollama on weekday mornings"
    assert ollama.timezone == "Europe/Berlin"


def test_user_file_sets_ollama_source_settings(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"Sources": {"Ollama": {
        "BaseUrl": ["http://a:11434", "http://b:11434/"], "TimeoutSeconds": 9}}})

    ollama = load_source_settings({"UMLMM_CONFIG": str(path)}).source("ollama")

    assert ollama.base_urls == ["http://a:11434", "http://b:11434"]
    assert ollama.timeout_seconds == 9.0


def test_empty_user_file_keeps_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")

    settings = load_source_settings({"UMLMM_CONFIG": str(path)})

    assert settings.schedules["ollama"].cron == "0 0 * * *"


# ---------------------------------------------------------------------------------------------------------------
# errors: every bad entry at once, each with its source and origin
# ---------------------------------------------------------------------------------------------------------------


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_source_settings(environ)
    return info.value


def test_config_error_lists_every_problem_with_source_and_origin(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"JobSchedules": {"Danbooru": {"Timezone": "Mars/Olympus_Mons"}}})

    err = config_error({
        "UMLMM_CONFIG": str(path),
        "JobSchedules__CivitAI__CronSchedule": "0 61 * * *",
        "JobSchedules__Ollama__Enabled": "maybe",
        "Sources__Ollama__BaseUrl": "ftp://gpu-box:11434",
        "JobSchedules__Midjourney__CronSchedule": "0 0 * * *",
    })

    assert len(err.problems) == 5
    located = {(p.source, p.origin) for p in err.problems}
    assert ("CivitAI", "environment variable JobSchedules__CivitAI__CronSchedule") in located
    assert ("Danbooru", f"file {path}: JobSchedules.Danbooru.Timezone") in located
    assert ("Ollama", "environment variable JobSchedules__Ollama__Enabled") in located
    assert ("Ollama", "environment variable Sources__Ollama__BaseUrl") in located
    assert any(p.source == "Midjourney" and "unknown source" in p.message for p in err.problems)
    text = str(err)
    assert "(5 problem(s))" in text
    for needle in ("0 61 * * *", "Mars/Olympus_Mons", "maybe", "ftp://gpu-box:11434", "Midjourney"):
        assert needle in text


def test_bad_cron_from_env_names_the_variable():
    err = config_error({"JobSchedules__CivitAI__CronSchedule": "0 61 * * *"})

    [problem] = err.problems
    assert problem.source == "CivitAI"
    assert problem.origin == "environment variable JobSchedules__CivitAI__CronSchedule"
    assert "not a valid cron expression" in problem.message
    assert "[CivitAI] environment variable JobSchedules__CivitAI__CronSchedule:" in str(err)


def test_untranslatable_quartz_from_env_reports_the_reason():
    err = config_error({"JobSchedules__E621__CronSchedule": "30 0 * * * ?"})

    [problem] = err.problems
    assert problem.source == "e621"
    assert problem.origin == "environment variable JobSchedules__E621__CronSchedule"
    assert "seconds field" in problem.message


def test_bad_timezone_from_file_names_the_file_key(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"JobSchedules": {"Danbooru": {"Timezone": "Mars/Olympus_Mons"}}})

    err = config_error({"UMLMM_CONFIG": str(path)})

    [problem] = err.problems
    assert problem.source == "Danbooru"
    assert problem.origin == f"file {path}: JobSchedules.Danbooru.Timezone"
    assert "unknown timezone 'Mars/Olympus_Mons'" in problem.message
    assert f"[Danbooru] file {path}: JobSchedules.Danbooru.Timezone: unknown timezone" in str(err)


def test_bad_enabled_value_is_refused():
    err = config_error({"JobSchedules__Ollama__Enabled": "sometimes"})

    [problem] = err.problems
    assert problem.source == "Ollama"
    assert problem.origin == "environment variable JobSchedules__Ollama__Enabled"
    assert "Enabled must be true or false, not 'sometimes'" in problem.message


def test_bad_enabled_value_from_file_names_the_file_key(tmp_path):
    path = write_json(tmp_path / "umlmm.json", ollama_block(Enabled="perhaps"))

    err = config_error({"UMLMM_CONFIG": str(path)})

    [problem] = err.problems
    assert problem.origin == f"file {path}: JobSchedules.Ollama.Enabled"
    assert "perhaps" in problem.message


@pytest.mark.parametrize("url", ["ftp://gpu-box:11434", "gpu-box:11434", "http://"])
def test_non_http_ollama_base_url_is_refused(url):
    err = config_error({"Sources__Ollama__BaseUrl": url})

    [problem] = err.problems
    assert problem.source == "Ollama"
    assert problem.origin == "environment variable Sources__Ollama__BaseUrl"
    assert f"'{url}' is not an http(s) URL" in problem.message


def test_one_bad_url_in_a_list_is_refused():
    err = config_error({"Sources__Ollama__BaseUrl": "http://ok:11434,ftp://bad:11434"})

    [problem] = err.problems
    assert "'ftp://bad:11434'" in problem.message


def test_non_numeric_timeout_is_refused_with_its_variable():
    err = config_error({"Sources__Ollama__TimeoutSeconds": "soon"})

    [problem] = err.problems
    assert problem.source == "Ollama"
    assert problem.origin == "environment variable Sources__Ollama__TimeoutSeconds"
    assert "TimeoutSeconds" in problem.message


def test_unknown_source_in_job_schedules_is_refused():
    err = config_error({"JobSchedules__Midjourney__CronSchedule": "0 0 * * *"})

    [problem] = err.problems
    assert problem.source == "Midjourney"
    assert "unknown source in JobSchedules" in problem.message
    for known in ("CivitAI", "Danbooru", "e621", "ComfyUI", "Ollama"):
        assert known in problem.message


def test_unknown_source_from_env_names_the_variable():
    err = config_error({"JobSchedules__Midjourney__CronSchedule": "0 0 * * *"})

    [problem] = err.problems
    assert problem.origin.startswith("environment variable JobSchedules__Midjourney")


def test_unknown_source_from_file_names_the_file_key(tmp_path):
    path = write_json(tmp_path / "umlmm.json", {"JobSchedules": {"Midjourney": {"CronSchedule": "0 0 * * *"}}})

    err = config_error({"UMLMM_CONFIG": str(path)})

    [problem] = err.problems
    assert problem.source == "Midjourney"
    assert problem.origin.startswith(f"file {path}: JobSchedules.Midjourney")


def test_malformed_user_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "umlmm.json"
    path.write_text('{"JobSchedules": {"Ollama": {"CronSchedule": ', encoding="utf-8")

    err = config_error({"UMLMM_CONFIG": str(path)})

    [problem] = err.problems
    assert problem.origin == f"UMLMM_CONFIG={path}"
    assert "cannot parse" in problem.message
    assert str(path) in str(err)


def test_missing_user_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "does-not-exist.yaml"

    err = config_error({"UMLMM_CONFIG": str(path)})

    [problem] = err.problems
    assert problem.origin == f"UMLMM_CONFIG={path}"
    assert str(path) in problem.message


def test_user_file_without_a_top_level_mapping_is_refused(tmp_path):
    path = write_json(tmp_path / "umlmm.json", ["JobSchedules"])

    err = config_error({"UMLMM_CONFIG": str(path)})

    [problem] = err.problems
    assert problem.origin == f"UMLMM_CONFIG={path}"
    assert "must contain a mapping" in problem.message


def test_malformed_user_file_does_not_hide_bad_environment_entries(tmp_path):
    path = tmp_path / "umlmm.yaml"
    path.write_text("JobSchedules: [unclosed\n", encoding="utf-8")

    err = config_error({
        "UMLMM_CONFIG": str(path),
        "JobSchedules__CivitAI__CronSchedule": "0 61 * * *",
    })

    assert len(err.problems) == 2
    origins = {p.origin for p in err.problems}
    assert f"UMLMM_CONFIG={path}" in origins
    assert "environment variable JobSchedules__CivitAI__CronSchedule" in origins


def test_config_error_is_a_value_error():
    assert isinstance(config_error({"JobSchedules__Ollama__Enabled": "x"}), ValueError)
