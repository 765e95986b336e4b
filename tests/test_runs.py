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


def _edges_file(folder, graph, *, blocks: bool) -> dict:
    """An edges.json for `graph` as `interp circuit` writes it: with today's graph, random and pooled
    blocks, or (blocks=False) as written before they existed."""
    import torch

    from interp.circuits.draws import Pooled
    from interp.circuits.faithfulness import RandomBaseline
    from interp.circuits.io import circuit_json, write_edges
    from interp.circuits.types import Curve, EdgeScores

    p = [1.0, 5.0, 100.0]
    f = [0.2, 0.6, 1.0]
    curve = Curve(p, [1, 4, graph.n_edges], [1, 3, graph.n_edges], f, [x - 0.1 for x in f], [x + 0.1 for x in f], 0.7,
                  0.3, (0.6, 0.8), (0.2, 0.4), 2.0, -1.0, [-0.4, 0.8, 2.0], "abs", True, "counterfactual", 6)  # fmt: skip
    scores = EdgeScores(graph, torch.linspace(-1, 1, graph.n_edges), "eap-ig", "ioi", "logit-diff", 6, 2.0, -1.0, steps=2)
    meta = {"model": "m", "seed": 0}
    rand = None
    if blocks:
        meta["graph"] = {"name": "mib" if graph.n_kv == graph.n_heads else "grouped", "about": "", "n_nodes": graph.n_nodes,
                         "n_edges": graph.n_edges}  # fmt: skip
        rand = RandomBaseline(p, [1, 2], [[1, 2, 9], [1, 3, 9]], [[0.0, 0.1, 1.0], [0.0, 0.3, 1.0]], [0.3, 0.4],
                              [0.7, 0.6], 2.0, -1.0, True, "counterfactual", 6)  # fmt: skip
    data = circuit_json(scores, {"abs": curve, "signed": curve}, [], meta, rand)
    if blocks:
        pool = Pooled([0.2, 0.55, 1.0], [0.0, 0.4, 1.0], [0.3, 0.7, 1.0], [[0.2, 0.6, 1.0], [0.2, 0.5, 1.0]], 2, 50)
        data["pooled"] = {"percents": p, **pool.to_dict()}
    write_edges(folder, data)
    return data


def test_open_edges_reads_the_graph_random_and_pooled_blocks_and_their_absence(tmp_path):
    """edges.json from today (graph, random, pooled; on either graph) and from before (none of them)."""
    from dataclasses import replace
    from types import SimpleNamespace

    from interp.circuits.types import Graph
    from interp.models.model import ModelInfo
    from interp.runs import open_edges

    info = ModelInfo("m", "inhouse", "", 2, 4, 2, 32, 8, 64, 100, 64, "rotary", "RMS", True, False)  # GQA: 4 q, 2 kv
    model = SimpleNamespace(info=info, bridge=SimpleNamespace(cfg=None))
    ours = Graph.of(model)
    mib = replace(ours, n_kv=ours.n_heads)
    assert mib.n_edges > ours.n_edges
    for name, graph in (("grouped", ours), ("mib", mib)):
        (tmp_path / name).mkdir()
        _edges_file(tmp_path / name, graph, blocks=True)
        report, data = open_edges(tmp_path / name, model)
        assert report.graph_name == name and report.scores.graph == graph and data["graph"]["n_edges"] == graph.n_edges
        assert report.random.draws == 2 and tuple(report.random.at(5.0)) == pytest.approx((0.2, 0.1, 0.3))
        assert report.random.area("cmd").value == pytest.approx(0.65)
        assert report.pooled.n_draws == 2 and report.pooled.at(1) == (0.55, 0.4, 0.7)
        assert read_run(tmp_path / name).settings["graph"] == name and read_run(tmp_path / name).settings["scoring_draws"] == 2
    (tmp_path / "old").mkdir()
    _edges_file(tmp_path / "old", ours, blocks=False)  # a CLI folder from before the blocks
    report, data = open_edges(tmp_path / "old", model)
    assert report.graph_name == "grouped" and report.random is None and report.pooled is None
    assert "graph" not in read_run(tmp_path / "old").settings
    other = SimpleNamespace(info=replace(info, n_layers=3), bridge=SimpleNamespace(cfg=None))
    with pytest.raises(WorkbenchError, match="this model's graph has"):  # another model's file: the grouped graph's message
        open_edges(tmp_path / "mib", other)
    bad = json.loads((tmp_path / "grouped" / "edges.json").read_text())
    bad["pooled"] = {"faithfulness": [1.0]}
    (tmp_path / "grouped" / "edges.json").write_text(json.dumps(bad))
    with pytest.raises(WorkbenchError, match="random or pooled block cannot be read"):
        open_edges(tmp_path / "grouped", model)
