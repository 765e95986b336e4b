"""Saved results: a runs folder of result folders in the CLI's own formats, found and opened again.

    runs/
      ioi/                             `interp ioi --out runs/ioi`: circuit.json and its figures
      circuit/                         `interp circuit --out runs/circuit`: edges.json and its figures
      ioi-smollm2-135m-1f0c2a9e/       a discovery saved by the dashboard: the same files + run.json
      circuit-smollm2-135m-8b1d40c3/   an edge circuit saved by the dashboard: the same files + run.json
      memories-smollm2-135m/           a memory index (manifest.json, ...), resumable by itself
      graph/                           `interp graph --out runs/graph`: graph.json, graph.html, ...

A result folder is known by its main file (`KINDS`); run.json, where present, records who made it
and with which settings (a CLI folder's settings are read from its main file). `save_run` writes
a whole folder atomically (interp.io.write_dir, under a writer lock, after clearing what a killed
save left), into a folder named after the kind, the model and a digest of the settings: the same
settings always land in the same folder, so `saved_run` finds a finished result again instead of
computing it anew, and a save cut short is simply redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from interp.errors import WorkbenchError
from interp.io import remove_temporaries, write_dir, write_json, writer_lock

KINDS = {"ioi": "circuit.json", "circuit": "edges.json", "memories": "manifest.json", "graph": "graph.json"}  # kind -> its main file
TITLES = {"ioi": "IOI discovery", "circuit": "edge circuit", "memories": "memory index", "graph": "attribution graph"}
RUN_FILE = "run.json"  # who made a saved folder, from which model, with which settings
MAX_DEPTH = 3  # folders below the runs folder searched for results (runs/a/b/c)


@dataclass(frozen=True)
class SavedRun:
    """One result folder on disk."""

    folder: Path
    kind: str  # a key of KINDS
    model: str  # the model spec it was made with (the model's name for a CLI folder)
    settings: dict  # the settings it was made with
    saved: float  # when its main file was written (seconds since the epoch)
    made_by: str = "cli"  # "dashboard" or "cli"

    @property
    def file(self) -> Path:
        return self.folder / KINDS[self.kind]

    def describe(self) -> str:
        """One line: what, from which model, when, with which settings."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved))
        shown = ", ".join(f"{k} {v}" for k, v in self.settings.items() if v is not None and k != "model")
        return f"{TITLES[self.kind]} · {self.model} · {when}" + (f" · {shown}" if shown else "")


def digest(model: str, settings: dict) -> str:
    """Eight hex digits naming (model, settings); equal settings give equal digests."""
    text = json.dumps({"model": model, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_folder(root: str | Path, kind: str, model: str, settings: dict) -> Path:
    """The folder a result of `kind` made by `model` with `settings` is saved in."""
    check_kind(kind)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or model).strip("-.")[:40] or "model"
    return Path(root) / f"{kind}-{slug}-{digest(model, settings)}"


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise WorkbenchError(f"unknown result kind {kind!r}; use one of {', '.join(KINDS)}")


def save_run(root: str | Path, kind: str, model: str, settings: dict, fill: Callable[[Path], object],
             extra: dict | None = None) -> Path:  # fmt: skip
    """Write a result folder atomically: `fill(tmp)` writes the kind's files (its CLI writer), then
    run.json records the model, the settings and `extra`. Returns the folder."""
    folder = run_folder(root, kind, model, settings)
    record = {"kind": kind, "model": model, "settings": settings, "made_by": "dashboard", "saved_at": time.time(),
              **({"extra": extra} if extra else {})}  # fmt: skip

    def write(tmp: Path) -> None:
        fill(tmp)
        if not (tmp / KINDS[kind]).is_file():
            raise WorkbenchError(f"saving the {TITLES[kind]} wrote no {KINDS[kind]}")
        write_json(tmp / RUN_FILE, record, indent=1)

    with writer_lock(folder, "result folder"):
        remove_temporaries(folder.parent, folder.name)  # what a killed save left: the save is redone whole
        return write_dir(folder, write)


def saved_run(root: str | Path, kind: str, model: str, settings: dict) -> SavedRun | None:
    """The finished result saved for exactly these (kind, model, settings), or None."""
    folder = run_folder(root, kind, model, settings)
    try:
        run = read_run(folder)
    except WorkbenchError:
        return None
    same = run.kind == kind and run.model == model and _plain(run.settings) == _plain(settings)
    return run if same and run.made_by == "dashboard" else None


def _plain(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))  # tuples as lists, as run.json holds them


def read_run(path: str | Path) -> SavedRun:
    """The result folder at `path` (or the folder of its main file), with its settings."""
    folder = Path(path).expanduser()
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise WorkbenchError(f"no saved result at {str(folder)!r}")
    kind = next((k for k, name in KINDS.items() if (folder / name).is_file()), None)
    if kind is None:
        raise WorkbenchError(f"{str(folder)!r} holds no saved result (none of {', '.join(KINDS.values())})")
    main = folder / KINDS[kind]
    try:
        data = json.loads(main.read_text())
        record = json.loads((folder / RUN_FILE).read_text()) if (folder / RUN_FILE).is_file() else None
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"{str(main)!r} cannot be read ({type(e).__name__}); save the result again") from None
    if not isinstance(data, dict) or (record is not None and not isinstance(record, dict)):
        raise WorkbenchError(f"{str(main)!r} is not a saved {TITLES[kind]}")
    if kind == "memories" and (not str(data.get("format", "")).startswith("interp-memories/")
                               or data.get("status") != "complete"):  # fmt: skip
        raise WorkbenchError(f"{str(folder)!r} holds no finished memory index")
    saved = main.stat().st_mtime
    if record is not None and record.get("kind") == kind:
        return SavedRun(folder, kind, str(record.get("model", "")), dict(record.get("settings") or {}), saved,
                        str(record.get("made_by", "dashboard")))  # fmt: skip
    return SavedRun(folder, kind, _model_of(kind, data), _settings_of(kind, data), saved)


