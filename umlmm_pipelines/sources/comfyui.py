"""ComfyUI: workflow files from configured directories, and node types and model files from the server.

Either part may be absent. The directory part lists each root completely (in pages of
FilesPerPage files, the last carrying the root's complete scope, so a deleted file is marked
removed); a file's listing entry
(size and mtime) is what is hashed, so only new or changed files are opened and parsed. The
server part reads ``/system_stats`` (into the run report), ``/object_info`` (node types, one
complete page) and ``/models`` + ``/models/{folder}`` (model files, one page, complete when every
folder answered). A run fails only when nothing at all could be read; a missing part is logged
as a warning and named in the report.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from pydantic import Field, field_validator

from umlmm_pipelines.catalog.tables import JSONType, Timestamp, child_table, entity_table
from umlmm_pipelines.ingestion.http import HttpSettings, PoliteClient, SourceHttpError
from umlmm_pipelines.ingestion.logfmt import kv
from umlmm_pipelines.ingestion.source import MappedRecord, Page, Record, RecordError, RunInputs, SourceRun, SourceSpec
from umlmm_pipelines.sources._comfyui_files import (
    PNG_SIGNATURE,
    FoundFile,
    GlobSet,
    SkippedFile,
    absolute_root,
    open_within,
    png_text_chunks,
    read_at_most,
    scan_root,
)
from umlmm_pipelines.sources._comfyui_graphs import (
    NotAWorkflow,
    api_model_references,
    api_node_types,
    base_name,
    looks_like_model_file,
    model_folder,
    parse_json,
    ui_model_references,
    ui_node_types,
    unique_references,
    workflow_format,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8188"
DEFAULT_INCLUDE = ("**/*.json", "**/*.png")
#: The catalog's external_id column width; longer keys cannot be stored.
MAX_EXTERNAL_ID = 512

WORKFLOW, NODE_TYPE, MODEL_FILE = "workflow", "node_type", "model_file"


def _split_list(value: Any) -> Any:
    """``"a, b"`` from an environment variable, or a list from a settings file."""
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return value


class ComfyUISettings(HttpSettings):
    """``Sources__ComfyUI__…``: the server URL (empty = no server part) and the workflow directories."""

    base_url: str = Field(DEFAULT_BASE_URL, alias="BaseUrl")
    workflow_dirs: list[str] = Field(default_factory=list, alias="WorkflowDirs")
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE), alias="Include", min_length=1)
    exclude: list[str] = Field(default_factory=list, alias="Exclude")
    max_file_bytes: int = Field(20 * 1024 * 1024, alias="MaxFileBytes", gt=0)
    #: Parsed workflows are held in memory until their page commits; a flat output folder of
    #: thousands of renders is therefore written in pages of this many files.
    files_per_page: int = Field(200, alias="FilesPerPage", ge=1, le=10_000)
    #: ``custom_nodes`` is a "model folder" on the server that lists every file of every node pack.
    skip_model_folders: list[str] = Field(default_factory=lambda: ["custom_nodes"], alias="SkipModelFolders")

    @field_validator("workflow_dirs", "include", "exclude", "skip_model_folders", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"'{value}' is not an http(s) URL such as {DEFAULT_BASE_URL} (empty = no server)")
        return value.rstrip("/")

    @field_validator("workflow_dirs")
    @classmethod
    def _absolute_dirs(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(absolute_root(d) for d in value))


comfyui_workflows = entity_table(
    "comfyui_workflows",
    sa.Column("root", sa.Text, nullable=False),
    sa.Column("relative_path", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("file_size", sa.BigInteger, nullable=False),
    sa.Column("modified_at", Timestamp, nullable=False),
    sa.Column("workflow_id", sa.Text, nullable=True),
    sa.Column("node_count", sa.Integer, nullable=False),
    sa.Column("node_types", JSONType, nullable=False),
    sa.Column("workflow", JSONType, nullable=True),
    sa.Column("prompt", JSONType, nullable=True),
    sa.Index("ix_comfyui_workflows_root", "root"),
)

comfyui_workflow_models = child_table(
    "comfyui_workflow_models",
    "workflow",
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("class_type", sa.Text, nullable=False),
    sa.Column("input_name", sa.Text, nullable=False),
    sa.Column("folder", sa.Text, nullable=True),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("base_name", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("source", "workflow", "node_id", "input_name"),
    sa.Index("ix_comfyui_workflow_models_base_name", "base_name"),
)

comfyui_node_types = entity_table(
    "comfyui_node_types",
    sa.Column("class_name", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=True),
    sa.Column("category", sa.Text, nullable=True),
    sa.Column("python_module", sa.Text, nullable=True),
    sa.Column("node_pack", sa.Text, nullable=True),
    sa.Column("output_node", sa.Boolean, nullable=False),
    sa.Column("inputs", JSONType, nullable=True),
    sa.Column("input_order", JSONType, nullable=True),
    sa.Column("outputs", JSONType, nullable=False),
    sa.Column("model_inputs", JSONType, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("deprecated", sa.Boolean, nullable=False),
    sa.Column("experimental", sa.Boolean, nullable=False),
    sa.Column("api_node", sa.Boolean, nullable=False),
)

comfyui_model_files = entity_table(
    "comfyui_model_files",
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("subdirectory", sa.Text, nullable=True),
    sa.Column("base_name", sa.Text, nullable=False),
    sa.Index("ix_comfyui_model_files_base_name", "base_name"),
)


class _ServerGone(Exception):
    """The server stopped answering part-way; the rest of the server part is skipped."""


class ComfyUIRun(SourceRun):
    settings: ComfyUISettings

    def __init__(self, inputs: RunInputs) -> None:
        super().__init__(inputs)
        self.client = (
            PoliteClient("ComfyUI", self.settings.base_url, self.settings, log=self.log)
            if self.settings.base_url else None
        )
        self._real_roots: dict[str, str] = {}
        self._dirs_read = False
        self._skipped: Counter[str] = Counter()
        self._server_notes: list[str] = []

    # -- pages ---------------------------------------------------------------------------------------------------

    def pages(self) -> Iterator[Page]:
        dirs_summary = yield from self._workflow_pages()
        self.inputs.report["workflow_dirs"] = dirs_summary
        server_read = yield from self._server_pages()
        # Runs after the last page has been classified, so every skipped file is counted.
        if self._skipped:
            reasons = ", ".join(f"{n} {category}" for category, n in sorted(self._skipped.items()))
            dirs_summary += f"; {sum(self._skipped.values())} skipped ({reasons})"
        self.inputs.report["workflow_dirs"] = dirs_summary
        if not self._dirs_read and not server_read:
            self.inputs.defer_failure(
                f"ComfyUI: nothing could be read. Workflow dirs: {dirs_summary}. "
                f"Server: {self.inputs.report['server']}"
            )

    def _workflow_pages(self) -> Generator[Page, None, str]:
        """One page per readable root; returns the report line for the directory part."""
        roots = self.settings.workflow_dirs
        if not roots:
            return "none configured (set Sources__ComfyUI__WorkflowDirs); directory part skipped"
        include, exclude = GlobSet(tuple(self.settings.include)), GlobSet(tuple(self.settings.exclude))
        scanned, files, problems = 0, 0, []
        for root in roots:
            try:
                scan = scan_root(root, include, exclude, self.settings.max_file_bytes,
                                 MAX_EXTERNAL_ID - len(root) - 1)
            except OSError as exc:
                reason = exc.strerror if exc.strerror and exc.filename else str(exc)
                self.log.warning(kv("workflow_dir_unreadable", source="comfyui", root=root, reason=reason))
                problems.append(f"{root}: {reason}")
                continue
            scanned += 1
            files += len(scan.files)
            self._real_roots[root] = scan.real_root
            for link in scan.outside_dir_links:
                self.log.warning(kv("symlink_skipped", source="comfyui", root=root, link=link,
                                    reason="directory symlink leaves its root"))
                problems.append(f"{root}: directory symlink {link} not followed (leaves the root)")
            for error in scan.walk_errors:
                self.log.warning(kv("workflow_dir_incomplete", source="comfyui", root=root, reason=error,
                                    effect="files under it are not marked removed this run"))
                problems.append(f"{root}: {error}")
            yield from self._root_pages(root, scan.files, complete=scan.complete)
        self._dirs_read = scanned > 0
        summary = f"scanned {scanned} of {len(roots)} dirs, {files} files"
        if problems:
            summary += "; " + "; ".join(problems)
        return summary

    def _root_pages(self, root: str, found: list[FoundFile], complete: bool) -> Iterator[Page]:
        """A root's files in pages of FilesPerPage; the last page carries the root's complete scope."""
        records = [{"kind": WORKFLOW, "root": root, "path": f.relative_path, "size": f.size, "mtime_ns": f.mtime_ns,
                    "problem": f.problem, "category": f.category} for f in found]
        size = self.settings.files_per_page
        starts = range(0, len(records), size) if records else range(1)
        for start in starts:
            chunk = records[start : start + size]
            last = start + size >= len(records)
            shown = f"files {start + 1}-{start + len(chunk)} of {len(records)}" if chunk else "empty"
            yield Page(
                records=chunk,
                label=f"{root} ({shown})",
                complete_scope={"root": root} if last and complete else None,
                listed_before=[self.external_id(r) for r in records[:start]] if last and complete else (),
                table=comfyui_workflows,
            )

    def _server_pages(self) -> Generator[Page, None, bool]:
        """Node types and model files; returns whether anything was read from the server."""
        if self.client is None:
            self.inputs.report["server"] = "none configured (Sources__ComfyUI__BaseUrl is empty); server part skipped"
            return False
        url = self.settings.base_url
        read: list[str] = []
        try:
            stats = self.client.get_json("/system_stats")
        except SourceHttpError as exc:
            if exc.status is None or exc.transient:  # refused, timed out, or still overloaded after the retries
                self.log.warning(kv("server_unreachable", source="comfyui", server=url, reason=str(exc)))
                self.inputs.report["server"] = f"unreachable: {exc}"
                return False
            self._note(str(exc))
            stats = None
        try:
            if isinstance(stats, dict):
                self.inputs.report["system_stats"] = system_summary(stats)
                version = (stats.get("system") or {}).get("comfyui_version")
                read.append(f"ComfyUI {version}" if version else "system stats")
            object_info = self._get("/object_info")
            if isinstance(object_info, dict):
                read.append(f"{len(object_info)} node types")
                yield Page(
                    records=[{"kind": NODE_TYPE, "class_name": name, "info": info}
                             for name, info in object_info.items()],
                    label=f"{url} /object_info ({len(object_info)} node types)",
                    complete_scope={},
                    table=comfyui_node_types,
                )
            elif object_info is not None:
                self._note(f"/object_info returned {type(object_info).__name__}, not an object")
            listing = self._model_files()
            if listing is not None:
                records, folders, complete = listing
                read.append(f"{len(records)} model files in {folders} folders")
                yield Page(records=records, label=f"{url} /models ({len(records)} files in {folders} folders)",
                           complete_scope={} if complete else None, table=comfyui_model_files)
        except _ServerGone as exc:
            self._note(f"server stopped answering: {exc}")
        if read:
            summary = f"read {url}: " + ", ".join(read)
        else:
            summary = f"nothing usable at {url}"
        if self._server_notes:
            summary += "; problems: " + "; ".join(self._server_notes)
        self.inputs.report["server"] = summary
        return bool(read)

    def _model_files(self) -> tuple[list[Record], int, bool] | None:
        """Every file of every model folder, the folder count, and whether every folder answered."""
        folders = self._get("/models")
        if folders is None:
            return None
        if not isinstance(folders, list):
            self._note(f"/models returned {type(folders).__name__}, not a list of folders")
            return None
        skip = set(self.settings.skip_model_folders)
        records: list[Record] = []
        complete, listed = True, 0
        for folder in folders:
            if not isinstance(folder, str) or folder in skip:
                continue
            names = self._get(f"/models/{quote(folder, safe='')}", missing_ok=True)
            if names is None:
                complete = False
                continue
            if not isinstance(names, list):
                self._note(f"/models/{folder} returned {type(names).__name__}, not a list of files")
                complete = False
                continue
            listed += 1
            records += [{"kind": MODEL_FILE, "folder": folder, "name": name} for name in names]
        return records, listed, complete

    def _get(self, path: str, missing_ok: bool = False) -> Any:
        """GET a server endpoint: None (noted) for an HTTP error, [] for a 404 the caller allows.

        A connection problem raises _ServerGone: asking the other endpoints would only repeat the wait.
        """
        assert self.client is not None
        try:
            return self.client.get_json(path)
        except SourceHttpError as exc:
            if exc.status is None:
                raise _ServerGone(str(exc)) from None
            if missing_ok and exc.status == 404:
                return []
            self._note(str(exc))
            return None

    def _note(self, problem: str) -> None:
        self.log.warning(kv("server_problem", source="comfyui", server=self.settings.base_url, reason=problem))
        self._server_notes.append(problem)

    # -- records -------------------------------------------------------------------------------------------------

    def external_id(self, record: Record) -> str:
        kind = record["kind"]
        if kind == WORKFLOW:
            key = f"{record['root']}|{record['path']}"
        elif kind == NODE_TYPE:
            key = str(record["class_name"])
        elif kind == MODEL_FILE:
            key = f"{record['folder']}/{record['name']}"
        else:
            raise ValueError(f"unknown record kind {kind!r}")
        if len(key) > MAX_EXTERNAL_ID:
            raise ValueError(f"key longer than {MAX_EXTERNAL_ID} characters: {key[:80]}…")
        return key

    def enrich(self, record: Record) -> Record:
        """Read a new or changed workflow file (listing entries alone decide whether it changed)."""
        if record["kind"] != WORKFLOW:
            return record
        try:
            if record["problem"]:
                raise SkippedFile(record["problem"], record["category"] or "unreadable")
            documents = read_workflow_file(self._real_roots[record["root"]], record["path"],
                                           self.settings.max_file_bytes, log=self.log)
        except SkippedFile as exc:
            self._skipped[exc.category] += 1
            raise RecordError(str(exc)) from None
        return {**record, **documents}

    def map(self, record: Record) -> MappedRecord:
        kind = record["kind"]
        if kind == WORKFLOW:
            return map_workflow(record)
        if kind == NODE_TYPE:
            return MappedRecord(row=map_node_type(record["class_name"], record["info"]))
        return MappedRecord(row=map_model_file(record["folder"], record["name"]))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


# ---------------------------------------------------------------------------------------------------------------
# reading and mapping
# ---------------------------------------------------------------------------------------------------------------


def read_workflow_file(real_root: str, relative_path: str, max_bytes: int, log: Any = None) -> dict[str, Any]:
    """``{"format", "workflow", "prompt"}`` of a JSON workflow or a PNG carrying one; SkippedFile otherwise."""
    with open_within(real_root, relative_path, max_bytes) as stream:
        if stream.read(8) == PNG_SIGNATURE:
            return _png_documents(png_text_chunks(stream, ("workflow", "prompt"), max_bytes), log, relative_path)
        stream.seek(0)
        data = read_at_most(stream, max_bytes)
    try:
        text = data.decode("utf-8-sig")
        document = parse_json(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SkippedFile(f"not valid JSON: {exc}", "not valid JSON") from None
    try:
        fmt = workflow_format(document)
    except NotAWorkflow as exc:
        raise SkippedFile(f"not a ComfyUI workflow: {exc}", "not a workflow") from None
    return {"format": fmt, "workflow": document if fmt == "ui" else None, "prompt": document if fmt == "api" else None}


def _png_documents(chunks: dict[str, str], log: Any, relative_path: str) -> dict[str, Any]:
    """The UI workflow and API prompt a PNG carries; a broken chunk is dropped when the other is usable."""
    documents: dict[str, Any] = {"workflow": None, "prompt": None}
    problems = []
    for key, expected in (("workflow", "ui"), ("prompt", "api")):
        if key not in chunks:
            continue
        try:
            document = parse_json(chunks[key])
            fmt = workflow_format(document)
        except ValueError as exc:  # NotAWorkflow is a ValueError, as is a JSON error
            problems.append(f"'{key}' chunk: {exc}")
            continue
        if fmt != expected:
            problems.append(f"'{key}' chunk holds the {fmt} format, not {expected}")
            continue
        documents[key] = document
    if documents["workflow"] is None and documents["prompt"] is None:
        if problems:
            raise SkippedFile("PNG " + "; ".join(problems), "not a workflow")
        raise SkippedFile("PNG without a ComfyUI 'workflow' or 'prompt' text chunk", "PNG without a workflow")
    if problems and log is not None:
        log.warning(kv("png_chunk_ignored", source="comfyui", path=relative_path, reason="; ".join(problems)))
    parts = [name for name, key in (("ui", "workflow"), ("api", "prompt")) if documents[key] is not None]
    return {"format": "png-" + "+".join(parts), **documents}


def map_workflow(record: Record) -> MappedRecord:
    """Columns of a workflow file and one child row per model file it references."""
    workflow, prompt = record.get("workflow"), record.get("prompt")
    node_types: set[str] = set()
    if workflow is not None:
        node_types |= ui_node_types(workflow)
    if prompt is not None:
        node_types |= api_node_types(prompt)
    references = api_model_references(prompt) if prompt is not None else ui_model_references(workflow or {})
    path = record["path"]
    workflow_id = workflow.get("id") if workflow is not None else None
    row = {
        "root": record["root"],
        "relative_path": path,
        "name": os.path.splitext(path.rsplit("/", 1)[-1])[0],
        "format": record["format"],
        "file_size": record["size"],
        "modified_at": datetime.fromtimestamp(record["mtime_ns"] / 1e9, UTC),
        "workflow_id": workflow_id if isinstance(workflow_id, str) else None,
        "node_count": len(workflow.get("nodes") or []) if workflow is not None else len(prompt or {}),
        "node_types": sorted(node_types),
        "workflow": workflow,
        "prompt": prompt,
    }
    return MappedRecord(row=row, children={comfyui_workflow_models: unique_references(references)})


def map_node_type(class_name: str, info: Any) -> dict[str, Any]:
    """Columns of one ``/object_info`` entry, with the model lists its combo inputs offer."""
    if not isinstance(info, dict):
        raise RecordError(f"node type {class_name!r}: {type(info).__name__}, not an object")
    types, names = info.get("output") or [], info.get("output_name") or []
    is_list, tooltips = info.get("output_is_list") or [], info.get("output_tooltips") or []
    outputs = [
        {"type": kind, "name": names[i] if i < len(names) else kind,
         "is_list": bool(is_list[i]) if i < len(is_list) else False,
         "tooltip": tooltips[i] if i < len(tooltips) else None}
        for i, kind in enumerate(types)
    ]
    module = info.get("python_module")
    return {
        "class_name": class_name,
        "display_name": info.get("display_name"),
        "category": info.get("category"),
        "python_module": module,
        "node_pack": node_pack(module),
        "output_node": bool(info.get("output_node")),
        "inputs": info.get("input"),
        "input_order": info.get("input_order"),
        "outputs": outputs,
        "model_inputs": model_inputs(class_name, info.get("input")),
        "description": info.get("description") or None,
        "deprecated": bool(info.get("deprecated")),
        "experimental": bool(info.get("experimental")),
        "api_node": bool(info.get("api_node")),
    }


def node_pack(python_module: Any) -> str | None:
    """``custom_nodes.<pack>`` → the pack's directory; ComfyUI's own modules → ``comfy-core`` (its cnr_id)."""
    if not isinstance(python_module, str) or not python_module:
        return None
    head, _, rest = python_module.partition(".")
    if head == "custom_nodes" and rest:
        return rest.split(".", 1)[0]
    return "comfy-core"


def combo_choices(spec: Any) -> list[Any] | None:
    """The choices of a combo input: legacy ``[[choices], {...}]`` or V3 ``["COMBO", {"options": [...]}]``."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict) and isinstance(spec[1].get("options"), list):
        return spec[1]["options"]
    return None


