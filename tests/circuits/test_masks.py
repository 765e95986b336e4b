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


def test_training_lowers_the_loss_and_the_penalty_prunes(tiny_llama, sharp):
    model = sharp("tiny_llama")
    task = scrambled_task(model, 8, seed=3)
    g = Graph.of(model)
    cfg = MaskConfig(steps=60, batch=8, target=0.2, warmup=0.5)
    s = learn(model, task, cfg)
    first, last = cfg.history[0][0], sum(h[0] for h in cfg.history[-5:]) / 5
    assert s.method == "edge-pruning" and s.scores.shape == (g.n_edges,) and float(s.scores.min()) == 0.0
    assert abs(cfg.history[-1][1] - 0.2) < 0.1  # the Lagrangian brought the open share to the target
    kept = s.circuit(int(0.2 * g.n_edges))
    f = faithfulness(model, kept, task)
    assert f > 0.5, (first, last, f)
    # no penalty at all: every gate stays open and the circuit is the full model
    free = MaskConfig(steps=20, batch=8, lam=0.0, warm_steps=0)
    s0 = learn(model, task, free)
    assert free.history[-1][1] > 0.9
    opened = masks.open_probability(s0.scores + s0.extra["log_alpha_min"]) > 0.5  # the learned log-alphas
    assert faithfulness(model, opened, task) == pytest.approx(1.0, abs=0.02)
    # a heavy penalty closes nearly every gate
    heavy = MaskConfig(steps=40, batch=8, lam=50.0, lr=0.3, warm_steps=0)
    learn(model, task, heavy)
    assert heavy.history[-1][1] < 0.1 < free.history[-1][1]
    assert heavy.history[-1][1] < heavy.history[0][1]


def test_metric_loss_lowers_the_loss(tiny_gpt2, sharp):
    model = sharp("tiny_gpt2")
    task = scrambled_task(model, 8, seed=4)
    cfg = MaskConfig(steps=40, batch=4, target=0.3, loss="metric")
    learn(model, task, cfg)
    early = sum(h[0] for h in cfg.history[20:24]) / 4
    late = sum(h[0] for h in cfg.history[-4:]) / 4
    assert late < early or late < 1e-3, (early, late)


def test_too_small_to_train_on_is_refused_in_one_line(tiny_llama):
    task = scrambled_task(tiny_llama, 4, seed=0)
    with pytest.raises(WorkbenchError, match="at least 8 scoring prompts") as e:
        score_edges(tiny_llama, task, "edge-pruning")
    assert "\n" not in str(e.value)
    for bad, match in ((MaskConfig(steps=0), "at least 1 training step"), (MaskConfig(target=1.5), "target share"),
                       (MaskConfig(loss="mse"), "unknown mask loss")):  # fmt: skip
        with pytest.raises(WorkbenchError, match=match):
            masks.check(bad)
