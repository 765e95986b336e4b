"""Planted circuits: the hand-set induction model does induction through exactly the edges it is said to
(each planted edge's knock-out hurts, no other edge's does), on our graph and, for the grouped-query model,
on MIB's ungrouped one too, and every registered method's edge ranking is scored by an AUROC that matches
a hand computation."""

from __future__ import annotations

import itertools

import pytest
import torch

from interp import hooks
from interp.circuits import methods
from interp.circuits.edges import edge_effects, edge_effects_reference
from interp.circuits.graph import Graph
from interp.circuits.planted import (
    CIRCUIT,
    CIRCUIT_MLP,
    POSITIONAL,
    PRESETS,
    SAME_END,
    SHARP,
    PlantedSpec,
    both_graphs,
    build_planted,
    ground_truth,
    planted_task,
)
from interp.circuits.recovery import Recovery, auroc, average_ranks, recover, recovery
from interp.data.task import end_logits, metric_fn
from interp.data.tasks import induction_task
from interp.errors import WorkbenchError

N, SEG = 12, 8


@pytest.fixture(scope="module")
def planted():
    return build_planted(SHARP)


@pytest.fixture(scope="module")
def successor():
    return build_planted(PRESETS["successor-sharp"])


@pytest.fixture(scope="module")
def gqa():
    """The grouped-query model: a1.h0 (induction) shares KV head kv0 with the decoy a1.h1."""
    return build_planted(PRESETS["gqa-sharp"])


@pytest.fixture(scope="module")
def tasks(planted):
    return {"planted-induction": planted_task(planted, N, 4, seg_len=SEG).score,
            "induction": induction_task(planted, N, 4, seg_len=SEG).score}  # fmt: skip


@pytest.fixture(scope="module")
def cases(planted, successor, gqa, tasks):
    """(model, task) by case: the induction model on both its tasks, the successor model on its own, the
    grouped-query model on our graph (the model) and on MIB's (its ungrouped copy)."""
    gqa_task = planted_task(gqa, N, 4, seg_len=SEG).score
    graphs = both_graphs(gqa, gqa_task)
    return {**{name: (planted, task) for name, task in tasks.items()},
            "planted-successor": (successor, planted_task(successor, N, 4, seg_len=SEG).score),
            "gqa-grouped": (graphs["grouped"][0], gqa_task), "gqa-mib": (graphs["mib"][0], gqa_task)}  # fmt: skip


@pytest.fixture(scope="module")
def exact(cases):
    return {name: edge_effects(model, task) for name, (model, task) in cases.items()}


CASES = ["planted-induction", "induction", "planted-successor", "gqa-grouped", "gqa-mib"]


# -- AUROC ---------------------------------------------------------------------------------------------


def _pairwise_auroc(scores, labels) -> float:
    """The definition: over every (planted, other) pair, 1 if the planted edge scores higher, 1/2 if tied."""
    pos = [s for s, y in zip(scores.tolist(), labels.tolist()) if y]
    neg = [s for s, y in zip(scores.tolist(), labels.tolist()) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_matches_hand_computations():
    # planted 0.35 beats 0.1, loses to 0.4; planted 0.8 beats both: 3 of 4 pairs
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True])) == 0.75
    # planted 1.0 ties one other (1/2), loses to 2.0, beats 0.0: 1.5 of 3 pairs
    assert auroc(torch.tensor([1.0, 1.0, 2.0, 0.0]), torch.tensor([True, False, False, False])) == 0.5
    assert average_ranks(torch.tensor([3.0, 1.0, 1.0, 2.0])).tolist() == [4.0, 1.5, 1.5, 3.0]
    assert auroc(torch.tensor([5.0, 4.0, 1.0]), torch.tensor([True, True, False])) == 1.0
    assert auroc(torch.tensor([1.0, 4.0, 5.0]), torch.tensor([True, False, False])) == 0.0
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # many ties (scores drawn from 4 values)
        scores = torch.randint(0, 4, (30,), generator=g).float()
        labels = torch.rand(30, generator=g) < 0.3
        assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-12)


def test_auroc_refuses_what_it_cannot_score():
    with pytest.raises(WorkbenchError, match="NaN"):
        auroc(torch.tensor([1.0, float("nan")]), torch.tensor([True, False]))
    with pytest.raises(WorkbenchError, match="both sides"):
        auroc(torch.tensor([1.0, 2.0]), torch.tensor([True, True]))
    with pytest.raises(WorkbenchError, match="one label per score"):
        auroc(torch.tensor([1.0, 2.0]), torch.tensor([True]))


