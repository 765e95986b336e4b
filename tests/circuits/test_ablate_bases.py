"""Extra bases for node plans (interp.circuits.ablate.bases): a nested family of configurations gets one
of its own members recorded as a base, the signature-estimated first differences equal the exact ones,
and every result still equals one hooked pass per configuration."""

from __future__ import annotations

import pytest
import torch

from interp.circuits.ablate import engine
from interp.circuits.ablate.bases import extra_bases, first_differences
from interp.circuits.ablate.plan import AblationPlan
from interp.circuits.evaluate import abc_means
from interp.circuits.head_configs import Configs, ablated_logit_diffs, ablated_logit_diffs_reference
from interp.circuits.types import Graph
from interp.data.ioi import make_ioi


@pytest.fixture(scope="module")
def tiny_llama4(tiny_llama4_dir):
    from interp import load

    return load(str(tiny_llama4_dir), device="cpu")


def _family(model, ds):
    """Configurations that all mean-ablate every head of the two lowest layers (nothing in common with
    the clean run there) and keep more and more of the upper heads, plus the model itself."""
    L, H = model.info.n_layers, model.info.n_heads
    upper = [(layer, h) for layer in range(2, L) for h in range(H)]
    keep_all = []
    for k in range(0, len(upper) + 1, 2):
        m = torch.zeros(L, H, dtype=torch.bool)
        for layer, h in upper[:k]:
            m[layer, h] = True
        keep_all.append(m)
    keep_all = [torch.ones(L, H, dtype=torch.bool)] + keep_all
    none = torch.zeros(len(keep_all), L, H, dtype=torch.bool)
    return Configs(torch.stack(keep_all), none, torch.zeros(L, H, *ds.clean.shape, dtype=torch.bool))


def test_estimated_first_differences_are_the_exact_ones(tiny_llama4):
    model = tiny_llama4
    ds = make_ioi(model, 6, seed=1, part="evaluation")
    graph, T = Graph.of(model), ds.clean.shape[1]
    plans = _family(model, ds).plans(graph, T) + [AblationPlan()]
    layer, window = first_differences(plans, graph, ds.end, T)
    for i, p in enumerate(plans):
        for j, q in enumerate(plans):
            exact_layer, P = p.first_difference(q, graph, len(ds), T)
            assert int(layer[i, j]) == exact_layer
            if exact_layer < graph.n_layers:
                want = (ds.end - torch.minimum(P, ds.end) + 1).double().mean()
                assert float(window[i, j]) == float(want)


def test_a_family_member_becomes_a_base_and_results_equal_the_reference(tiny_llama4, monkeypatch):
    model = tiny_llama4
    ds = make_ioi(model, 6, seed=1, part="evaluation")
    graph, T = Graph.of(model), ds.clean.shape[1]
    configs = _family(model, ds)
    plans = configs.plans(graph, T)
    chosen = extra_bases(plans[1:], graph, ds.end, T, [AblationPlan()])
    assert chosen, "a member of the family saves the others their two lowest layers"
    recorded = []
    real = engine.Ablator._record

    def spy(self, plan, known):
        recorded.append(plan)
        return real(self, plan, known)

    monkeypatch.setattr(engine.Ablator, "_record", spy)
    means = abc_means(model, ds, 2)
    fast = ablated_logit_diffs(model, ds, means, configs)
    assert len(recorded) == len(chosen)  # the first configuration (the model) is the clean run: not recorded
    plain = ablated_logit_diffs_reference(model, ds, means, configs)
    assert torch.allclose(fast, plain, atol=1e-4), (fast - plain).abs().max()
    assert float((fast[1] - fast[0]).abs().max()) > 1e-3  # the ablation does something
