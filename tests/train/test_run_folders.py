"""The runs folder: training runs found under it, newest first, a sweep's runs one folder down,
never a run's own checkpoints; `interp train` names it when --output_dir is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from interp.cli import main
from interp.train.folders import find_training_runs, runs_dir


def _run(folder: Path, when: float, steps=(10, 20), checkpoints=()) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in steps))
    for step in checkpoints:
        (folder / f"checkpoint-{step}").mkdir()
        os.utime(folder / f"checkpoint-{step}", (when, when))
    os.utime(folder / "metrics.jsonl", (when, when))
    return folder


def test_runs_are_listed_newest_first_with_their_last_step(tmp_path):
    root = tmp_path / "runs"
    _run(root / "old", 1_000_000)
    _run(root / "sweep" / "seed1", 3_000_000, steps=(5,), checkpoints=(40,))
    _run(root / "new", 2_000_000, steps=(10, 20, 30))
    (root / "notes").mkdir()  # no run: not listed
    (root / ".hidden-run").mkdir()
    found = find_training_runs(root)
    assert [r.folder.relative_to(root).as_posix() for r in found] == ["sweep/seed1", "new", "old"]
    assert [r.last_step for r in found] == [40, 30, 20]  # the newest checkpoint, else the log's last step
    assert found[0].n_checkpoints == 1 and found[0].describe(root).startswith("sweep/seed1 · step 40 · 1 checkpoint · ")
    assert find_training_runs(tmp_path / "missing") == []
    assert find_training_runs(root / "old")[0].folder == root / "old"  # a run folder itself


def test_the_runs_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("INTERP_RUNS_DIR", raising=False)
    assert runs_dir() == Path("runs")
    monkeypatch.setenv("INTERP_RUNS_DIR", str(tmp_path))
    assert runs_dir() == tmp_path


def test_train_without_output_dir_names_the_runs_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("INTERP_RUNS_DIR", str(tmp_path / "myruns"))
    assert main(["train", "--preset", "attn-only-2l", "--max_steps", "3"]) == 2
    err = capsys.readouterr().err
    assert f"--output_dir {tmp_path / 'myruns' / 'attn-only-2l'}" in err and "the dashboard lists the runs" in err
