"""The stacked ablation engine (every circuit of a curve in one forward, stacked along the batch)
against the plain per-edge reference, in float32 and bfloat16, with its memory cap's chunking."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task

from interp.circuits.ablate import Ablator, ablated_reference, engine
from interp.circuits.ablate.layout import layout
from interp.circuits.methods import score_edges as attribute
from interp.circuits.faithfulness import faithfulness_curve
from interp.circuits.types import Graph


def circuits(n_edges: int, seed: int = 0) -> list[torch.Tensor]:
    """Empty, random ones from mostly ablated to mostly kept, a repeat, and the full circuit."""
    gen = torch.Generator().manual_seed(seed)
    keeps = [torch.rand(n_edges, generator=gen) < f for f in (0.0, 0.02, 0.3, 0.7, 0.97)]
    return keeps + [keeps[2].clone(), torch.ones(n_edges, dtype=torch.bool)]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("ablation", ["counterfactual", "mean"])
def test_stacked_equals_reference(fixture, ablation, sharp, monkeypatch):
    model = sharp(fixture)
    held, mean_over = scrambled_task(model, 3, seed=2), scrambled_task(model, 4, seed=9)
    ab = Ablator(model, held, ablation, mean_over)
    keeps = circuits(Graph.of(model).n_edges)
    sizes = []
    real = engine.edge_pass

    def spy(ab, plans):
        sizes.append(len(plans))
        return real(ab, plans)

    monkeypatch.setattr(engine, "edge_pass", spy)
    got = ab.run_many(keeps, stacked=True)
    # the full circuit is the clean run, the repeat runs once, the empty one is the corrupted run
    assert sizes == [4 if ablation == "counterfactual" else 5]
    assert torch.equal(got[5], got[2]) and torch.equal(got[6], ab.m_full)
    for keep, fast in zip(keeps, got):
        plain = ablated_reference(model, held, keep, ablation, mean_over)
        assert torch.allclose(fast, plain, atol=2e-5), (fast, plain)
    assert float((got[1] - ab.m_full).abs().max()) > 1e-3  # the ablation does something
    sizes.clear()
    chunked = ab.run_many(keeps, stacked=True, max_rows=2 * len(held))  # two circuits per forward
    assert sizes == ([2, 2] if ablation == "counterfactual" else [2, 2, 1])
    assert torch.allclose(chunked, got, atol=1e-6)
    assert torch.allclose(ab.run_many(keeps, stacked=False), got, atol=2e-5)


def test_stacked_bfloat16_within_tolerance(tiny_llama_bf16, tiny_llama, sharp):
    """bfloat16 rounds the stacked engine and the reference differently: within 3% of the metric's
    scale of each other (the bound the per-size engine meets), and within 10% of float32."""
    model = tiny_llama_bf16
    held = scrambled_task(model, 3, seed=2)
    ab, ab32 = Ablator(model, held), Ablator(sharp("tiny_llama"), scrambled_task(tiny_llama, 3, seed=2))
    keeps = circuits(Graph.of(model).n_edges)[1:4]
    got, got32 = ab.run_many(keeps, stacked=True).float(), ab32.run_many(keeps, stacked=True)
    for keep, fast, f32 in zip(keeps, got, got32):
        plain = ablated_reference(model, held, keep).float()
        scale = max(float((ab.m_full.float() - ab.m_corrupted.float()).abs().max()), float(plain.abs().max()))
        assert float((fast - plain).abs().max()) <= 0.03 * scale, (fast, plain, scale)
        assert float((fast - f32).abs().max()) <= 0.1 * scale
    assert float((got[0] - ab.m_full.float()).abs().max()) > 0.1 * scale  # the ablation does something


def test_curve_stacked_equals_per_size(tiny_llama, sharp):
    """The whole MIB curve (pruned: several small sizes prune to the same circuit) both ways."""
    model = sharp("tiny_llama")
    task, held = scrambled_task(model, 4, seed=1), scrambled_task(model, 4, seed=7)
    scores = attribute(model, task, "eap-ig", steps=3)
    ab = Ablator(model, held)
    one = faithfulness_curve(model, scores, held, n_boot=20, ablator=ab, stacked=True)
    per = faithfulness_curve(model, scores, held, n_boot=20, ablator=ab, stacked=False)
    small = faithfulness_curve(model, scores, held, n_boot=20, ablator=ab, stacked=True, max_rows=1)
    assert len(set(one.n_edges)) < len(one.n_edges)  # some sizes share a circuit
    for c in (per, small):
        assert max(abs(a - b) for a, b in zip(one.faithfulness, c.faithfulness)) < 1e-5
    assert torch.allclose(one.per_prompt, per.per_prompt, atol=2e-5)


@pytest.mark.parametrize("fixture, cut", [("tiny_llama", "out"), ("tiny_gpt2", "out"), ("tiny_llama", "in"),
                                          ("tiny_gpt2", "in")])  # fmt: skip
def test_unread_mlp_is_not_computed(fixture, cut, sharp):
    """An MLP no circuit edge leaves (or, under counterfactual ablation, none enters) outputs exactly
    its replacement: the engine never runs it, and still equals the reference."""
    model = sharp(fixture)
    held = scrambled_task(model, 3, seed=2)
    g = Graph.of(model)
    ab = Ablator(model, held)
    w1 = g.mlp_writer(1)
    keep = torch.rand(g.n_edges, generator=torch.Generator().manual_seed(3)) < 0.5
    if cut == "out":
        keep[g.src == w1] = False  # nothing reads MLP 1 through the circuit
    else:
        keep[g.dst == int(g.layer_readers(1, "mlp")[0])] = False  # MLP 1 reads the corrupted run's input
        assert bool(keep[g.src == w1].any())
    calls = []
    ab.check()  # the engine's own check replays the last blocks once
    handle = model.bridge.blocks[1].mlp.original_component.register_forward_hook(lambda *a: calls.append(1))
    try:
        fast = ab.run(keep)
        assert not calls  # the MLP of layer 1 never ran
        assert layout(g, keep[None], True).mlp[1].known == "replacement"
    finally:
        handle.remove()
    assert torch.allclose(fast, ablated_reference(model, held, keep), atol=2e-5)
    assert float((fast - ab.m_full).abs().max()) > 1e-3


def test_mlp_with_no_circuit_input_is_computed_under_mean_ablation(sharp):
    """Under mean ablation an MLP with every input edge ablated reads the mean-ablated input, whose
    output is not its replacement (the mean output): it is that input's MLP output (computed once)."""
    model = sharp("tiny_llama")
    held, means = scrambled_task(model, 3, seed=2), scrambled_task(model, 4, seed=5)
    g = Graph.of(model)
    ab = Ablator(model, held, "mean", means)
    keep = torch.rand(g.n_edges, generator=torch.Generator().manual_seed(3)) < 0.5
    keep[g.dst == int(g.layer_readers(1, "mlp")[0])] = False
    assert layout(g, keep[None], False).mlp[1].known == "ablated"  # the MLP of the mean-ablated input (cached)
    assert layout(g, keep[None], True).mlp[1].known == "replacement"  # counterfactual: the corrupted run's own output
    assert torch.allclose(ab.run(keep), ablated_reference(model, held, keep, "mean", means), atol=2e-5)
