"""The attribution graph: the batched backward adjacency against the real model perturbed one source at
a time, rows that add up to their targets, circuit-tracer's choice of logits and features."""

from __future__ import annotations

import torch
from conftest import PROMPT

from interp.graphs.attribute import attribute, check_rows, salient_logits
from interp.graphs.reference import reference_adjacency


def _errors(R, g):
    errors = R.errors.clone()
    if g.settings["zero_bos"]:
        errors[:, 0] = 0
    return errors


def test_fast_adjacency_equals_the_perturbed_real_model(built):
    model, _, R, g = built
    slow = reference_adjacency(model, R, g, _errors(R, g), batch=24)
    rows = g.target_rows()
    assert g.adjacency[rows].abs().max() > 1  # not a graph of zeros
    torch.testing.assert_close(g.adjacency[rows], slow[rows], atol=1e-4, rtol=1e-4)
    assert not g.adjacency[g.error_start : g.logit_start].any()  # errors and tokens have no inputs


def test_rows_add_up_to_their_targets(built):
    _, _, _, g = built
    assert check_rows(g) < 1e-4
    assert g.values[: g.n_features].gt(0).all()  # active features: positive pre-activations


def test_nodes_follow_circuit_tracers_order(built):
    _, _, R, g = built
    assert g.n_nodes == g.n_features + R.n_layers * R.n_pos + R.n_pos + g.n_logits
    assert g.settings["zero_bos"] and not (g.features[:, 1] == 0).any()  # BOS's features are left out
    keys = g.features[:, 0] * 10**6 + g.features[:, 1] * 10**3 + g.features[:, 2]
    assert torch.equal(keys, keys.sort().values)
    assert g.describe(g.error_index(1, 2)) == {"kind": "error", "layer": 1, "pos": 2, "id": "err1@2"}


def test_features_never_feed_their_own_layer(built):
    _, _, _, g = built
    layers = g.features[:, 0]
    same_or_later = layers[:, None] <= layers[None, :]  # [target, source]: source at the target's layer or later
    assert not g.adjacency[: g.n_features, : g.n_features][same_or_later].any()


def test_salient_logits_on_hand_made_logits():
    logits = torch.log(torch.tensor([0.5, 0.05, 0.3, 0.1, 0.05]))
    ids, p = salient_logits(logits, max_n_logits=10, desired_logit_prob=0.85)
    assert ids.tolist() == [0, 2, 3] and torch.allclose(p, torch.tensor([0.5, 0.3, 0.1]))
    ids, _ = salient_logits(logits, max_n_logits=2, desired_logit_prob=0.99)
    assert ids.tolist() == [0, 2]


def test_capped_features_still_add_up(built):
    model, tc, R, g = built
    capped = attribute(model, tc, PROMPT, replacement=R, batch_size=4, max_feature_nodes=12)
    assert capped.n_features == 12 and capped.settings["active_features"] == g.n_features
    assert check_rows(capped) < 1e-4
    same = attribute(model, tc, PROMPT, replacement=R, batch_size=5, max_feature_nodes=10**6)
    torch.testing.assert_close(same.adjacency, g.adjacency, atol=1e-5, rtol=1e-5)
