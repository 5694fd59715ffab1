"""Ollama end to end through the real asset, on SQLite and PostgreSQL, against a fake server."""

from __future__ import annotations

from umlmm_pipelines_tests.fakes.ollama_server import running_fake_ollama, unused_local_url
from umlmm_pipelines_tests.helpers import fetch_runs, make_defs, rows, run_source


def test_first_run_creates_every_model_and_a_completed_fetch_run(catalog_url, instance, fake_ollama):
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})

    result = run_source(defs, "ollama", instance)

    assert result.success
    models = rows(catalog_url, "SELECT name, digest, removed_at FROM ollama_models ORDER BY name")
    assert [m["name"] for m in models] == [
        "gpt-oss:120b-cloud", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0", "llama3.2:latest", "qwen3:8b"]
    assert all(m["removed_at"] is None for m in models)
    [run] = fetch_runs(catalog_url, "ollama")
    assert run["status"] == "completed"
    assert run["dagster_run_id"] == result.run_id
    assert (run["records_fetched"], run["records_processed"], run["records_created"], run["records_updated"],
            run["records_unchanged"], run["records_failed"]) == (4, 4, 4, 0, 0, 0)
    assert run["ended_at"] is not None and run["duration_ms"] >= 0
    # /api/show for the three local models, never for the cloud stub
    assert sorted(fake_ollama.state.show_calls()) == [
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0", "llama3.2:latest", "qwen3:8b"]


def test_materialization_metadata_carries_the_same_counts(catalog_url, instance, fake_ollama):
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})

    result = run_source(defs, "ollama", instance)

    [materialization] = result.asset_materializations_for_node("ollama__models")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    [run] = fetch_runs(catalog_url, "ollama")
    for column in ("records_fetched", "records_created", "records_updated", "records_unchanged", "records_failed"):
        assert metadata[column] == run[column]
    assert metadata["fetch_run_id"] == run["id"]


def test_unchanged_rerun_counts_everything_unchanged_and_calls_show_never(catalog_url, instance, fake_ollama):
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})
    run_source(defs, "ollama", instance)
    fake_ollama.state.requests.clear()

    assert run_source(defs, "ollama", instance).success

    second = fetch_runs(catalog_url, "ollama")[-1]
    assert (second["records_fetched"], second["records_unchanged"], second["records_created"],
            second["records_updated"]) == (4, 4, 0, 0)
    assert fake_ollama.state.show_calls() == []
    assert rows(catalog_url, "SELECT count(*) AS n FROM ollama_models")[0]["n"] == 4


def test_repulled_model_with_new_digest_is_updated_and_shown_again(catalog_url, instance, fake_ollama):
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})
    run_source(defs, "ollama", instance)
    fake_ollama.state.requests.clear()
    qwen = next(m for m in fake_ollama.state.models if m["name"] == "qwen3:8b")
    qwen["digest"] = "f" * 64
    qwen["modified_at"] = "2025-11-01T10:00:00.5+02:00"

    run_source(defs, "ollama", instance)

    latest = fetch_runs(catalog_url, "ollama")[-1]
    assert (latest["records_updated"], latest["records_unchanged"], latest["records_created"]) == (1, 3, 0)
    assert fake_ollama.state.show_calls() == ["qwen3:8b"]
    [row] = rows(catalog_url, "SELECT digest, first_seen_at, updated_at FROM ollama_models WHERE name = 'qwen3:8b'")
    assert row["digest"] == "f" * 64
    assert row["updated_at"] > row["first_seen_at"]


def test_model_gone_from_host_is_marked_removed_not_deleted(catalog_url, instance, fake_ollama):
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})
    run_source(defs, "ollama", instance)
    fake_ollama.state.models = [m for m in fake_ollama.state.models if m["name"] != "llama3.2:latest"]

    run_source(defs, "ollama", instance)

    latest = fetch_runs(catalog_url, "ollama")[-1]
    assert latest["records_removed"] == 1 and latest["records_unchanged"] == 3
    [gone] = rows(catalog_url, "SELECT removed_at FROM ollama_models WHERE name = 'llama3.2:latest'")
    assert gone["removed_at"] is not None
    assert rows(catalog_url, "SELECT count(*) AS n FROM ollama_models WHERE removed_at IS NULL")[0]["n"] == 3


def test_removed_model_pulled_again_is_restored_as_updated(catalog_url, instance, fake_ollama):
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})
    run_source(defs, "ollama", instance)
    everything = list(fake_ollama.state.models)
    fake_ollama.state.models = everything[1:]
    run_source(defs, "ollama", instance)
    fake_ollama.state.models = everything

    run_source(defs, "ollama", instance)

    latest = fetch_runs(catalog_url, "ollama")[-1]
    assert (latest["records_updated"], latest["records_unchanged"]) == (1, 3)
    assert rows(catalog_url, "SELECT count(*) AS n FROM ollama_models WHERE removed_at IS NULL")[0]["n"] == 4


def test_unreachable_host_fails_the_run_with_a_clear_error_and_a_failed_row(catalog_url, instance):
    url = unused_local_url()
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": url})

    result = run_source(defs, "ollama", instance)

    assert not result.success
    [run] = fetch_runs(catalog_url, "ollama")
    assert run["status"] == "failed"
    assert run["error_message"].startswith(f"Ollama at {url}: GET /api/tags failed: connection refused")
    assert "SourceError" in run["error_details"]
    assert run["ended_at"] is not None


def test_one_host_down_keeps_the_other_hosts_models_and_fails_the_run(catalog_url, instance, fake_ollama):
    down = unused_local_url()
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": f"{fake_ollama.url}, {down}"})

    result = run_source(defs, "ollama", instance)

    assert not result.success
    [run] = fetch_runs(catalog_url, "ollama")
    assert run["status"] == "failed" and run["records_created"] == 4
    assert f"Ollama at {down}" in run["error_message"]
    hosts = rows(catalog_url, "SELECT DISTINCT host FROM ollama_models")
    assert hosts == [{"host": fake_ollama.url}]


def test_server_errors_are_retried_before_succeeding(catalog_url, instance, fake_ollama):
    fake_ollama.state.tags_failures = [500, 503]
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url, "Sources__Ollama__MaxRetries": "3"})

    assert run_source(defs, "ollama", instance).success

    tags_calls = [r for r in fake_ollama.state.requests if r[1] == "/api/tags"]
    assert len(tags_calls) == 3
    assert fetch_runs(catalog_url, "ollama")[-1]["records_created"] == 4


def test_show_failure_for_one_model_fails_that_model_only(catalog_url, instance, fake_ollama):
    fake_ollama.state.show_status = {"llama3.2:latest": 404}
    defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": fake_ollama.url})

    result = run_source(defs, "ollama", instance)

    assert result.success
    run = fetch_runs(catalog_url, "ollama")[-1]
    assert (run["records_failed"], run["records_created"]) == (1, 3)
    assert rows(catalog_url, "SELECT count(*) AS n FROM ollama_models WHERE name = 'llama3.2:latest'")[0]["n"] == 0


def test_second_host_models_are_kept_apart(catalog_url, instance, fake_ollama):
    with running_fake_ollama() as other:
        other.state.models = other.state.models[:1]
        defs = make_defs(catalog_url, {"Sources__Ollama__BaseUrl": f"{fake_ollama.url},{other.url}"})

        assert run_source(defs, "ollama", instance).success

    counts = rows(catalog_url, "SELECT host, count(*) AS n FROM ollama_models GROUP BY host ORDER BY n")
    assert [(c["host"], c["n"]) for c in counts] == [(other.url, 1), (fake_ollama.url, 4)]