# -- the model does the task --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_planted_models_solve_their_tasks(cases, name):
    model, task = cases[name]
    assert model.info.n_kv_heads == (2 if name == "gqa-grouped" else 4)
    m = metric_fn(task)
    with torch.no_grad():
        clean = end_logits(model(task.clean), task.end)
        corrupted = end_logits(model(task.corrupted), task.end)
    assert bool((clean.argmax(-1) == task.answers).all())  # every prompt right
    assert float(m(clean).min()) > 0.9 * SHARP.copy  # the induction head copies with nearly all its attention
    assert float(m(corrupted).max()) < 0.25 * SHARP.copy  # nothing to copy: the answer gets little
    if name == "planted-successor":  # the answer is the copied token's successor, not the token itself
        copied = task.clean[:, SEG]
        assert torch.equal(task.answers, copied + 1) and float((clean.gather(1, copied[:, None])).max()) < 1.0


def test_the_circuit_heads_attend_where_planted(planted, tasks):
    task = tasks["planted-induction"]
    _, cache = planted.run_with_cache(task.clean)
    prev = cache[hooks.name("pattern", 0)][:, 0]  # [batch dest src]
    assert float(torch.diagonal(prev, offset=-1, dim1=1, dim2=2).min()) > 0.99  # i -> i - 1
    ind = cache[hooks.name("pattern", 1)][:, 0, -1]  # END's attention [batch src]
    assert bool((ind.argmax(-1) == SEG).all()) and float(ind[:, SEG].min()) > 0.9  # the token after END's earlier copy
    bos = cache[hooks.name("pattern", 1)][:, 3, :, 0]
    assert float(bos.min()) > 0.99  # a1.h3 looks at BOS only


def test_the_planted_model_saves_and_loads_as_an_inhouse_checkpoint(planted, tasks, tmp_path):
    from interp.models.inhouse import load_inhouse, save_inhouse

    save_inhouse(planted, SHARP.native(), tmp_path / "planted")
    loaded, spec, _ = load_inhouse(tmp_path / "planted")
    tokens = tasks["induction"].clean
    assert spec == SHARP.native() and torch.equal(loaded(tokens), planted(tokens))


# -- the ground truth is causal -----------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_each_planted_edge_matters_and_no_other_does(cases, exact, name):
    (model, task), scores = cases[name], exact[name]
    truth = ground_truth(model, task)
    circuit = CIRCUIT_MLP if name == "planted-successor" else CIRCUIT
    assert truth.circuit == circuit  # the same names on both graphs: query head 0 reads kv0 in both
    gap = scores.clean_metric - scores.corrupted_metric
    assert gap > 0.8 * SHARP.copy
    effect = dict(zip(truth.graph.edge_names(), scores.scores.tolist()))
    for e in truth.planted:
        assert effect[e] > 0.5 * gap, e  # knocking out any one planted edge loses most of the behaviour
    for e in truth.silent:
        assert abs(effect[e]) < 1e-5, e  # the counterfactual does not reach these
    others = [abs(v) for e, v in effect.items() if e not in circuit]
    assert len(others) == truth.graph.n_edges - len(circuit) and max(others) < 0.02 * gap
    # the batched engine agrees with one plain hooked forward per planted edge
    idx = [truth.graph.index_by_names(*e.split("->")) for e in truth.planted]
    ref = edge_effects_reference(model, task, edges=idx)
    assert torch.allclose(ref, scores.scores[idx], atol=1e-4)


def test_silent_edges_follow_the_counterfactual(planted, tasks):
    assert ground_truth(planted, tasks["planted-induction"]).silent == POSITIONAL
    truth = ground_truth(planted, tasks["induction"])
    assert truth.silent == POSITIONAL + SAME_END and len(truth.planted) == len(CIRCUIT) - 3
    positive, counted = truth.labels()
    assert int(positive.sum()) == 4 and int((~counted).sum()) == 3 and not bool((positive & ~counted).any())


def test_ground_truth_refuses_other_models_and_tasks(planted, successor, tasks, tiny_llama):
    from dataclasses import replace

    with pytest.raises(WorkbenchError, match="not a planted model"):
        ground_truth(tiny_llama, tasks["induction"])
    with pytest.raises(WorkbenchError, match="known for tasks"):
        ground_truth(planted, replace(tasks["induction"], name="ioi"))
    with pytest.raises(WorkbenchError, match="known for tasks 'planted-successor'"):
        ground_truth(successor, tasks["induction"])  # its answers are successors: the induction task's are not
    with pytest.raises(WorkbenchError, match="seg_len"):
        planted_task(planted, 2, 2, seg_len=SHARP.n_ctx)
    with pytest.raises(WorkbenchError, match="sharpness"):
        build_planted(PlantedSpec(sharpness=0.0))
    with pytest.raises(WorkbenchError, match="KV heads"):
        build_planted(PlantedSpec(n_kv=3))


