"""MIB's Random row: random circuits of the curve's sizes, pruned the same way, scored by the same
engine; each draw's curve equals the curve of its random scores, and draws are reproducible."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task

from interp.circuits.faithfulness import (
    RandomBaseline,
    areas,
    faithfulness_curve,
    random_baseline,
    random_scores,
)
from interp.circuits.types import Graph
from interp.errors import WorkbenchError

SIZES = (0, 5, 20, 50, 100)


def test_each_draw_is_the_curve_of_its_random_ranking(tiny_llama, sharp):
    model = sharp("tiny_llama")
    held = scrambled_task(model, 4, seed=7)
    g = Graph.of(model)
    rb = random_baseline(model, g, held, draws=3, percents=SIZES, seed=2)
    assert rb.draws == 3 and rb.seeds == [2000, 2001, 2002] and rb.percents == list(SIZES)
    for d, s in enumerate(rb.seeds):
        curve = faithfulness_curve(model, random_scores(g, s), held, SIZES, n_boot=10)
        assert rb.faithfulness[d] == pytest.approx(curve.faithfulness, abs=1e-6)
        assert rb.n_edges[d] == curve.n_edges
        assert (rb.cpr[d], rb.cmd[d]) == pytest.approx(areas(SIZES, rb.faithfulness[d]))
        # uniform scores: the signed ranking is the |score| ranking
        signed = faithfulness_curve(model, random_scores(g, s), held, SIZES, ranking="signed", n_boot=10)
        assert signed.faithfulness == pytest.approx(curve.faithfulness, abs=1e-6)
    assert rb.faithfulness[0][0] == pytest.approx(0.0, abs=1e-6) and rb.faithfulness[0][-1] == pytest.approx(1.0, abs=1e-6)
    f, lo, hi = rb.at(20)
    col = [row[2] for row in rb.faithfulness]
    assert f == pytest.approx(sum(col) / 3) and (lo, hi) == (min(col), max(col))
    assert len({tuple(row) for row in rb.n_edges}) > 1  # the draws differ
    again = random_baseline(model, g, held, draws=3, percents=SIZES, seed=2)
    assert again.faithfulness == rb.faithfulness  # seeded
    back = RandomBaseline.from_json(rb.to_json())
    assert back == rb and rb.to_json()["cpr_mean"] == pytest.approx(sum(rb.cpr) / 3)


def test_no_draws_is_refused(tiny_llama):
    with pytest.raises(WorkbenchError, match="at least 1 draw"):
        random_baseline(tiny_llama, Graph.of(tiny_llama), scrambled_task(tiny_llama, 2, seed=0), draws=0)


def test_random_scores_are_reproducible():
    g = Graph(2, 4, 2, True)
    assert torch.equal(random_scores(g, 5).scores, random_scores(g, 5).scores)
    assert not torch.equal(random_scores(g, 5).scores, random_scores(g, 6).scores)
