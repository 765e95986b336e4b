"""Learned edge masks (Edge Pruning): the gated forward equals the ablation engine on binary gates (so a
learned circuit's faithfulness is exact), training lowers the loss, a heavy penalty prunes, and tasks too
small to train on are refused in one line."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import late_scrambled_task, scrambled_task

from interp.circuits import masks
from interp.circuits.faithfulness import faithfulness
from interp.circuits.masks import EdgeForward, MaskConfig, learn
from interp.circuits.methods import score_edges
from interp.circuits.types import Graph
from interp.errors import WorkbenchError


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("late", [False, True])
def test_gated_forward_on_binary_gates_is_the_ablation_engine(fixture, late, sharp):
    """Binary gates: the metric per prompt equals Ablator.run of the same kept edges (itself held to the
    plain hooked reference), with the span from position 0 and from a later first difference."""
    model = sharp(fixture)
    task = late_scrambled_task(model, 4, seed=1, start=3) if late else scrambled_task(model, 4, seed=1)
    g = Graph.of(model)
    fw = EdgeForward(model, task, g)
    gen = torch.Generator().manual_seed(0)
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        keep = torch.rand(g.n_edges, generator=gen) < p
        with torch.no_grad():
            got = fw.ab.metric(fw.outputs(keep.float())[None])[0]
        want = fw.ab.run(keep)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (p, float((got - want).abs().max()))
    assert float((fw.ab.m_full - fw.ab.m_corrupted).abs().mean()) > 0.05


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_gate_gradients_are_eap_at_both_ends(fixture, sharp):
    """d mean m / d z_e at z = 1 (the clean run) is EAP's score of e. At z = 0 (the corrupted run) every
    writer but the embedding writes its replacement and no writer reaches the logits but through its own
    direct edge, so only embed -> logits moves the metric, by EAP's score at the corrupted run."""
    model = sharp(fixture)
    task = scrambled_task(model, 4, seed=2)
    fw = EdgeForward(model, task, Graph.of(model))
    for value, at in ((1.0, "clean"), (0.0, "corrupted")):
        z = torch.full((fw.graph.n_edges,), value, requires_grad=True)
        with torch.enable_grad():
            m = fw.ab.metric(fw.outputs(z)[None])[0].mean()
            (grad,) = torch.autograd.grad(m, z)
        eap = score_edges(model, task, "eap", at=at).scores
        if at == "corrupted":
            direct = (fw.graph.src == 0) & (fw.graph.dst == len(fw.graph.readers) - 1)
            eap = torch.where(direct, eap, 0.0)
        assert float(eap.abs().max()) > 1e-3
        assert torch.allclose(grad, eap, atol=1e-5, rtol=1e-3), (at, float((grad - eap).abs().max()))
