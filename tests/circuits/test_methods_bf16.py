"""MIB's winning methods in bfloat16: EAP-IG over activations (eap-ig-act) and the learned masks' gated
forward, each held against its float32 counterpart and its plain reference on the same (bf16-rounded)
weights, so that only the arithmetic differs (the tiny Llama, grouped-query attention, queries sharpened
16x, exact in bf16, so that the effects stand well above bf16's rounding).

Tolerances, as fractions of the float32 figures' scale (measured here, 2026-12-07, in brackets):
- eap-ig-act: every edge's bf16 score within 5% of the largest float32 score (0.11%; the bf16 plain
  loop 0.38%), the bf16 fast path no farther from the bf16 plain loop than that loop is from float32,
  plus 5%, and at least 8 of the top 10 edges shared with float32 (10).
- the gated forward: on binary gates the bf16 metric per prompt equals the bf16 ablation engine's to 3%
  of the float32 gap m(full) - m(corrupted) (1.6% at most, with every gate open: the engine returns its
  bf16 clean run there, the gated forward replays it), and both stay within 5% of the float32 plain
  hooked reference, interp.circuits.ablate.reference (1.3%, 1.1%); on fractional gates, within 5% of the
  float32 gated forward (1.2%); its gradient at z = 1 (EAP's scores) within 5% of the largest float32
  gradient (0.34%), the ranking by |gradient| sharing at least 8 of the top 10 edges (9).
Each bf16 figure also differs from the float32 one somewhere: the bf16 arithmetic ran."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task
from test_eap_ig_activations import _reference as eap_ig_act_reference

from interp.circuits.ablate.reference import ablated_reference
from interp.circuits.masks import EdgeForward
from interp.circuits.methods import score_edges
from interp.circuits.types import Graph

SCORES = 0.05  # of the largest |float32 score|
ENGINES = 0.03  # of the float32 gap: bf16 engine against bf16 gated forward
TO_FLOAT32 = 0.05  # of the float32 gap: either bf16 figure against the float32 one


def _top(s: torch.Tensor, k: int = 10) -> set[int]:
    return set(torch.argsort(s.abs(), descending=True)[:k].tolist())


def test_eap_ig_activations_in_bf16(pair):
    m16, m32 = pair
    task = scrambled_task(m32, 4, seed=6)
    fast16 = score_edges(m16, task, "eap-ig-act", steps=3).scores
    fast32 = score_edges(m32, task, "eap-ig-act", steps=3).scores
    ref16 = eap_ig_act_reference(m16, task, 3)
    scale = float(fast32.abs().max())
    assert scale > 1e-2  # the scores stand well above bf16's rounding
    assert fast16.dtype == torch.float32 and not torch.isnan(fast16).any()
    err = float((fast16 - fast32).abs().max())
    assert 0 < err <= SCORES * scale, (err, scale)
    ref_err = float((ref16 - fast32).abs().max())  # the plain loop's own bf16 distance
    assert float((fast16 - ref16).abs().max()) <= ref_err + SCORES * scale
    assert len(_top(fast16) & _top(fast32)) >= 8
    # the float32 fast path is the plain loop (tests/circuits/test_eap_ig_activations.py) on these weights too
    assert torch.allclose(fast32, eap_ig_act_reference(m32, task, 3), atol=2e-6, rtol=1e-4)


@pytest.fixture(scope="module")
def gated(pair):
    m16, m32 = pair
    task = scrambled_task(m32, 4, seed=1)
    fw16, fw32 = EdgeForward(m16, task, Graph.of(m16)), EdgeForward(m32, task, Graph.of(m32))
    gap = float((fw32.ab.m_full - fw32.ab.m_corrupted).abs().mean())
    assert gap > 0.05  # the task moves the metric well above bf16's rounding
    return fw16, fw32, task, gap


def test_gated_forward_on_binary_gates_in_bf16(pair, gated):
    _, m32 = pair
    fw16, fw32, task, gap = gated
    g = fw16.graph
    gen = torch.Generator().manual_seed(0)
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        keep = torch.rand(g.n_edges, generator=gen) < p
        with torch.no_grad():
            got16 = fw16.ab.metric(fw16.outputs(keep.float())[None])[0].float()
            got32 = fw32.ab.metric(fw32.outputs(keep.float())[None])[0].float()
        engine16 = fw16.ab.run(keep).float()
        ref32 = ablated_reference(m32, task, keep).float()
        assert torch.allclose(got32, ref32, atol=1e-4, rtol=1e-4), p  # float32: exact, as test_masks holds
        assert float((got16 - engine16).abs().max()) <= ENGINES * gap, (p, float((got16 - engine16).abs().max()), gap)
        for x in (got16, engine16):
            assert float((x - ref32).abs().max()) <= TO_FLOAT32 * gap, (p, float((x - ref32).abs().max()), gap)


def test_gated_forward_on_fractional_gates_and_its_gradient_in_bf16(gated):
    fw16, fw32, _, gap = gated
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        z = torch.rand(fw16.graph.n_edges, generator=gen)
        with torch.no_grad():
            got16 = fw16.ab.metric(fw16.outputs(z)[None])[0].float()
            got32 = fw32.ab.metric(fw32.outputs(z)[None])[0].float()
        assert 0 < float((got16 - got32).abs().max()) <= TO_FLOAT32 * gap
    grads = []
    for fw in (fw16, fw32):
        z = torch.ones(fw.graph.n_edges, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(fw.ab.metric(fw.outputs(z)[None])[0].float().mean(), z)
        grads.append(grad.float())
    g16, g32 = grads
    scale = float(g32.abs().max())
    err = float((g16 - g32).abs().max())
    assert scale > 1e-2 and 0 < err <= SCORES * scale, (err, scale)
    assert len(_top(g16) & _top(g32)) >= 8
