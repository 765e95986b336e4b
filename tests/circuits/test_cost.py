"""The circuit run's cost estimate (interp.circuits.cost): the count by stage, the measured speed,
and the refusals above the time budget or the free memory."""

from __future__ import annotations

import pytest
import torch

from interp.circuits import cost
from interp.circuits.edges import forwards_per_prompt
from interp.circuits.types import Graph
from interp.data.tasks import load_task
from interp.errors import WorkbenchError


def test_counts_by_stage(tiny_llama):
    graph = Graph.of(tiny_llama)
    L = tiny_llama.info.n_layers
    eapig = cost.count("eap-ig", 5, graph, L, n_prompts=10, n_heldout=8, exact_top=20, n_sizes=10)
    assert eapig == {"scores": 10 * 16, "curves": 2 * 8 * 13, "exact check": 10 * 22}
    assert cost.count("eap", 5, graph, L, 10, 8, 0, 10) == {"scores": 60, "curves": 208}
    exact = cost.count("exact", 5, graph, L, 10, 8, 20, 10)
    assert "exact check" not in exact  # exact scores are their own check
    # every edge replays the model from its input's layer up: between 1/L and 1 forward an edge
    share = forwards_per_prompt(graph)
    assert graph.n_edges / L <= share <= graph.n_edges and exact["scores"] == pytest.approx(10 * (2 + share))
    by_hand = sum((L - graph.readers[int(d)].layer) / L if graph.readers[int(d)].layer is not None else 1 / L
                  for d in graph.dst)  # fmt: skip
    assert share == pytest.approx(float(by_hand))


def test_measured_speed_and_the_estimate(tiny_llama):
    split = load_task("ioi", tiny_llama, 4, 3)
    t = cost.seconds_per_forward(tiny_llama, split.score.clean)
    assert 0 < t < 5
    c = cost.estimate(tiny_llama, split, "eap-ig", 5, 0, 80, 10)
    assert c.forwards == 4 * 16 + 2 * 3 * 13  # the padded width of the longer side, scoring or held out
    assert c.tokens == max(split.score.clean.shape[1], split.heldout.clean.shape[1])
    assert c.seconds == pytest.approx(c.forwards * c.seconds_per_forward)
    assert "prompt-forwards" in c.summary() and "scores 64" in c.summary()


def test_refusals_name_the_way_out(tiny_llama, monkeypatch):
    c = cost.Cost({"scores": 7200.0}, seconds_per_forward=1.0, peak_bytes=10**9, tokens=12)
    with pytest.raises(WorkbenchError, match=r"about 2\.0 h .* more than the budget of 60 min; pass --max-minutes 180"):
        cost.check(c, 60, "pass --max-minutes 180 to run it")
    cost.check(c, 121, "")  # within a raised budget
    # memory: refused before the timed forward (a long prompt's forward alone takes a while)
    split = load_task("ioi", tiny_llama, 4, 3)
    monkeypatch.setattr("interp.models.device.available_bytes", lambda device: 10**5)
    monkeypatch.setattr(cost, "seconds_per_forward", lambda *a, **k: pytest.fail("timed before the memory check"))
    with pytest.raises(WorkbenchError, match=r"GB of activations \(\d+-token prompts\) but cpu has 0\.0 GB free"):
        cost.estimate(tiny_llama, split, "eap-ig", 5, 0, 80, 10)
    # the memory estimate grows with the square of the prompt length
    assert cost.gradient_bytes(tiny_llama, 2000, 80) > 1000 * cost.gradient_bytes(tiny_llama, 20, 80)