def _model_of(kind: str, data: dict) -> str:
    if kind == "memories":
        return str((data.get("model_info") or {}).get("name", ""))
    if kind == "graph" and isinstance(data.get("model"), dict):
        return str(data["model"].get("name", ""))
    return str(data.get("model", ""))


def _settings_of(kind: str, data: dict) -> dict:
    """The settings a CLI folder's main file records."""
    if kind == "memories":
        return dict(data.get("settings") or {})
    if kind == "graph":
        got = {"prompt": data.get("prompt")}
        if isinstance(data.get("thresholds"), dict):
            got |= {f"{k} threshold": v for k, v in data["thresholds"].items()}
        return got
    if kind == "ioi":
        keys = ("n_prompts", "n_heldout", "seed", "corruption")
        got = {k: data[k] for k in keys if k in data}
        if isinstance(data.get("config"), dict) and "threshold" in data["config"]:
            got["threshold"] = data["config"]["threshold"]
        return got
    keys = ("task", "method", "steps", "corruption", "n_prompts", "n_heldout", "ablation", "pruned", "seed")
    got = {k: data[k] for k in keys if k in data}
    if isinstance(data.get("graph"), dict):  # files from before the graph and scoring draws were recorded lack them
        got["graph"] = graph_name(data)
    if isinstance(data.get("pooled"), dict) and "n_draws" in data["pooled"]:
        got["scoring_draws"] = data["pooled"]["n_draws"]
    return got


def find_runs(root: str | Path, kinds: Iterable[str] | None = None, max_depth: int = MAX_DEPTH) -> list[SavedRun]:
    """Every readable result folder under `root` (at most `max_depth` folders down; hidden folders,
    such as a save's temporaries, skipped), of `kinds` (default all), newest first."""
    kinds = set(KINDS if kinds is None else kinds)
    for kind in kinds:
        check_kind(kind)
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    names = {KINDS[k] for k in kinds}
    found = []
    for here, dirs, files in os.walk(root):
        depth = len(Path(here).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < max_depth)
        if names & set(files):
            try:
                run = read_run(here)
            except WorkbenchError:  # a damaged or unfinished folder is not offered
                continue
            if run.kind in kinds:
                found.append(run)
            if run.kind == "memories":
                dirs[:] = []  # an index's work/ holds nothing else
    return sorted(found, key=lambda r: r.saved, reverse=True)


def open_edges(path: str | Path, model):
    """An edges.json (`interp circuit --out`, or an edge circuit saved by the dashboard) read back
    for `model` as (a CircuitReport without its prompts, split=None; the whole file), with the graph
    it is on (ours or MIB's ungrouped one, edges.json's "graph" block), the random baseline ("random")
    and the intervals over scoring draws ("pooled") where the file has them: a file written before
    they were recorded reads as our grouped graph with neither. A file written for another model's
    graph is refused (interp.circuits.io.read_edges)."""
    from dataclasses import replace

    from interp.circuits.draws import Pooled
    from interp.circuits.faithfulness import RandomBaseline
    from interp.circuits.io import read_edges
    from interp.circuits.report import CircuitReport
    from interp.circuits.types import Graph

    graph = Graph.of(model)
    try:
        scores, curves, data = read_edges(path, graph)
    except WorkbenchError as first:  # MIB's ungrouped graph has q, k and v per query head: try it before refusing
        if graph.n_kv == graph.n_heads:
            raise
        try:
            scores, curves, data = read_edges(path, replace(graph, n_kv=graph.n_heads))
        except WorkbenchError:
            raise first from None
    if "abs" not in curves:
        raise WorkbenchError(f"{str(path)!r} holds no faithfulness curve; write it again with `interp circuit`")
    report = CircuitReport(str(data.get("model", "")), None, scores, curves["abs"], curves.get("signed", curves["abs"]),
                           list(data.get("exact_check") or []), int(data.get("seed", 0)))  # fmt: skip
    report.graph_name = graph_name(data)
    try:
        if isinstance(data.get("random"), dict):
            report.random = RandomBaseline.from_json(data["random"])
        if isinstance(data.get("pooled"), dict):
            report.pooled = Pooled(**{k: data["pooled"][k] for k in Pooled.__dataclass_fields__})
    except (KeyError, TypeError) as e:
        raise WorkbenchError(f"{str(path)!r}: its random or pooled block cannot be read ({type(e).__name__}: {e}); "
                             "write it again with `interp circuit`") from None  # fmt: skip
    return report, data


def graph_name(data: dict) -> str:
    """Which graph an edges.json is on: its "graph" block's name; a file from before that block was
    always on our grouped graph."""
    block = data.get("graph")
    return str(block.get("name") or "grouped") if isinstance(block, dict) else "grouped"
