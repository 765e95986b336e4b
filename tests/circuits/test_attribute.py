"""EAP and EAP-IG: the gradient at each input's own residual copy, held to finite differences of
exact edge patching, to TransformerLens's attribution patching, and to IG's completeness."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import assert_eap_is_a_finite_difference, scrambled_task

from interp.circuits.methods import score_edges as attribute
from interp.circuits.types import READER_KINDS, Graph
from interp.errors import WorkbenchError


def _strongest_per_kind(graph: Graph, scores: torch.Tensor) -> list[int]:
    kinds = [graph.readers[int(r)].kind for r in graph.dst]
    out = []
    for kind in READER_KINDS:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        out.append(max(idx, key=lambda i: abs(float(scores[i]))))
    return out


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_eap_is_the_derivative_of_exact_edge_patching(fixture, sharp):
    """EAP(e) = -d/d(eps) m(clean, input v shifted by eps (a_corr(u) - a_clean(u))) at eps = 0: central
    differences of the exact engine (itself held to the plain reference) on every kind of input."""
    model = sharp(fixture)
    task = scrambled_task(model, 4, seed=2)
    eap = attribute(model, task, "eap")
    assert_eap_is_a_finite_difference(model, task, eap, _strongest_per_kind(eap.graph, eap.scores))
    assert float(eap.scores.abs().max()) > 1e-3


def test_eap_at_the_corrupted_run_equals_transformer_lens(tiny_gpt2, sharp):
    """TL 4.3's attribution_patch (edge granularity, denoising form: (a_clean - a_corrupt) . grad at the
    corrupted run, per position and per prompt, averaged over prompts) summed over positions."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    model = sharp("tiny_gpt2")
    task = scrambled_task(model, 3, seed=1)
    ours = attribute(model, task, "eap", at="corrupted")
    tl: dict[str, float] = {}
    writer = lambda n: {"embed": "embed", "attn_head_out": f"a{n.layer}.h{n.head}", "mlp_out": f"m{n.layer}"}[n.kind]

    def reader(n) -> str:
        if n.kind == "q_input":
            return f"a{n.layer}.h{n.head}<q>"
        if n.kind in ("k_input", "v_input"):
            return f"a{n.layer}.kv{n.head}<{n.kind[0]}>"  # MHA: the KV head is the query head
        return f"m{n.layer}" if n.kind == "mlp_in" else "logits"

    for i in range(len(task)):
        T, a, s = int(task.end[i]) + 1, int(task.answers[i]), int(task.distractors[i])
        res = attribution_patch(model.bridge, task.clean[i : i + 1, :T], task.corrupted[i : i + 1, :T],
                                lambda lg, a=a, s=s, T=T: lg[0, T - 1, a] - lg[0, T - 1, s],
                                EdgeAttributionConfig(granularity="edge"))  # fmt: skip
        for (w, r), v in res.edge_scores.items():
            key = f"{writer(w)}->{reader(r)}"
            tl[key] = tl.get(key, 0.0) + v / len(task)
    names = ours.graph.edge_names()
    assert set(tl) == set(names)
    theirs = torch.tensor([tl[n] for n in names])
    assert torch.allclose(ours.scores, theirs, atol=1e-6, rtol=1e-4)
    assert float(theirs.abs().max()) > 1e-3
    # EAP-IG with one step takes its gradient at alpha = 0, the corrupted run: the same numbers
    assert torch.allclose(attribute(model, task, "eap-ig", steps=1).scores, ours.scores, atol=1e-7)


def test_eap_ig_sums_to_the_exact_effect_of_the_embedding(tiny_llama, sharp):
    """Completeness of integrated gradients: summed over the edges leaving the embedding, EAP-IG
    tends to m(clean) - m(corrupted) -- the exact effect of patching all those edges at once (which
    is the corrupted run) -- as the steps grow; plain EAP is off by far more."""
    model = sharp("tiny_llama")
    task = scrambled_task(model, 4, seed=0)
    errors = {}
    for steps in (1, 4, 16):
        ig = attribute(model, task, "eap-ig", steps=steps)
        from_embed = ig.scores[ig.graph.src == 0].sum()
        errors[steps] = abs(float(from_embed) - (ig.clean_metric - ig.corrupted_metric))
    gap = abs(ig.clean_metric - ig.corrupted_metric)
    eap = attribute(model, task, "eap")
    eap_err = abs(float(eap.scores[eap.graph.src == 0].sum()) - gap)
    assert gap > 0.05
    assert errors[16] < errors[4] < errors[1] and errors[16] < 0.05 * gap, (errors, gap)
    assert errors[4] > 2 * errors[16]  # the left Riemann sum's error shrinks like 1/steps
    assert eap_err > 3 * errors[16]


def test_batches_do_not_change_scores_and_kl_vanishes_for_eap(tiny_llama, sharp):
    model = sharp("tiny_llama")
    task = scrambled_task(model, 5, seed=4)
    whole = attribute(model, task, "eap-ig", steps=3, batch_size=5)
    parts = attribute(model, task, "eap-ig", steps=3, batch_size=2)
    assert torch.allclose(whole.scores, parts.scores, atol=1e-6) and whole.n_prompts == 5
    kl = task.with_metric("kl")
    assert float(attribute(model, kl, "eap").scores.abs().max()) < 1e-6  # gradient of KL(clean||.) at clean
    assert float(attribute(model, kl, "eap-ig", steps=3).scores.abs().max()) > 1e-4


