"""Pruning and scores on hand-made adjacency matrices with answers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from interp.errors import WorkbenchError
from interp.graphs import prune

# nodes: f0, f1 (features), e0 (error), t0 (token), l0 (logit); A[target, source]
#   t0 -> f0 (2), f0 -> f1 (1), e0 -> f1 (-1), f1 -> l0 (3), t0 -> l0 (1)
F0, F1, E0, T0, L0 = range(5)


def chain():
    A = torch.zeros(5, 5)
    A[F0, T0], A[F1, F0], A[F1, E0], A[L0, F1], A[L0, T0] = 2, 1, -1, 3, 1
    w = torch.tensor([0, 0, 0, 0, 1.0])
    return A, w


def test_influence_by_hand():
    A, w = chain()
    # Â rows: f0 = [t0 1]; f1 = [f0 .5, e0 .5]; l0 = [f1 .75, t0 .25]
    # w Â = f1 .75, t0 .25; then f0 .375, e0 .375; then t0 .375
    want = torch.tensor([0.375, 0.75, 0.375, 0.625, 0.0])
    torch.testing.assert_close(prune.influence(prune.normalise(A), w), want)
    torch.testing.assert_close(prune.influence_by_inverse(prune.normalise(A), w), want)


def test_power_series_equals_the_inverse_on_a_random_dag():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(30, 30, generator=gen).tril(-1)  # acyclic: each target's sources come before it
    w = torch.rand(30, generator=gen)
    Ah = prune.normalise(A)
    torch.testing.assert_close(prune.influence(Ah, w), prune.influence_by_inverse(Ah, w), atol=1e-5, rtol=1e-5)


def test_scores_by_hand():
    A, w = chain()
    replacement, completeness = prune.graph_scores(A, w, error_start=2, token_start=3, logit_start=4)
    assert replacement == pytest.approx(0.625 / (0.625 + 0.375))
    # non-error share per row: f0 1, f1 .5, others 1; weights infl + w: .375 .75 .375 .625 1
    assert completeness == pytest.approx((0.375 + 0.375 + 0.375 + 0.625 + 1) / 3.125)


def test_threshold_keeps_the_share():
    assert float(prune.threshold_of(torch.tensor([1.0, 4, 2, 3]), 0.7)) == 3  # 4+3 = 70%
    assert float(prune.threshold_of(torch.tensor([1.0, 4, 2, 3]), 0.71)) == 2
    assert float(prune.threshold_of(torch.tensor([1.0, 4, 2, 3]), 1.0)) == 1


def test_prune_by_hand():
    A, w = chain()
    # node influence f1 .75, t0 .625, f0 .375, e0 .375: at 0.6 the threshold is .625 -> f1 (t0, l0 always)
    # f1's inputs were pruned, so it has no incoming edge and goes too: left t0 -> l0
    got = prune.prune_adjacency(A, w, n_features=2, n_tokens=1, n_logits=1, node_threshold=0.6, edge_threshold=0.98)
    assert got.nodes.tolist() == [False, False, False, True, True]
    assert torch.nonzero(got.edges).tolist() == [[L0, T0]]
    # at the defaults (0.8, 0.98) every node holds influence and every edge survives
    got = prune.prune_adjacency(A, w, n_features=2, n_tokens=1, n_logits=1)
    assert got.nodes.all() and torch.equal(got.edges, A != 0)
    torch.testing.assert_close(got.cumulative[[F1, T0]], torch.tensor([0.75, 1.375]) / 2.125)


def test_defaults_are_circuit_tracers():
    assert (prune.NODE_THRESHOLD, prune.EDGE_THRESHOLD) == (0.8, 0.98)


def test_bad_threshold_is_one_line():
    A, w = chain()
    with pytest.raises(WorkbenchError, match="between 0 and 1"):
        prune.prune_adjacency(A, w, 2, 1, 1, node_threshold=1.5)


def test_prune_on_a_real_graph(built):
    _, _, _, g = built
    p = prune.prune(g)
    assert p.nodes[g.token_start :].all()  # tokens and logits always stay
    kept = p.nodes[: g.error_start]
    assert (p.edges[: g.n_features][kept].any(1)).all()  # every kept feature has an input ...
    assert (p.edges[:, : g.error_start][:, kept].any(0)).all()  # ... and an output
    r, c = prune.scores(g)
    assert 0 < r < 1 and 0 < c < 1