# -- every method's recovery ----------------------------------------------------------------------------


def test_exact_patching_recovers_the_planted_edges_perfectly(cases, exact):
    # what the causal test above establishes (every planted effect > 0.5 gap > every other |effect|) makes
    # both AUROCs exactly 1 and puts the planted edges first
    for name, (model, task) in cases.items():
        truth = ground_truth(model, task)
        r = recovery(exact[name], truth)
        assert (r.auroc_abs, r.auroc_signed) == (1.0, 1.0) and r.worst_rank == r.n_planted == len(truth.planted)
        assert r.n_planted + r.n_other + len(truth.silent) == exact[name].graph.n_edges


def test_recovery_counts_misranked_planted_edges(planted, tasks, exact):
    # planted edges score 10, the others distinct values in (0, 1); one planted edge is then moved just
    # below the 3 strongest others: 3 of the n_planted x n_other pairs flip, and 3 others rank above it
    from dataclasses import replace

    truth = ground_truth(planted, tasks["planted-induction"])
    positive, counted = truth.labels()
    s = torch.where(positive, 10.0, 0.0)
    others = torch.where(counted & ~positive)[0]
    values = torch.linspace(0.01, 0.99, len(others))
    s[others] = values
    s[torch.where(positive)[0][0]] = -(values[-3] + values[-4]) / 2  # |score| between the 4th and 3rd strongest others
    r = recovery(replace(exact["planted-induction"], scores=s), truth)
    assert r.auroc_abs == pytest.approx(1 - 3 / (r.n_planted * r.n_other)) and r.worst_rank == r.n_planted + 3
    assert r.auroc_signed == pytest.approx(1 - 1 / r.n_planted)  # its signed score is below every other's


def test_every_registered_method_is_scored_or_says_why_not(planted):
    # 4 short prompts keep this quick: a method that trains (learned masks) may refuse so few, in one line
    task = planted_task(planted, 4, 2, seed=5, seg_len=6).score
    truth = ground_truth(planted, task)
    rows = recover(planted, task, truth)
    assert [r.method for r in rows] == list(methods.names())
    for r in rows:
        if r.error is None:
            assert 0.0 <= r.auroc_abs <= 1.0 and 0.0 <= r.auroc_signed <= 1.0 and r.worst_rank >= r.n_planted
            assert r.seconds > 0
        else:
            assert r.auroc_abs is None and "\n" not in r.error and r.error.strip()
    by = {r.method: r for r in rows}
    assert by["exact"].auroc_abs == 1.0 and by["exact"].error is None


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_gradient_methods_give_zero_to_heads_nobody_reads(planted, tasks, method):
    # a0.h2 and a0.h3 write only into a block no reader's weights touch, so the gradient at every input
    # is orthogonal to their difference: their scores are 0 whatever the attribution's accuracy
    scores = methods.score_edges(planted, tasks["planted-induction"], method)
    names = scores.graph.edge_names()
    unread = [i for i, n in enumerate(names) if n.startswith(("a0.h2->", "a0.h3->"))]
    assert len(unread) == 2 * 13 and float(scores.scores[unread].abs().max()) < 1e-6
    assert float(scores.scores.abs().max()) > 1.0


def test_a_method_that_refuses_is_kept_as_a_row(planted, tasks, monkeypatch):
    def refuse(model, task, options):
        raise WorkbenchError("too small to train a mask on; use a larger model")

    monkeypatch.setitem(methods._REGISTRY, "refuser", methods.Method("refuser", refuse, "test", lambda o, n, g: 0.0))
    truth = ground_truth(planted, tasks["planted-induction"])
    (row,) = recover(planted, tasks["planted-induction"], truth, methods=["refuser"])
    assert row == Recovery("refuser", None, None, 5, truth.graph.n_edges - len(CIRCUIT), None, 0.0,
                           "too small to train a mask on; use a larger model")  # fmt: skip


# -- the grouped-query model on both graphs ----------------------------------------------------------------


