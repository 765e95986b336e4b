"""QK attribution (interp.graphs.qk): a head's score split into (query node, key node) terms that sum
to the score the real model computes, the batched terms equal to a slow per-pair reference, and
`interp graph --qk` writing them into graph.json."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import error_line
from graph_helpers import random_transcoders

from interp import hooks
from interp.errors import WorkbenchError
from interp.graphs import qk


def _scores(model, R) -> dict[int, torch.Tensor]:
    """Every layer's scores [head query key] read from the real model's hook_attn_scores."""
    names = [hooks.name("attn_scores", la) for la in range(R.n_layers)]
    got = hooks.capture(model, R.tokens[None], names)
    return {la: got[n][0].float() for la, n in enumerate(names)}


def test_terms_sum_to_the_real_score_for_every_head(built):
    """Every query head (GQA: heads 2, 3 read the second KV head; rotary on the Llama) at several
    (query, key) pairs, layer 0 and layer 1 (whose residual holds features, errors, earlier attention)."""
    model, _tc, R, g = built
    real = _scores(model, R)
    last = R.n_pos - 1
    for layer in range(R.n_layers):
        for head in range(model.info.n_heads):
            for q, k in ((last, 0), (last, 3), (4, 4), (2, 1)):
                e = qk.explain(model, R, g, layer, head, q, k)
                want = float(real[layer][head, q, k])
                assert e.real == pytest.approx(want, abs=1e-7)
                assert abs(e.score - want) < 1e-5 + 1e-4 * abs(want), (layer, head, q, k, e.score, want)
                # the terms are much larger than the score: an exact sum is not an accident
                assert e.terms.shape == (len(e.q_nodes) + 1, len(e.k_nodes) + 1)
    assert e.terms.abs().max() > 10 * abs(e.score)


def test_rotary_and_grouping_matter(tiny_llama):
    """The decomposition with the wrong KV head, or without rotation, misses the real score: the
    test above checks something."""
    from interp.graphs.attribute import attribute
    from interp.graphs.replacement import build

    tc = random_transcoders(tiny_llama)
    prompt = "The cat sat on the mat and"
    R = build(tiny_llama, tc, tiny_llama.to_tokens(prompt)[0])
    g = attribute(tiny_llama, tc, prompt, replacement=R, batch_size=16)
    q, k, h = R.n_pos - 1, 1, 3
    real = qk.real_score(tiny_llama, R.tokens, 1, h, q, k)
    right = qk.head_of(tiny_llama, 1, h, R.n_pos, R.tokens)
    assert qk.explain(tiny_llama, R, g, 1, h, q, k, head_weights=right).score == pytest.approx(real, abs=1e-6)
    wrong_kv = qk.head_of(tiny_llama, 1, 0, R.n_pos, R.tokens)  # head 0 reads KV head 0
    wrong_kv.W_Q, wrong_kv.b_Q = right.W_Q, right.b_Q
    no_rot = qk.head_of(tiny_llama, 1, h, R.n_pos, R.tokens)
    no_rot.cos = no_rot.sin = None
    for bad in (wrong_kv, no_rot):
        assert abs(qk.explain(tiny_llama, R, g, 1, h, q, k, head_weights=bad).score - real) > 1e-4


def test_batched_terms_equal_the_slow_reference(built):
    model, _tc, R, g = built
    for head, q, k in ((3, R.n_pos - 1, 2), (0, 3, 3)):
        e = qk.explain(model, R, g, 1, head, q, k, real=False)
        ref = qk.reference_terms(model, R, g, 1, head, q, k)
        torch.testing.assert_close(e.terms, ref, atol=2e-6, rtol=1e-5)


def test_contributions_sum_to_the_real_attention_input(built):
    """sum_i c_i(p) + c_0(p) = ln1 of the real residual at every position (hook q_input's norm)."""
    model, _tc, R, g = built
    layer = 1
    got = hooks.capture(model, R.tokens[None], [hooks.name("resid_pre", layer)])
    x_real = R.weights.ln1[layer].apply(got[hooks.name("resid_pre", layer)][0].float(), R.scales[0, layer])
    c0 = qk.constant(g, R, layer)
    for p in range(R.n_pos):
        c = qk.contributions(g, R, layer, p, qk.candidates(g, layer, p))
        torch.testing.assert_close(c.sum(0) + c0[p], x_real[p], atol=1e-5, rtol=1e-4)


def test_dropped_features_and_bos_go_to_the_bias(tiny_gpt2):
    """With max_feature_nodes some features are not nodes; what they write is in the bias, so the
    terms still sum to the real score, and no dropped feature is named."""
    from interp.graphs.attribute import attribute
    from interp.graphs.replacement import build

    tc = random_transcoders(tiny_gpt2)
    prompt = "The cat sat on the mat and"
    R = build(tiny_gpt2, tc, tiny_gpt2.to_tokens(prompt)[0])
    g = attribute(tiny_gpt2, tc, prompt, replacement=R, batch_size=16, max_feature_nodes=6)
    assert g.settings["active_features"] > g.n_features
    e = qk.explain(tiny_gpt2, R, g, 1, 1, R.n_pos - 1, 2)
    assert e.score == pytest.approx(e.real, abs=1e-5)
    ids = {g.describe(i)["id"] for i in range(g.n_nodes)} | {"bias"}
    d = e.to_dict(g, top=1000)
    assert {p["query_node"] for p in d["top_pairs"]} <= ids and {p["key_node"] for p in d["top_pairs"]} <= ids


def test_marginals_are_row_and_column_sums(built):
    model, _tc, R, g = built
    e = qk.explain(model, R, g, 1, 2, R.n_pos - 1, 1)
    d = e.to_dict(g, top=5)
    assert len(d["top_pairs"]) == 5 and len(d["query_nodes"]) == 5
    mags = [abs(p["term"]) for p in d["top_pairs"]]
    assert mags == sorted(mags, reverse=True) and mags[0] == pytest.approx(float(e.terms.abs().max()))
    rows = {g.describe(int(i))["id"]: float(s) for i, s in zip(e.q_nodes, e.terms.sum(1))}
    cols = {g.describe(int(i))["id"]: float(s) for i, s in zip(e.k_nodes, e.terms.sum(0))}
    for x in d["query_nodes"]:
        assert x["node"] == "bias" or x["sum"] == pytest.approx(rows[x["node"]])
    for x in d["key_nodes"]:
        assert x["node"] == "bias" or x["sum"] == pytest.approx(cols[x["node"]])
    full = e.to_dict(g, top=10**6)
    assert sum(x["sum"] for x in full["query_nodes"]) == pytest.approx(e.score, abs=1e-5)
    # key-side nodes sit at positions up to the key, query-side ones up to the query
    assert all(g.describe(int(i))["pos"] <= 1 for i in e.k_nodes)


def test_edges_are_explained_at_their_positions(built):
    model, _tc, R, g = built
    out = qk.edge_qk(model, R, g, n=3, top=4)
    assert len(out) == 3
    for x in out:
        src, tgt = g.find(x["edge"]["source"]), g.find(x["edge"]["target"])
        assert x["key"] == g.describe(src)["pos"] != x["query"] == g.describe(tgt)["pos"]
        assert x["score"] == pytest.approx(x["real_score"], abs=1e-5)
        src_layer = -1 if g.kind(src) == "token" else g.describe(src)["layer"]
        assert src_layer < x["layer"] <= min(g.describe(tgt)["layer"], R.n_layers - 1)
    weights = [abs(x["edge"]["weight"]) for x in out]
    assert weights == sorted(weights, reverse=True)


@pytest.mark.parametrize("place, expect", [
    ((2, 0, 3, 1), "layer 2 does not exist"),
    ((1, 4, 3, 1), "head 4 does not exist"),
    ((1, 0, 9, 1), "query position 9"),
    ((1, 0, 3, 4), "key position 4"),
    ((1, 0, 3, -1), "key position -1"),
])  # fmt: skip
def test_bad_places_are_refused(built, place, expect):
    model, _tc, R, g = built
    with pytest.raises(WorkbenchError, match=expect):
        qk.explain(model, R, g, *place)


# -- the command line ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qk_folders(tiny_llama, tiny_llama_dir, tmp_path_factory):
    from interp.features import save

    root = tmp_path_factory.mktemp("graph_qk_cli")
    save(random_transcoders(tiny_llama), root / "tc")
    return root, str(tiny_llama_dir)


def test_cli_writes_the_qk_section(qk_folders, capsys):
    from interp.cli import main

    root, model = qk_folders
    out = root / "out"
    rc = main(["graph", "--model", model, "--prompt", "The cat sat on the mat", "--transcoders", str(root / "tc"),
               "--out", str(out), "--qk", "2", "--qk-at", "1,3,5,2"])  # fmt: skip
    assert rc == 0
    graph = json.loads((out / "graph.json").read_text())
    edges, at = graph["qk"]["edges"], graph["qk"]["scores"]
    assert len(edges) == 2 and len(at) == 1
    assert (at[0]["layer"], at[0]["head"], at[0]["query"], at[0]["key"]) == (1, 3, 5, 2)
    ids = {n["id"] for n in graph["nodes"]}
    for x in edges:  # the explained edges are the pruned graph's own
        assert x["edge"]["source"] in ids and x["edge"]["target"] in ids
    for x in [*edges, *at]:
        assert x["score"] == pytest.approx(x["real_score"], abs=1e-5)
    assert "QK" in capsys.readouterr().out


@pytest.mark.parametrize("spec, expect", [
    ("1,4,5,2", "head 4 does not exist"),
    ("1,0,7,2", "query position 7"),
    ("1,0,2,3", "key position 3"),
    ("1,0,x,2", "--qk-at"),
])  # fmt: skip
def test_cli_bad_qk_place_is_one_line(qk_folders, tmp_path, capsys, spec, expect):
    from interp.cli import main

    root, model = qk_folders
    rc = main(["graph", "--model", model, "--prompt", "The cat sat on the mat", "--transcoders", str(root / "tc"),
               "--out", str(tmp_path / "o"), "--qk-at", spec])  # fmt: skip
    assert rc == 2 and expect in error_line(capsys)
    assert not (tmp_path / "o").exists()
