"""Faithfulness: the one-forward ablate-outside engine against a plain per-edge reconstruction, its
exact end points, MIB's areas, the bootstrap, and TransformerLens's faithfulness for one prompt."""

from __future__ import annotations

import math

import pytest
import torch
from circuit_helpers import late_scrambled_task, scrambled_task

from interp.circuits.ablate import Ablator, ablated_reference
from interp.circuits.methods import score_edges as attribute
from interp.circuits.faithfulness import areas, faithfulness_curve
from interp.circuits.types import Graph
from interp.data.tasks import end_logits, metric_fn
from interp.errors import WorkbenchError


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("ablation", ["counterfactual", "mean"])
def test_engine_equals_per_edge_reconstruction(fixture, ablation, sharp):
    model = sharp(fixture)
    held, mean_over = scrambled_task(model, 3, seed=2), scrambled_task(model, 4, seed=9)
    g = Graph.of(model)
    ab = Ablator(model, held, ablation, mean_over)
    gen = torch.Generator().manual_seed(0)
    for frac in (0.0, 0.05, 0.3, 0.7, 0.97):  # empty, mostly rebuilt from the ablated side, ..., from the clean side
        keep = torch.rand(g.n_edges, generator=gen) < frac
        fast, plain = ab.run(keep), ablated_reference(model, held, keep, ablation, mean_over)
        assert torch.allclose(fast, plain, atol=2e-5), (frac, fast, plain)
        if frac < 0.9:
            assert float((fast - ab.m_full).abs().max()) > 1e-3  # the ablation does something


def test_bfloat16_within_tolerance(tiny_llama_bf16, tiny_llama, sharp):
    """In bfloat16 the engine and the reference round differently (a metric of 0.25 has a bf16 step of
    0.002): they must agree to 3% of the metric's scale, and stay within 10% of it from float32."""
    model = tiny_llama_bf16
    held = scrambled_task(model, 3, seed=2)
    ab = Ablator(model, held)
    ab32 = Ablator(sharp("tiny_llama"), scrambled_task(tiny_llama, 3, seed=2))
    gen = torch.Generator().manual_seed(0)
    for frac in (0.05, 0.5):
        keep = torch.rand(Graph.of(model).n_edges, generator=gen) < frac
        fast, plain = ab.run(keep).float(), ablated_reference(model, held, keep).float()
        scale = max(float((ab.m_full.float() - ab.m_corrupted.float()).abs().max()), float(plain.abs().max()))
        assert float((fast - plain).abs().max()) <= 0.03 * scale, (fast, plain, scale)
        assert float((fast - ab32.run(keep)).abs().max()) <= 0.1 * scale
        assert float((fast - ab.m_full.float()).abs().max()) > 0.1 * scale  # the ablation does something


@pytest.mark.parametrize("ablation", ["counterfactual", "mean"])
def test_curve_is_exactly_zero_empty_and_one_full(tiny_llama, sharp, ablation):
    model = sharp("tiny_llama")
    task, held = scrambled_task(model, 4, seed=1), scrambled_task(model, 4, seed=7)
    scores = attribute(model, task, "eap-ig", steps=3)
    c = faithfulness_curve(model, scores, held, percents=(0, 10, 50, 100), ablation=ablation, mean_task=task, n_boot=50)
    assert abs(c.faithfulness[0]) < 1e-6 and abs(c.faithfulness[-1] - 1) < 1e-6
    assert c.n_edges[0] == 0 and c.n_edges[-1] == scores.graph.n_edges
    if ablation == "counterfactual":  # everything ablated is the corrupted run
        with torch.no_grad():
            corr = metric_fn(held)(end_logits(model(held.corrupted), held.end))
        assert abs(c.m_empty - float(corr.mean())) < 1e-6
    for f, lo, hi in zip(c.faithfulness, c.lo, c.hi):
        assert lo - 1e-6 <= f <= hi + 1e-6


