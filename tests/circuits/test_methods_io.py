"""The registry of scoring methods, the one JSON format for scores and curves, and per-model verdicts
that die with their model."""

from __future__ import annotations

import json

import pytest
import torch
from circuit_helpers import scrambled_task

from interp.circuits import methods
from interp.circuits.faithfulness import RandomBaseline, faithfulness_curve, random_baseline
from interp.circuits.io import circuit_json, read_edges, write_edges
from interp.circuits.types import EdgeScores, Graph
from interp.errors import WorkbenchError


def test_the_registry_refuses_a_name_twice_and_a_new_method_is_one_registration(tiny_llama, monkeypatch):
    assert {"eap-ig", "eap", "exact", "eap-ig-act", "edge-pruning"} <= set(methods.names())
    assert methods.names()[0] == "eap-ig"  # the default first
    with pytest.raises(ValueError, match="registered already"):
        methods.register("eap", lambda m, t, o: None, "again", lambda o, n, g: n)
    with pytest.raises(WorkbenchError, match="unknown method 'acdc'; choose eap-ig, eap-ig-act, edge-pruning, eap, exact"):
        methods.get("acdc")
    with pytest.raises(WorkbenchError, match="at least 1 step"):
        methods.check("eap-ig", methods.Options(steps=0))
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))  # the new name leaves with the test

    def uniform(model, task, options):
        g = Graph.of(model)
        return EdgeScores(g, torch.ones(g.n_edges), "uniform", task.name, task.metric, len(task), 0.0, 0.0)

    methods.register("uniform", uniform, "every edge scores 1", lambda o, n, g: 0.0)
    task = scrambled_task(tiny_llama, 2, seed=0)
    got = methods.score_edges(tiny_llama, task, "uniform")
    assert got.method == "uniform" and bool((got.scores == 1).all()) and "uniform" in methods.names()


def test_scores_and_curves_round_trip_through_edges_json(tiny_llama, tmp_path):
    task, held = scrambled_task(tiny_llama, 3, seed=1), scrambled_task(tiny_llama, 3, seed=2)
    scores = methods.score_edges(tiny_llama, task, "eap-ig", steps=2)
    curves = {r: faithfulness_curve(tiny_llama, scores, held, ranking=r, n_boot=20) for r in ("abs", "signed")}
    rb = random_baseline(tiny_llama, scores.graph, held, draws=2)
    path = write_edges(tmp_path, circuit_json(scores, curves, [], {"model": "tiny", "seed": 0}, rb))
    data = json.loads(path.read_text())
    assert RandomBaseline.from_json(data["random"]) == rb and data["random"]["faithfulness_at_5pct"]["faithfulness"] == rb.at(5.0)[0]
    assert data["exact_check"] == [] and data["exact_check_summary"] == {}
    assert data["faithfulness_formula"] == "(m(C) - m(empty)) / (m(full) - m(empty))"
    assert data["cpr"] == curves["signed"].cpr and data["cmd"] == curves["abs"].cmd
    back, got_curves, _ = read_edges(tmp_path, scores.graph)
    assert torch.equal(back.scores, scores.scores) and back.method == "eap-ig" and back.steps == 2
    for r, c in curves.items():
        assert got_curves[r].to_json() == c.to_json()
    other = Graph(3, 4, 2, True)
    with pytest.raises(WorkbenchError, match="read it with the model it was written for"):
        read_edges(tmp_path, other)


def test_per_model_verdicts_live_on_the_model(tiny_llama_dir):
    """A verdict about one model (its norm pull-back, its split inputs) is never inherited by another,
    whatever id the new object gets."""
    from interp import load
    from interp.circuits.capture import check_inputs

    first = load(str(tiny_llama_dir), device="cpu")
    check_inputs(first)
    methods.score_edges(first, scrambled_task(first, 2, seed=0), "eap")
    assert first.memo["split inputs checked"] and "analytic norm pull-back" in first.memo
    del first
    second = load(str(tiny_llama_dir), device="cpu")
    assert second.memo == {}
