"""Training checkpoints: output_dir/checkpoint-{step}/ holds an in-house model (config.json,
model.safetensors, tokenizer files -- `interp.load(folder)` opens it) plus the trainer's state,
named as in HF's Trainer: trainer_state.json (step, data position, arguments), optimizer.pt,
scheduler.pt, rng_state.pt (and scaler.pt with fp16). The folder is written atomically
(built in a temporary sibling, then renamed), so a kill mid-save never leaves a half checkpoint.
The .pt files hold only tensors and plain containers and are read with `weights_only=True`.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from interp.errors import WorkbenchError
from interp.models.inhouse import NativeSpec, save_inhouse

PREFIX = "checkpoint-"
STATE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pt")


def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | Path, step: int, model, spec: NativeSpec, trainer_state: dict[str, Any],
                    optimizer, scheduler, scaler=None) -> Path:
    """Write output_dir/checkpoint-{step}/ atomically and return it."""
    files = {
        "trainer_state.json": json.dumps(trainer_state, indent=2).encode(),
        "optimizer.pt": _to_bytes(optimizer.state_dict()),
        "scheduler.pt": _to_bytes(scheduler.state_dict()),
        "rng_state.pt": _to_bytes(rng_state()),
    }
    if scaler is not None:
        files["scaler.pt"] = _to_bytes(scaler.state_dict())
    extra = {"training": {"step": step, "preset": trainer_state.get("preset"), "corpus": trainer_state.get("corpus")}}
    return save_inhouse(model, spec, Path(output_dir) / f"{PREFIX}{step}", extra=extra, extra_files=files)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint folders of a run, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := re.fullmatch(rf"{PREFIX}(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def rotate_checkpoints(output_dir: str | Path, keep: int | None) -> None:
    if keep is None:
        return
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _read_pt(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        raise WorkbenchError(f"checkpoint {str(folder)!r} has no {name}; it is incomplete (pick another checkpoint)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated / garbled files
        raise WorkbenchError(f"{str(path)!r} is corrupt ({type(e).__name__}); resume from another checkpoint") from e


def read_trainer_state(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / "trainer_state.json"
    if not path.is_file():
        raise WorkbenchError(f"{str(folder)!r} is not a training checkpoint (no trainer_state.json)")
    try:
        state = json.loads(path.read_text())
        int(state["global_step"]), int(state["data_position"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise WorkbenchError(f"{str(path)!r} is corrupt ({type(e).__name__}); resume from another checkpoint") from e
    return state


def load_training_state(folder: str | Path) -> dict[str, Any]:
    """Everything needed to continue a run, validated: trainer state, optimizer, scheduler, RNG."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WorkbenchError(f"checkpoint {str(folder)!r} does not exist")
    out = {"trainer_state": read_trainer_state(folder)}
    for name in STATE_FILES[1:]:
        out[name.removesuffix(".pt")] = _read_pt(folder, name)
    out["scaler"] = _read_pt(folder, "scaler.pt") if (folder / "scaler.pt").is_file() else None
    return out


def resolve_resume(resume: str | None, output_dir: str | None) -> Path | None:
    """`resume_from_checkpoint`: a folder, or "latest"/"true" for the newest in output_dir."""
    if resume is None or str(resume).lower() in ("", "false", "none"):
        return None
    if str(resume).lower() in ("latest", "true"):
        if output_dir is None:
            raise WorkbenchError("resume_from_checkpoint='latest' needs an output_dir to look in")
        found = latest_checkpoint(output_dir)
        if found is None:
            raise WorkbenchError(f"no checkpoint-* folder in {output_dir!r} to resume from")
        return found
    return Path(resume)