def test_circuits_and_bad_input(tiny_llama):
    task = scrambled_task(tiny_llama, 2, seed=0)
    s = attribute(tiny_llama, task, "eap")
    raw = s.circuit(10, pruned=False)
    assert int(raw.sum()) == 10 and bool((s.circuit(10) <= raw).all())
    top = s.top(3)
    assert [abs(x[2]) for x in top] == sorted((abs(x[2]) for x in top), reverse=True)
    signed = s.order("signed")
    assert float(s.scores[signed[0]]) == float(s.scores.max())
    with pytest.raises(WorkbenchError, match="unknown method 'acdc'"):
        attribute(tiny_llama, task, "acdc")
    with pytest.raises(WorkbenchError, match="at least 1 step"):
        attribute(tiny_llama, task, "eap-ig", steps=0)
    with pytest.raises(WorkbenchError, match="ranking"):
        s.order("sideways")


def _loosened(model, request, scale: float = 0.3):
    """Random norm weights and biases everywhere (restored after the test): a fresh init's norm
    weights are 1 and its biases 0, which would leave the norm and bias terms of the pull-back
    untested."""
    g = torch.Generator().manual_seed(7)
    saved = []
    with torch.no_grad():
        for n, p in model.bridge.named_parameters():
            if "bias" in n or "ln" in n or "norm" in n:
                saved.append((p, p.detach().clone()))
                p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))
    request.addfinalizer(lambda: [p.data.copy_(v) for p, v in reversed(saved)])  # last first: some share storage
    return model


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_analytic_pullback_equals_autograd_through_the_norm(fixture, sharp, request, monkeypatch):
    """The analytic norm pull-back summed over stacked steps (RMSNorm for the llama, LayerNorm with
    biases and attention biases for GPT-2) gives the scores of the plain autograd one."""
    from interp.circuits import pullback as A

    model = _loosened(sharp(fixture), request)
    model.memo.pop("analytic norm pull-back", None)
    task = scrambled_task(model, 3, seed=3)
    fast = attribute(model, task, "eap-ig", steps=3, batch_size=9)
    assert model.memo["analytic norm pull-back"]  # its first pass agreed with autograd
    monkeypatch.setattr(A.Pullback, "gradients", A.Pullback.reference)
    slow = attribute(model, task, "eap-ig", steps=3, batch_size=9)
    assert torch.allclose(fast.scores, slow.scores, atol=1e-6, rtol=1e-4), float(
        (fast.scores - slow.scores).abs().max()
    )
    assert float(slow.scores.abs().max()) > 1e-3


def test_a_misread_norm_falls_back_to_autograd(tiny_gpt2, sharp, request, monkeypatch):
    from interp.circuits import pullback as A

    model = _loosened(sharp("tiny_gpt2"), request)
    task = scrambled_task(model, 2, seed=1)
    right = attribute(model, task, "eap-ig", steps=2)
    monkeypatch.setattr(model, "memo", {})
    monkeypatch.setattr(
        A, "_norm_form", lambda *a: (torch.ones(model.info.d_model), None, 1e-5)
    )  # bias and weight lost
    with pytest.warns(UserWarning, match="autograd path"):
        fallen = attribute(model, task, "eap-ig", steps=2)
    assert not model.memo["analytic norm pull-back"]
    assert torch.allclose(fallen.scores, right.scores, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_stacked_steps_equal_one_step_a_pass(fixture, sharp, request):
    """Steps stacked along the batch (all in one pass, two a pass, one a pass with uneven prompt
    chunks) give the scores of one step per forward+backward, in float32."""
    model = _loosened(sharp(fixture), request, 0.1)
    task = scrambled_task(model, 3, seed=5)
    one = attribute(model, task, "eap-ig", steps=4, batch_size=3)
    assert float(one.scores.abs().max()) > 1e-3
    for rows in (
        12,
        7,
        2,
        100,
    ):  # 1 pass of 12 rows; 2 of 6; prompts 2+1 with 1 and 2 steps a pass; more rows than needed
        got = attribute(model, task, "eap-ig", steps=4, batch_size=rows)
        assert torch.allclose(got.scores, one.scores, atol=1e-6, rtol=1e-4), (
            rows,
            float((got.scores - one.scores).abs().max()),
        )
        assert (got.clean_metric, got.corrupted_metric) == pytest.approx(
            (one.clean_metric, one.corrupted_metric), abs=1e-5
        )
    eap = attribute(model, task, "eap", batch_size=1), attribute(model, task, "eap", batch_size=3)
    assert torch.allclose(eap[0].scores, eap[1].scores, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_stacked_steps_in_bfloat16(fixture, sharp, request, tiny_gpt2_dir):
    """In bfloat16 stacking changes the scores by no more than bfloat16 itself does: stacked and
    one-step-a-pass scores are both near the float32 ones and near each other."""
    from interp import load

    f32 = sharp(fixture)
    if fixture == "tiny_llama":
        bf16 = request.getfixturevalue("tiny_llama_bf16")
    else:
        bf16 = load(str(tiny_gpt2_dir), device="cpu", dtype="bfloat16")
        with torch.no_grad():
            for block in bf16.bridge.blocks:
                block.attn.q.original_component.weight.mul_(16.0)
    task = scrambled_task(f32, 4, seed=6)
    ref = attribute(f32, task, "eap-ig", steps=4, batch_size=16).scores
    stacked = attribute(bf16, task, "eap-ig", steps=4, batch_size=16).scores
    one = attribute(bf16, task, "eap-ig", steps=4, batch_size=4).scores
    scale = float(ref.abs().max())
    err_stacked, err_one = float((stacked - ref).abs().max()), float((one - ref).abs().max())
    assert scale > 1e-3
    assert err_stacked <= 0.05 * scale and err_one <= 0.05 * scale, (err_stacked, err_one, scale)
    assert float((stacked - one).abs().max()) <= 0.05 * scale
    top = lambda s: set(torch.argsort(s.abs(), descending=True)[:10].tolist())
    assert len(top(stacked) & top(ref)) >= 7