def test_the_gqa_model_shares_keys_as_planted(cases):
    grouped, task = cases["gqa-grouped"]
    mib, _ = cases["gqa-mib"]
    with torch.no_grad():
        assert torch.allclose(grouped(task.clean), mib(task.clean), atol=1e-5)  # one function, two graphs
    _, cache = grouped.run_with_cache(task.clean)
    p0, p1 = cache[hooks.name("pattern", 0)], cache[hooks.name("pattern", 1)]  # [batch head dest src]
    assert float(torch.diagonal(p0[:, 0], offset=-1, dim1=1, dim2=2).min()) > 0.99  # a0.h0: i -> i - 1
    assert float(torch.diagonal(p0[:, 1], dim1=1, dim2=2)[:, 1:].min()) > 0.99  # a0.h1 (same keys): i -> i
    assert float(p1[:, 0, -1, SEG].min()) > 0.9  # the induction head at END: the token after the earlier copy
    assert torch.allclose(p1[:, 1], p1[:, 0])  # the decoy reads the same keys with the same query
    truth = {name: ground_truth(*cases[name]) for name in ("gqa-grouped", "gqa-mib")}
    g, m = truth["gqa-grouped"].graph, truth["gqa-mib"].graph
    assert (g.n_kv, g.n_edges, m.n_kv, m.n_edges) == (2, 57, 4, 81)
    k_in = g.edge(g.index_by_names("a0.h0", "a1.kv0<k>")).dst
    assert g.heads_fed(k_in) == [0, 1] and m.heads_fed(m.edge(m.index_by_names("a0.h0", "a1.kv0<k>")).dst) == [0]
    assert truth["gqa-grouped"].planted == truth["gqa-mib"].planted  # the same names, other edges


def test_a_grouped_edge_is_its_groups_mib_edges_knocked_out_together(cases, exact):
    """Every edge into a k or v input of the grouped graph, ablated, gives the metric that ablating the
    edges from the same writer into the k or v inputs of every query head of its group gives on MIB's
    graph (the ablation engine on each model); where the group holds a head that uses it (a0.kv0<v>: the
    previous-token head and the current-token head), the grouped edge is not any one MIB edge."""
    from interp.circuits.ablate import Ablator

    (grouped, task), (mib, _) = cases["gqa-grouped"], cases["gqa-mib"]
    g, m = Graph.of(grouped), Graph.of(mib)
    ab_g, ab_m = Ablator(grouped, task), Ablator(mib, task)
    kv = [e for e in range(g.n_edges) if g.edge(e).dst.kind in ("k", "v")]
    plans_g, plans_m = [], []
    for e in kv:
        edge = g.edge(e)
        keep = torch.ones(g.n_edges, dtype=torch.bool)
        keep[e] = False
        plans_g.append(keep)
        keep = torch.ones(m.n_edges, dtype=torch.bool)
        for h in g.heads_fed(edge.dst):  # on MIB's graph query head h reads its own kv h
            keep[m.index_by_names(edge.src.name, f"a{edge.dst.layer}.kv{h}<{edge.dst.kind}>")] = False
        plans_m.append(keep)
    got_g, got_m = ab_g.run_many(plans_g).mean(1), ab_m.run_many(plans_m).mean(1)
    assert torch.allclose(got_g, got_m, atol=1e-4), float((got_g - got_m).abs().max())
    effect_g = float(ab_g.m_full.mean()) - got_g  # the engine's knock-out is exact patching's effect
    assert torch.allclose(effect_g, exact["gqa-grouped"].scores[kv].float(), atol=1e-4)
    # the value edge of a0.h0 on our graph also corrupts the current-token head's values: 2 % more than
    # MIB's edge into a0.h0's own values
    name = lambda scores, e: float(scores.scores[scores.graph.index_by_names(*e.split("->"))])
    v_g, v_m = name(exact["gqa-grouped"], "embed->a0.kv0<v>"), name(exact["gqa-mib"], "embed->a0.kv0<v>")
    assert v_m - v_g > 0.01 * v_m and abs(name(exact["gqa-mib"], "embed->a0.kv1<v>")) > 0.002 * v_m
    # the decoy's own inputs on MIB's graph: it writes where nothing reads, so they do nothing
    for e in ("a0.h0->a1.kv1<k>", "embed->a1.kv1<v>", "embed->a1.h1<q>"):
        assert abs(name(exact["gqa-mib"], e)) < 1e-6, e


def test_every_method_scored_on_both_graphs_of_the_gqa_model(gqa):
    task = planted_task(gqa, 8, 2, seed=5, seg_len=6).score
    for graph_name, (model, truth) in both_graphs(gqa, task).items():
        rows = {r.method: r for r in recover(model, task, truth, ["eap", "eap-ig", "eap-ig-act", "exact"])}
        n_edges = {"grouped": 57, "mib": 81}[graph_name]
        for r in rows.values():
            assert r.error is None and r.n_planted + r.n_other + len(truth.silent) == n_edges
            assert 0.0 <= r.auroc_signed <= 1.0 and r.worst_rank >= r.n_planted
        assert rows["exact"].auroc_abs == 1.0 and rows["exact"].worst_rank == 5
        assert rows["eap-ig"].auroc_abs == 1.0, graph_name  # sharp attention: EAP-IG ranks the planted edges first
