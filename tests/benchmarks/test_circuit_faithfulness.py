"""The faithfulness study's helpers: greedy circuits through the ranking, per-template f."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import circuit_faithfulness as study  # noqa: E402

from interp.circuits.types import EdgeScores  # noqa: E402
from interp.circuits.select import greedy_order  # noqa: E402
from interp.circuits.types import Graph, prune  # noqa: E402
from interp.models.load import ModelInfo  # noqa: E402


def _scores() -> EdgeScores:
    g = Graph.from_info(ModelInfo("m", "inhouse", "", 3, 4, 2, 64, 16, 128, 100, 64, "rotary", "RMS", True, False))
    s = torch.randn(g.n_edges, generator=torch.Generator().manual_seed(0))
    return EdgeScores(g, s, "eap-ig", "ioi", "logit-diff", 4, 1.0, 0.0, 5)


def test_greedy_selection_gives_the_pruned_greedy_prefixes():
    sc = _scores()
    for sign, key in (("abs", sc.scores.abs()), ("signed", sc.scores)):
        ranked, ranking = study.ranked(sc, f"greedy-{sign}")
        order = greedy_order(sc.graph, key)
        for n in (1, 7, 40, 150):
            want = torch.zeros(sc.graph.n_edges, dtype=torch.bool)
            want[order[:n]] = True
            assert torch.equal(ranked.circuit(n, ranking), prune(sc.graph, want))
    # top-n selections are the scores' own rankings
    same, ranking = study.ranked(sc, "topn-signed")
    assert same is sc and ranking == "signed"


def test_per_template_faithfulness_by_hand():
    curve = SimpleNamespace(percents=[5.0], per_prompt=torch.tensor([[1.0, 0.5, 2.0, 2.0]]))
    ab = SimpleNamespace(m_full=torch.tensor([2.0, 1.0, 3.0, 3.0]), m_corrupted=torch.tensor([0.0, 0.0, 1.0, 1.0]))
    got = study.per_template(curve, ab, torch.tensor([0, 0, 1, 1]), ["t0", "t1"])
    assert got["t0"] == {"n": 2, "f": (0.75 - 0.0) / 1.5, "gap": 1.5}
    assert abs(got["t1"]["f"] - 0.5) < 1e-6 and got["t1"]["gap"] == 2.0
