"""Checks by intervention: with everything the graph freezes frozen, its prediction is exact."""

from __future__ import annotations

import pytest
import torch

from interp.errors import WorkbenchError
from interp.graphs import intervene


def test_linear_mode_matches_the_graph_exactly(built):
    model, _, R, g = built
    sources = intervene.sample_features(g, 12, seed=3)
    for scale, logit in ((0.0, 0), (2.5, 1)):
        predicted = intervene.predicted_effects(g, sources, logit=logit, scale=scale)
        measured = intervene.measured_effects(model, R, g, sources, "linear", logit=logit, scale=scale)
        assert predicted.abs().max() > 1e-2  # the sampled features move the logit
        torch.testing.assert_close(measured, predicted, atol=1e-4, rtol=1e-4)


def test_indirect_paths_matter(built):
    """The prediction is not the direct edge alone: paths through other features count."""
    _, _, _, g = built
    sources = list(range(g.n_features))
    total = intervene.predicted_effects(g, sources)
    direct = -g.adjacency[g.logit_index(0), sources]
    assert (total - direct).abs().max() > 1e-3
    last = g.features[:, 0] == g.n_layers - 1  # the last layer's features reach the logits directly only
    torch.testing.assert_close(total[last], direct[last])


def test_sample_spans_the_layers(built):
    _, _, _, g = built
    picked = intervene.sample_features(g, 6, seed=0)
    assert len(picked) == 6 == len(set(picked))
    assert set(g.features[picked, 0].tolist()) == set(g.features[:, 0].tolist())


def test_check_reports_every_mode(built):
    model, _, R, g = built
    rep = intervene.check(model, R, g, n=6)
    assert set(rep["modes"]) == set(intervene.MODES) and len(rep["nodes"]) == 6
    assert rep["modes"]["linear"]["pearson"] == pytest.approx(1.0, abs=1e-6)


def test_unknown_node_is_one_line(built):
    model, _, R, g = built
    with pytest.raises(WorkbenchError, match="not a feature node"):
        intervene.measured_effects(model, R, g, [g.n_features + 1])
    with pytest.raises(WorkbenchError, match="no node 'F9.9@9'"):
        g.find("F9.9@9")
    with pytest.raises(WorkbenchError, match="unknown intervention mode"):
        intervene.measured_effects(model, R, g, [0], mode="half")
