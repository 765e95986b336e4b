"""EAP and EAP-IG: the gradient at each input's own residual copy, held to finite differences of
exact edge patching, to TransformerLens's attribution patching, and to IG's completeness."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task

from interp.circuits.attribute import attribute
from interp.circuits.edges import EdgePatcher
from interp.circuits.graph import READER_KINDS, Graph
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
    patcher = EdgePatcher(model, task)
    g = patcher.graph
    eps = 1e-2
    for e in _strongest_per_kind(g, eap.scores):
        reader, w = g.readers[int(g.dst[e])], int(g.src[e])
        d = patcher.delta[:, :, [w]].permute(2, 0, 1, 3)
        with torch.no_grad():
            up, down = patcher.reader_pass(reader, eps * d).mean(1), patcher.reader_pass(reader, -eps * d).mean(1)
        fd = float(-(up - down) / (2 * eps))
        assert abs(fd - float(eap.scores[e])) <= 0.02 * abs(fd) + 3e-5, (g.edge(e).name, fd, float(eap.scores[e]))
    assert float(eap.scores.abs().max()) > 1e-3


def test_eap_at_the_corrupted_run_equals_transformer_lens(tiny_gpt2, sharp):
    """TL 4.3's attribution_patch (edge granularity, denoising form: (a_clean - a_corrupt) . grad at the
    corrupted run, per position and per prompt, averaged over prompts) summed over positions."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    model = sharp("tiny_gpt2")
    task = scrambled_task(model, 3, seed=1)
    ours = attribute(model, task, "eap", at="corrupted")
    tl: dict[str, float] = {}
    writer = lambda n: {"embed": "embed", "attn_head_out": f"a{n.layer}.h{n.head}", "mlp_out": f"m{n.layer}"}[n.kind]  # noqa: E731

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
