"""What a ComfyUI workflow contains: its format, its node types and the model files it names.

Two formats exist (see ``shared/sources/comfyui/README.md``): the UI format (LiteGraph
``nodes``/``links``, what the editor saves and the PNG ``workflow`` chunk holds) and the API
format (``{node_id: {class_type, inputs}}``, what was executed, the PNG ``prompt`` chunk).
Model references come from the API format's named inputs when it is present (it is what ran,
with muted nodes dropped), else from the UI format's positional ``widgets_values``, which need
a table of each loader's widget order because the UI format does not name its widgets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

#: Model inputs by name and the ComfyUI model folder (``/models/{folder}``) they list.
#: ``unet_name``/``clip_name`` use the current folder names the server lists (``diffusion_models``,
#: ``text_encoders``; ``unet``/``clip`` are legacy aliases it answers 404 for), so references
#: join with ``comfyui_model_files`` on (folder, file_name).
MODEL_INPUT_FOLDERS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "config_name": "configs",
    "lora_name": "loras",
    "vae_name": "vae",
    "control_net_name": "controlnet",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "upscale_model_name": "upscale_models",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "photomaker_model_name": "photomaker",
    "audio_encoder_name": "audio_encoders",
}

#: Inputs whose folder depends on the node: ``clip_name`` of a CLIP vision loader, the generic
#: ``model_name`` of the upscale loader.
NODE_INPUT_FOLDERS: dict[tuple[str, str], str] = {
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("DiffusersLoader", "model_path"): "diffusers",
}

#: Widget inputs of the core loaders in ``widgets_values`` order (their ``input_order`` minus
#: sockets; none has a seed, so no ``control_after_generate`` value shifts the positions).
UI_WIDGETS: dict[str, tuple[str, ...]] = {
    "CheckpointLoaderSimple": ("ckpt_name",),
    "CheckpointLoader": ("config_name", "ckpt_name"),
    "unCLIPCheckpointLoader": ("ckpt_name",),
    "ImageOnlyCheckpointLoader": ("ckpt_name",),
    "DiffusersLoader": ("model_path",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "VAELoader": ("vae_name",),
    "ControlNetLoader": ("control_net_name",),
    "DiffControlNetLoader": ("control_net_name",),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "CLIPLoader": ("clip_name", "type", "device"),
    "DualCLIPLoader": ("clip_name1", "clip_name2", "type", "device"),
    "TripleCLIPLoader": ("clip_name1", "clip_name2", "clip_name3"),
    "QuadrupleCLIPLoader": ("clip_name1", "clip_name2", "clip_name3", "clip_name4"),
    "CLIPVisionLoader": ("clip_name",),
    "StyleModelLoader": ("style_model_name",),
    "GLIGENLoader": ("gligen_name",),
    "HypernetworkLoader": ("hypernetwork_name", "strength"),
    "UpscaleModelLoader": ("model_name",),
    "PhotoMakerLoader": ("photomaker_model_name",),
}

#: Extensions ComfyUI lists as model files (plus .gguf/.onnx used by common custom loaders):
#: an input of an unknown node whose value ends in one is taken as a model reference.
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf", ".onnx")

#: UI-only nodes: never executed, their widget text is not a model reference.
UI_ONLY_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})

_NO_MODEL = {"", "none", "None", "null"}
#: Longer values are not file names (and would exceed PostgreSQL's btree entry size in the keys).
_MAX_NAME_CHARS, _MAX_KEY_CHARS = 1024, 255
_INT_RANGE = (-(2**63), 2**64 - 1)


class NotAWorkflow(ValueError):
    """JSON that is neither a UI workflow nor an API prompt."""


def parse_json(text: str) -> Any:
    """Parse a workflow document the way ComfyUI wrote it, into values every catalog backend stores.

    ComfyUI writes with Python's ``json.dumps``, which may emit ``NaN``/``Infinity`` (stored as
    null: JSON columns refuse them); integers beyond 64 bits become strings and NUL characters
    are dropped, both of which PostgreSQL would refuse.
    """
    return _storable(json.loads(text, parse_constant=lambda _constant: None))


def _storable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_storable(k) if isinstance(k, str) else str(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def workflow_format(document: Any) -> str:
    """``ui`` or ``api``; raise :class:`NotAWorkflow` saying what the document is instead."""
    if not isinstance(document, dict):
        raise NotAWorkflow(f"JSON {type(document).__name__}, not a workflow object")
    if isinstance(document.get("nodes"), list):
        return "ui"
    if document and all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in document.values()):
        return "api"
    keys = ", ".join(list(document)[:5]) or "no keys"
    raise NotAWorkflow(f"JSON object with neither a 'nodes' list nor API nodes with class_type ({keys})")


def looks_like_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS)


def model_folder(class_type: str, input_name: str) -> tuple[str | None, bool]:
    """The model folder an input lists, and whether the input is known to name a model file."""
    folder = NODE_INPUT_FOLDERS.get((class_type, input_name)) or MODEL_INPUT_FOLDERS.get(input_name)
    return folder, folder is not None


def base_name(file_name: str) -> str:
    """The file name without its subdirectory (either separator: the server's OS decides)."""
    return file_name.replace("\\", "/").rsplit("/", 1)[-1]


def _reference(node_id: str, class_type: str, input_name: str, value: Any) -> dict[str, Any] | None:
    if not isinstance(value, str) or value.strip() in _NO_MODEL:
        return None  # a link to another node, a number, or "None" (no model chosen)
    if len(value) > _MAX_NAME_CHARS or len(node_id) > _MAX_KEY_CHARS or len(input_name) > _MAX_KEY_CHARS:
        return None
    folder, known = model_folder(class_type, input_name)
    if not known and not looks_like_model_file(value):
        return None
    return {"node_id": node_id, "class_type": class_type, "input_name": input_name, "folder": folder,
            "file_name": value, "base_name": base_name(value)}


def api_node_types(prompt: Mapping[str, Any]) -> set[str]:
    return {node["class_type"] for node in prompt.values() if isinstance(node, dict)
            and isinstance(node.get("class_type"), str)}


def api_model_references(prompt: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every input of every API node that names a model file, in node order."""
    found: list[dict[str, Any]] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            continue
        inputs = node.get("inputs")
        for name, value in (inputs.items() if isinstance(inputs, dict) else ()):
            if (reference := _reference(str(node_id), node["class_type"], str(name), value)) is not None:
                found.append(reference)
    return found


def _ui_nodes(workflow: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(node id, node)`` for top-level nodes, then for the nodes inside subgraph definitions.

    A subgraph's inner node is identified as ``<subgraph id>:<node id>`` (the API format
    flattens instances the same way, with the instance id in front).
    """
    for node in workflow.get("nodes") or []:
        if isinstance(node, dict):
            yield str(node.get("id")), node
    for subgraph in _subgraphs(workflow).values():
        for node in subgraph.get("nodes") or []:
            if isinstance(node, dict):
                yield f"{subgraph['id']}:{node.get('id')}", node


def _subgraphs(workflow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    definitions = workflow.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    return {s["id"]: s for s in subgraphs or [] if isinstance(s, dict) and isinstance(s.get("id"), str)}


def ui_node_types(workflow: Mapping[str, Any]) -> set[str]:
    """Node types of the graph; a subgraph instance (type = subgraph id) counts as its inner nodes."""
    subgraph_ids = set(_subgraphs(workflow))
    return {node["type"] for _, node in _ui_nodes(workflow)
            if isinstance(node.get("type"), str) and node["type"] not in subgraph_ids}


def ui_model_references(workflow: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Model files named by the widgets of UI nodes (muted and bypassed nodes included).

    Known loaders are read by widget position (``UI_WIDGETS``); a node that saved its widgets as
    a dict is read like API inputs; any other node contributes the widget values that look like
    model files, named ``widgets_values[i]`` since the UI format does not say which input they fill.
    """
    found: list[dict[str, Any]] = []
    for node_id, node in _ui_nodes(workflow):
        class_type = node.get("type")
        values = node.get("widgets_values")
        if not isinstance(class_type, str) or class_type in UI_ONLY_TYPES:
            continue
        if isinstance(values, dict):
            pairs = [(str(k), v) for k, v in values.items()]
        elif isinstance(values, list) and class_type in UI_WIDGETS:
            pairs = list(zip(UI_WIDGETS[class_type], values, strict=False))
        elif isinstance(values, list):
            pairs = [(f"widgets_values[{i}]", v) for i, v in enumerate(values) if looks_like_model_file(v)]
        else:
            continue
        for name, value in pairs:
            if (reference := _reference(node_id, class_type, name, value)) is not None:
                found.append(reference)
    return found


def unique_references(references: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One reference per (node, input): the child table's key."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for reference in references:
        seen.setdefault((reference["node_id"], reference["input_name"]), reference)
    return list(seen.values())
