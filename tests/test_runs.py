"""interp.runs: result folders saved whole, found again by their settings, listed newest first."""

from __future__ import annotations

import json
import os

import pytest

from interp.errors import WorkbenchError
from interp.runs import find_runs, read_run, run_folder, save_run, saved_run


def _fill(tmp):
    (tmp / "circuit.json").write_text(json.dumps({"model": "m", "classes": {}, "seed": 3, "n_prompts": 4}))


def test_save_then_find_by_settings(tmp_path):
    settings = {"n_prompts": 4, "seed": 3, "layers": (1, 2)}
    folder = save_run(tmp_path, "ioi", "org/m", settings, _fill, {"note": 1})
    assert folder == run_folder(tmp_path, "ioi", "org/m", settings) and folder.name.startswith("ioi-m-")
    run = saved_run(tmp_path, "ioi", "org/m", settings)  # a tuple comes back as run.json's list and still matches
    assert run is not None and run.made_by == "dashboard" and run.settings["layers"] == [1, 2]
    assert saved_run(tmp_path, "ioi", "org/m", {**settings, "seed": 4}) is None
    assert saved_run(tmp_path, "ioi", "other", settings) is None
    assert json.loads((folder / "run.json").read_text())["extra"] == {"note": 1}
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary, no lock file left


def test_a_killed_save_is_redone_and_a_failed_one_leaves_nothing(tmp_path):
    settings = {"seed": 0}
    target = run_folder(tmp_path, "ioi", "m", settings)
    stale = tmp_path / f".{target.name}.tmp-dead"  # what a save killed mid-write leaves
    stale.mkdir()
    (stale / "circuit.json").write_text("{")
    save_run(tmp_path, "ioi", "m", settings, _fill)
    assert not stale.exists() and read_run(target).settings == settings

    def broken(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        save_run(tmp_path, "ioi", "m", {"seed": 1}, broken)
    with pytest.raises(WorkbenchError, match="wrote no edges.json"):
        save_run(tmp_path, "circuit", "m", {"seed": 1}, _fill)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_find_runs_reads_cli_folders_and_skips_the_unfinished(tmp_path):
    (tmp_path / "ioi").mkdir()
    _fill(tmp_path / "ioi")  # as `interp ioi --out runs/ioi` writes it: no run.json
    deep = tmp_path / "a" / "b" / "circuit"
    deep.mkdir(parents=True)
    (deep / "edges.json").write_text(json.dumps({"model": "m", "method": "eap", "task": "ioi", "steps": None}))
    idx = tmp_path / "memories"
    idx.mkdir()
    (idx / "manifest.json").write_text(json.dumps({"format": "interp-memories/x", "status": "building"}))
    (tmp_path / ".hidden").mkdir()
    _fill(tmp_path / ".hidden")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "circuit.json").write_text("not json")
    os.utime(tmp_path / "ioi" / "circuit.json", (1, 1))  # the older one
    runs = find_runs(tmp_path)
    assert [(r.folder.name, r.kind, r.made_by) for r in runs] == [("circuit", "circuit", "cli"), ("ioi", "ioi", "cli")]
    assert runs[1].settings == {"n_prompts": 4, "seed": 3} and runs[1].model == "m"
    assert runs[0].settings == {"task": "ioi", "method": "eap", "steps": None} and "method eap" in runs[0].describe()
    assert find_runs(tmp_path, ["ioi"]) == runs[1:] and find_runs(tmp_path / "none") == []
    assert find_runs(tmp_path, max_depth=1) == runs[1:]
    (idx / "manifest.json").write_text(json.dumps({"format": "interp-memories/x", "status": "complete",
                                                   "model_info": {"name": "m"}, "settings": {"n_tokens": 9}}))
    assert read_run(idx).settings == {"n_tokens": 9} and read_run(idx).kind == "memories"
    for bad, message in ((tmp_path / "none", "no saved result"), (tmp_path / "a", "holds no saved result"),
                         (tmp_path / "broken", "cannot be read")):
        with pytest.raises(WorkbenchError, match=message):
            read_run(bad)
    with pytest.raises(WorkbenchError, match="unknown result kind"):
        find_runs(tmp_path, ["graphs"])
