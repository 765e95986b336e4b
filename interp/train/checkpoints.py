"""Training checkpoints: output_dir/checkpoint-{step}/ holds an in-house model (config.json,
model.safetensors, tokenizer files -- `interp.load(folder)` opens it) plus the trainer's state,
named as in HF's Trainer: trainer_state.json (step, data position, arguments), optimizer.pt,
scheduler.pt, rng_state.pt (and scaler.pt with fp16). The folder is written atomically
(built in a temporary sibling, then renamed), so a kill mid-save never leaves a half checkpoint.
The .pt files hold only tensors and plain containers and are read with `weights_only=True`.

An output folder belongs to one run: a new run refuses a folder holding another run's
checkpoints unless told to resume it or to overwrite it, and before a run writes, the
temporaries a killed save left behind are cleared.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from interp.errors import WorkbenchError
from interp.io import TMP_TAG, remove_temporaries, write_json
from interp.models.inhouse import NativeSpec, save_inhouse
from interp.train.args import resume_requested

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


# Written before an overwrite deletes the earlier run's checkpoints: their names, which no longer
# count as checkpoints of the folder. A kill midway through the deletion leaves none of them for
# `latest` to resume; the next start in the folder finishes the deletion.
VOID = ".overwritten.json"


def _void(folder: Path) -> set[str]:
    try:
        return set(json.loads((folder / VOID).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint folders of a run, oldest first (an overwritten run's are left out)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    void = _void(folder)
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := re.fullmatch(rf"{PREFIX}(\d+)", p.name)) and p.name not in void]  # fmt: skip
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder: renamed to a temporary first, so a kill midway leaves no half
    checkpoint (`prepare_output_dir` clears the temporary on the next start)."""
    doomed = folder.with_name(f".{folder.name}{TMP_TAG}deleted-{os.getpid()}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def rotate_checkpoints(output_dir: str | Path, keep: int | None) -> None:
    if keep is None:
        return
    for old in list_checkpoints(output_dir)[:-keep]:
        _discard(old)


class OutputDirInUse(WorkbenchError):
    """A new run was asked to start in a folder that holds an earlier run's checkpoints."""

    def __init__(self, folder: Path, newest: Path):
        self.folder, self.newest = folder, newest
        super().__init__(
            f"output folder {str(folder)!r} already holds checkpoints (newest: {newest.name}); set "
            "resume_from_checkpoint='latest' to continue that run, or overwrite_output_dir=True to delete them and start again"
        )


def check_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an earlier run's checkpoints (a rerun would silently start
    at step 0 again), unless it resumes or overwrites them."""
    newest = latest_checkpoint(output_dir)
    if newest is not None and not resuming and not overwrite:
        raise OutputDirInUse(output_dir, newest)


def prepare_output_dir(output_dir: Path, overwrite: bool) -> list[Path]:
    """Just before a run's first write: delete the temporaries a killed write left behind (a
    `.checkpoint-N.tmp-*` folder, a `.metrics.jsonl.tmp-*` file) and, with `overwrite`, the
    earlier run's checkpoints (its metrics.jsonl is restarted by the new run's log). Returns
    what was removed."""
    removed = remove_temporaries(output_dir)
    if overwrite:
        write_json(output_dir / VOID, sorted(_void(output_dir) | {p.name for p in list_checkpoints(output_dir)}))
    for name in sorted(_void(output_dir)):  # this overwrite's, or the one a kill interrupted
        if (output_dir / name).is_dir():
            _discard(output_dir / name)
            removed.append(output_dir / name)
    (output_dir / VOID).unlink(missing_ok=True)
    return removed


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
    out = {"trainer_state": read_trainer_state(folder)}
    for name in STATE_FILES[1:]:
        out[name.removesuffix(".pt")] = _read_pt(folder, name)
    out["scaler"] = _read_pt(folder, "scaler.pt") if (folder / "scaler.pt").is_file() else None
    return out


def resolve_resume(resume: str | None, output_dir: str | Path | None) -> Path | None:
    """`resume_from_checkpoint`: a checkpoint folder, or "latest"/"true" for the newest in output_dir."""
    if not resume_requested(resume):
        return None
    if str(resume).lower() in ("latest", "true"):
        if output_dir is None:
            raise WorkbenchError("resume_from_checkpoint='latest' needs an output_dir to look in")
        found = latest_checkpoint(output_dir)
        if found is None:
            raise WorkbenchError(f"no checkpoint-* folder in {str(output_dir)!r} to resume from")
        return found
    path = Path(resume).expanduser()
    if path.is_file():
        raise WorkbenchError(f"resume_from_checkpoint {str(path)!r} is a file, not a checkpoint folder; give a "
                             f"{PREFIX}N folder of a run, or 'latest'")
    if not path.is_dir():
        raise WorkbenchError(f"checkpoint {str(path)!r} does not exist; give a {PREFIX}N folder of a run, or 'latest'")
    return path