def test_areas_follow_mib():
    p = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
    assert areas(p, [1.0] * 10) == pytest.approx((0.999, 0.0))
    assert areas(p, [0.0] * 10) == pytest.approx((0.0, 0.999))
    f = [0.1 * i for i in range(10)]
    x = [v / 100 for v in p]
    cpr = sum((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(9))
    cmd = sum((x[i + 1] - x[i]) * (2 - f[i] - f[i + 1]) / 2 for i in range(9))
    assert areas(p, f) == pytest.approx((cpr, cmd))
    # overshooting 1 counts against CMD as much as falling short
    assert areas((0, 100), [1.5, 1.5])[1] == pytest.approx(0.5)


def test_curve_sizes_and_bad_input(tiny_llama):
    task, held = scrambled_task(tiny_llama, 2, seed=1), scrambled_task(tiny_llama, 2, seed=2)
    scores = attribute(tiny_llama, task, "eap")
    c = faithfulness_curve(tiny_llama, scores, held, n_boot=20, pruned=False)
    assert c.percents == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    assert c.n_requested == [int(p / 100 * scores.graph.n_edges) for p in c.percents] == c.n_edges
    j = c.to_json()
    assert len(j["points"]) == 10 and "per_prompt" not in j
    with pytest.raises(WorkbenchError, match="increasing percentages"):
        faithfulness_curve(tiny_llama, scores, held, percents=(50, 10))
    with pytest.raises(WorkbenchError, match="unknown ablation"):
        Ablator(tiny_llama, held, "zero")
    same = held.subset([0, 1])
    same.corrupted = same.clean
    with pytest.raises(WorkbenchError, match="faithfulness is undefined"):
        faithfulness_curve(tiny_llama, scores, same, n_boot=5)


def test_single_prompt_equals_transformer_lens(tiny_gpt2, sharp):
    """TL's faithfulness (one pair, per-position edges, corrupt ablation) with every position of each
    of our circuit's edges kept: the same recovered fraction."""
    from transformer_lens.tools.analysis.attribution_patching import Node as TLNode
    from transformer_lens.tools.analysis.attribution_patching import faithfulness as tl_faithfulness

    model = sharp("tiny_gpt2")
    task, held = scrambled_task(model, 3, seed=1), scrambled_task(model, 1, seed=4)
    scores = attribute(model, task, "eap-ig", steps=3)
    keep = scores.circuit(int(0.3 * scores.graph.n_edges))
    g, T = scores.graph, int(held.end[0]) + 1
    one = held.subset([0])

    def writer(n, p):
        if n.kind == "embed":
            return TLNode("embed", p)
        return TLNode("attn_head_out", p, n.layer, n.head) if n.kind == "head" else TLNode("mlp_out", p, n.layer)

    def reader(r, p):
        if r.kind in ("q", "k", "v"):
            return TLNode(f"{r.kind}_input", p, r.layer, r.head)
        return TLNode("mlp_in", p, r.layer) if r.kind == "mlp" else TLNode("logits", p, g.n_layers - 1)

    circuit = [(writer(e.src, p), reader(e.dst, p)) for i in keep.nonzero().flatten().tolist() for e in [g.edge(i)]
               for p in range(T)]  # fmt: skip
    a, s = int(one.answers[0]), int(one.distractors[0])
    res = tl_faithfulness(model.bridge, one.clean[:, :T], one.corrupted[:, :T], lambda lg: lg[0, T - 1, a] - lg[0, T - 1, s],
                          circuit)  # fmt: skip
    c = faithfulness_curve(model, scores, one, percents=(30,), n_boot=5)
    assert c.n_edges[0] == int(keep.sum())
    assert abs(c.faithfulness[0] - res.recovered) < 1e-4, (c.faithfulness[0], res.recovered)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_skipped_matmuls_are_not_computed_and_change_nothing(fixture, sharp, monkeypatch):
    """The engine projects only the q/k/v heads that read the residual stream itself (an input it
    rebuilds is projected from its own stream, one ablated completely takes its known projection) and
    only at the positions from the first difference on; the metric still equals the plain per-edge
    reconstruction."""
    from interp.circuits.replay import Replay

    model = sharp(fixture)
    held = late_scrambled_task(model, 3, seed=2, start=4)
    g = Graph.of(model)
    ab = Ablator(model, held)
    ab.check()
    keep = torch.rand(g.n_edges, generator=torch.Generator().manual_seed(1)) < 0.3
    calls: list[tuple[int, int]] = []
    real = Replay.project

    def counted(self, layer, normed, columns=None):
        calls.append((normed.shape[-2], g.n_heads + 2 * g.n_kv if columns is None else len(columns)))
        return real(self, layer, normed, columns)

    monkeypatch.setattr(Replay, "project", counted)
    fast = ab.run(keep)
    T = held.clean.shape[1]
    assert ab.t0 == 4 and calls
    assert {width for width, _ in calls} == {T - 4}  # windowed: the positions 4.. only
    assert any(n < g.n_heads + 2 * g.n_kv for _, n in calls)  # some heads' projections never ran
    assert torch.allclose(fast, ablated_reference(model, held, keep), atol=2e-5)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_positions_before_the_first_difference_are_not_rebuilt(fixture, sharp):
    """Where every clean prompt agrees with its corrupted one up to a position, every writer's
    difference is zero before it: the engine rebuilds from there on only, and still equals the plain
    per-edge reconstruction (mean ablation, whose replacement differs everywhere, rebuilds all)."""
    model = sharp(fixture)
    held, mean_over = late_scrambled_task(model, 3, seed=2, start=6), scrambled_task(model, 4, seed=9)
    g = Graph.of(model)
    ab, ab_mean = Ablator(model, held), Ablator(model, held, "mean", mean_over)
    assert ab.t0 == 6 and ab_mean.t0 == 0 and Ablator(model, scrambled_task(model, 3, seed=2)).t0 == 1
    gen = torch.Generator().manual_seed(3)
    for frac in (0.05, 0.3, 0.7, 0.97):
        keep = torch.rand(g.n_edges, generator=gen) < frac
        fast, plain = ab.run(keep), ablated_reference(model, held, keep)
        assert torch.allclose(fast, plain, atol=2e-5), (frac, fast, plain)
        if frac < 0.9:
            assert float((fast - ab.m_full).abs().max()) > 1e-3
        assert torch.allclose(ab_mean.run(keep), ablated_reference(model, held, keep, "mean", mean_over), atol=2e-5)


# -- the exact check: which edges, how fast, how they agree --------------------------------------------


def test_checked_edges_take_top_random_and_bottom():
    from interp.circuits.exact_check import checked_edges
    from interp.circuits.types import EdgeScores

    g = Graph(2, 4, 2, True)
    gen = torch.Generator().manual_seed(3)
    s = EdgeScores(g, torch.randn(g.n_edges, generator=gen), "eap", "t", "m", 1, 0.0, 0.0)
    rank = torch.empty(g.n_edges, dtype=torch.long)
    rank[s.order("abs")] = torch.arange(g.n_edges)
    picked = checked_edges(s, 20, seed=1)
    groups = [grp for _, grp in picked]
    assert groups == ["top"] * 10 + ["random"] * 5 + ["bottom"] * 5
    idx = [i for i, _ in picked]
    assert len(set(idx)) == 20
    assert [int(rank[i]) for i in idx[:10]] == list(range(10))
    assert all(int(rank[i]) >= 10 for i in idx[10:15]) and all(int(rank[i]) >= g.n_edges // 2 for i in idx[15:])
    assert checked_edges(s, 20, seed=1) == picked and checked_edges(s, 20, seed=2) != picked
    assert [grp for _, grp in checked_edges(s, 3)] == ["top", "top", "top"] and checked_edges(s, 0) == []
    assert len(checked_edges(s, 10_000)) == g.n_edges


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_fast_exact_check_equals_per_edge_reference(fixture, sharp):
    """The exact check on the ablation engine (all checked edges through one run_many) gives the plain
    one-hooked-forward-per-edge reference's numbers (interp.circuits.edges.edge_effects_reference)."""
    from interp.circuits.exact_check import checked_edges, exact_effects, exact_effects_reference

    model = sharp(fixture)
    task = scrambled_task(model, 3, seed=2)
    scores = attribute(model, task, "eap")
    idx = torch.tensor([i for i, _ in checked_edges(scores, 16, seed=0)])
    fast, ref = exact_effects(model, task, idx), exact_effects_reference(model, task, idx)
    assert float(ref.abs().max()) > 1e-2 and torch.allclose(fast, ref, atol=2e-5), (fast - ref).abs().max()
    with pytest.raises(WorkbenchError, match="counterfactual"):
        exact_effects(model, task, idx, ablator=Ablator(model, task, "mean", task))


def test_rank_and_linear_correlations():
    from interp.circuits.exact_check import pearson, spearman, summary

    assert spearman([1, 2, 3, 4], [10, 40, 90, 160]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([1, 2, 3, 4], [10, 40, 90, 160]) < 0.99
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    a = torch.tensor([0.5, 0.5, 2, 3], dtype=torch.float64)
    b = torch.tensor([0, 1, 2, 3], dtype=torch.float64)
    assert spearman([5, 5, 7, 9], [1, 2, 3, 4]) == pytest.approx(pearson(a, b))
    assert math.isnan(pearson([1, 2], [3, 4])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    rows = [{"src": "a", "dst": "b", "estimate": e, "exact": x, "group": g}
            for e, x, g in [(1.0, 0.9, "top"), (0.5, 0.6, "top"), (0.1, -0.3, "random"), (0.0, 0.01, "bottom")]]  # fmt: skip
    s = summary(rows)
    assert s["n"] == 4 and s["groups"] == {"top": 2, "random": 1, "bottom": 1}
    assert s["largest_gap"]["group"] == "random" and s["spearman"] == pytest.approx(spearman([1, 0.5, 0.1, 0], [0.9, 0.6, -0.3, 0.01]))