def model_inputs(class_name: str, inputs: Any) -> dict[str, dict[str, Any]]:
    """``{input: {"folder", "choices"}}`` for combo inputs that pick a model file."""
    found: dict[str, dict[str, Any]] = {}
    if not isinstance(inputs, dict):
        return found
    for group in ("required", "optional"):
        specs = inputs.get(group)
        for name, spec in (specs.items() if isinstance(specs, dict) else ()):
            choices = combo_choices(spec)
            if choices is None:
                continue
            folder, known = model_folder(class_name, name)
            if known or any(looks_like_model_file(c) for c in choices):
                found[name] = {"folder": folder, "choices": choices}
    return found


def map_model_file(folder: str, name: Any) -> dict[str, Any]:
    """Columns of one ``/models/{folder}`` entry (a path relative to the folder, server OS separators)."""
    if not isinstance(name, str) or not name:
        raise RecordError(f"model folder {folder!r}: entry {name!r} is not a file name")
    normalized = name.replace("\\", "/")
    subdirectory = normalized.rsplit("/", 1)[0] if "/" in normalized else None
    return {"folder": folder, "file_name": name, "subdirectory": subdirectory, "base_name": base_name(name)}


def system_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """``/system_stats`` without the server's command line (it can carry paths and keys)."""
    system = {k: v for k, v in (stats.get("system") or {}).items() if k != "argv"}
    return {"system": system, "devices": stats.get("devices") or []}


SOURCE = SourceSpec(
    name="comfyui",
    display_name="ComfyUI",
    asset_name="workflows",
    description=(
        "ComfyUI workflows from the configured directories (UI and API JSON, PNG text chunks) with the model "
        "files they reference, and the server's node types (/object_info) and model files (/models). Files, "
        "node types and model files that disappear are marked removed, not deleted."
    ),
    settings_model=ComfyUISettings,
    table=comfyui_workflows,
    run_factory=ComfyUIRun,
)
