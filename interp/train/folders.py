"""Where training runs live: the runs folder (`interp train --output_dir runs/NAME` by convention;
INTERP_RUNS_DIR, default ./runs, the folder the dashboard reads) and the runs in it, newest first.

A training run is a folder holding metrics.jsonl or checkpoint-<step>/ folders (`interp train`
writes both). `find_training_runs` looks a few folders down (runs/NAME, runs/sweep/NAME) and never
inside a run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from interp.train.checkpoints import list_checkpoints

RUNS_ENV = "INTERP_RUNS_DIR"
DEFAULT_RUNS = "runs"
MAX_DEPTH = 2  # folders below the runs folder searched for runs (runs/sweep/NAME)


def runs_dir() -> Path:
    """The runs folder: $INTERP_RUNS_DIR, else ./runs (read at each call)."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS)


def is_training_run(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "metrics.jsonl").is_file() or bool(list_checkpoints(folder)))


def _last_logged_step(metrics: Path) -> int | None:
    """The step of metrics.jsonl's last whole record (read from its tail), or None."""
    try:
        with metrics.open("rb") as f:
            f.seek(max(0, metrics.stat().st_size - 8192))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


@dataclass(frozen=True)
class TrainingRun:
    """One training-run folder on disk."""

    folder: Path
    last_step: int | None  # the newest checkpoint's step, else the log's last step
    n_checkpoints: int
    modified: float  # when it was last written to (newest of metrics.jsonl and its checkpoints)

    def describe(self, root: Path | None = None) -> str:
        """One line: its name (relative to `root`), newest step, checkpoints, when last written."""
        try:
            name = str(self.folder.relative_to(root)) if root is not None else self.folder.name
        except ValueError:
            name = str(self.folder)
        step = f"step {self.last_step}" if self.last_step is not None else "no steps yet"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.modified))
        return f"{name} · {step} · {self.n_checkpoints} checkpoint{'s' * (self.n_checkpoints != 1)} · {when}"


def read_training_run(folder: Path) -> TrainingRun:
    checkpoints = list_checkpoints(folder)
    metrics = folder / "metrics.jsonl"
    stamps = [p.stat().st_mtime for p in [*checkpoints, *([metrics] if metrics.is_file() else [])]]
    step = int(checkpoints[-1].name.rsplit("-", 1)[1]) if checkpoints else None
    logged = _last_logged_step(metrics) if metrics.is_file() else None
    if logged is not None and (step is None or logged > step):
        step = logged
    return TrainingRun(folder, step, len(checkpoints), max(stamps, default=folder.stat().st_mtime))


def find_training_runs(root: str | Path | None = None, max_depth: int = MAX_DEPTH) -> list[TrainingRun]:
    """Every training run under `root` (default `runs_dir()`), the root itself included, at most
    `max_depth` folders down (hidden folders skipped), newest first."""
    root = Path(root).expanduser() if root is not None else runs_dir()
    if not root.is_dir():
        return []
    found, todo = [], [(root, 0)]
    while todo:
        folder, depth = todo.pop()
        if is_training_run(folder):
            found.append(read_training_run(folder))
            continue  # a run's own folders are its checkpoints
        if depth < max_depth:
            try:
                todo += [(p, depth + 1) for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
            except OSError:
                continue
    return sorted(found, key=lambda r: (r.modified, str(r.folder)), reverse=True)
