"""All five sources' fakes at once, for the tests and scripts that run every source's job."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from umlmm_pipelines_tests.fakes.booru_server import (
    FakeBooru,
    running_fake_danbooru,
    running_fake_e621,
    synthetic_danbooru_state,
    synthetic_e621_state,
)
from umlmm_pipelines_tests.fakes.civitai_server import CivitAIState, FakeCivitAI, running_fake_civitai
from umlmm_pipelines_tests.fakes.comfyui_server import FIXTURES as COMFYUI_FIXTURES
from umlmm_pipelines_tests.fakes.comfyui_server import FakeComfyUI, running_fake_comfyui
from umlmm_pipelines_tests.fakes.ollama_server import FakeOllama, running_fake_ollama


@dataclass
class SourceFakes:
    """The fake servers every source is pointed at, and the directory ComfyUI's workflows are read from."""

    ollama: FakeOllama
    danbooru: FakeBooru
    e621: FakeBooru
    civitai: FakeCivitAI
    comfyui: FakeComfyUI
    workflows: Path


@contextmanager
def running_source_fakes(posts_by_day: Mapping[str, int], civitai: CivitAIState, workflows: Path
                         ) -> Iterator[SourceFakes]:
    """Danbooru and e621 with synthetic posts on each day (a seed per day), CivitAI serving ``civitai``,
    ComfyUI's server, Ollama, and ``workflows`` holding one UI-format and one API-format workflow."""
    (first_day, first_count), *later = posts_by_day.items()
    danbooru = synthetic_danbooru_state(first_count, first_day, lazy=False)
    e621 = synthetic_e621_state(first_count, first_day, lazy=False)
    for seed, (day, count) in enumerate(later, start=1):
        danbooru.add_synthetic_posts(count, day, seed=seed)
        e621.add_synthetic_posts(count, day, seed=seed)
    workflows.mkdir(parents=True, exist_ok=True)
    for name in ("workflow.json", "workflow_api.json"):
        shutil.copy(COMFYUI_FIXTURES / name, workflows / name)
    with ExitStack() as stack:
        yield SourceFakes(stack.enter_context(running_fake_ollama()),
                          stack.enter_context(running_fake_danbooru(danbooru)),
                          stack.enter_context(running_fake_e621(e621)),
                          stack.enter_context(running_fake_civitai(civitai)),
                          stack.enter_context(running_fake_comfyui()), workflows)
