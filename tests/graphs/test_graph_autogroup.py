"""Automatic supernodes (interp.graphs.autogroup): the clustering against its slow reference, the
proposal's shape and determinism, and the grouping's faithfulness: switching a whole supernode off in
the frozen linear model matches the graph's joint prediction exactly, while the sum of the members'
single predictions double-counts a member's effect through another member."""

from __future__ import annotations

import pytest
import torch

from interp.errors import WorkbenchError
from interp.graphs import autogroup as ag
from interp.graphs import intervene, prune
from interp.graphs.supernodes import check_supernodes


def _random_similarity(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen)
    return ag.cosine_matrix(X)


# -- clustering ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold, band", [(0.2, None), (0.5, None), (0.8, None), (0.3, 1), (0.1, 0)])
def test_agglomerate_matches_the_slow_reference(seed, threshold, band):
    S = _random_similarity(14, seed)
    layers = [i % 3 for i in range(14)]
    fast = ag.agglomerate(S, threshold, layers, band)
    assert fast == ag.agglomerate_reference(S, threshold, layers, band)
    assert sorted(i for c in fast for i in c) == list(range(14))  # a partition
    if band is not None:
        assert all(max(layers[i] for i in c) - min(layers[i] for i in c) <= band for c in fast)


def test_agglomerate_finds_planted_blocks_and_lower_thresholds_only_merge():
    S = torch.full((6, 6), 0.1, dtype=torch.float64)
    for block in ([0, 3, 5], [1, 4]):
        for i in block:
            for j in block:
                S[i, j] = 0.9
    S.fill_diagonal_(1.0)
    assert ag.agglomerate(S, 0.5) == [[0, 3, 5], [1, 4], [2]]
    assert ag.agglomerate(S, 0.95) == [[i] for i in range(6)]
    S2 = _random_similarity(12, 5)
    coarse, fine = ag.agglomerate(S2, 0.2), ag.agglomerate(S2, 0.6)
    for c in fine:  # every cluster at the higher threshold lies inside one at the lower
        assert any(set(c) <= set(d) for d in coarse)
    assert len(coarse) < len(fine)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan")])
def test_threshold_outside_unit_interval_is_refused(bad):
    with pytest.raises(WorkbenchError, match=r"must be in \(0, 1\]"):
        ag.agglomerate(torch.eye(3), bad)


def test_combine_weights():
    a, b, c = (torch.full((2, 2), v) for v in (0.2, 0.5, 0.8))
    torch.testing.assert_close(ag.combine(a, b, c, (1, 0, 0)), a.double())
    torch.testing.assert_close(ag.combine(a, b, c), torch.full((2, 2), 0.5, dtype=torch.float64))
    with pytest.raises(WorkbenchError, match="similarity weights"):
        ag.combine(a, b, c, (0, 0, 0))


# -- the proposal ------------------------------------------------------------------------------------------
def test_proposal_is_valid_deterministic_and_named(built):
    model, _, R, g = built
    kinds = {g.describe(i)["id"]: g.kind(i) for i in range(g.n_nodes)}
    first = ag.propose(g, R, None, threshold=0.3, top_token=ag.model_top_token(model))
    again = ag.propose(g, R, None, threshold=0.3, top_token=ag.model_top_token(model))
    groups = first["supernodes"]
    assert groups == again["supernodes"] and groups  # the same grouping twice, and some grouping at all
    assert check_supernodes(groups, kinds) == groups  # the form --supernodes takes, valid on this graph
    assert all(len(ms) >= 2 and all(kinds[m] == "feature" for m in ms) for ms in groups.values())
    for name, ms in groups.items():
        layers = sorted({g.describe(g.find(m))["layer"] for m in ms})
        span = f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}-{layers[-1]}"
        assert name.startswith(span + " ") and name.split(" #")[0].endswith(f"({len(ms)})")
    banded = ag.propose(g, R, None, threshold=0.3, layer_band=0)["supernodes"]
    assert all(len({g.describe(g.find(m))["layer"] for m in ms}) == 1 for ms in banded.values())


def test_proposal_groups_within_the_pruned_graph(built):
    _, _, R, g = built
    pr = prune.prune(g)
    got = ag.propose(g, R, pr, threshold=0.1)
    kept = {g.describe(i)["id"] for i in range(g.n_features) if pr.nodes[i]}
    assert set(got["features"]) == kept
    assert {m for ms in got["supernodes"].values() for m in ms} <= kept
    assert len(got["similarity"]["combined"]) == len(kept)


def test_signals_see_a_feature_repeated_across_positions(built):
    """The same latent at two positions: one decoder, and (over the prompt) one activation profile."""
    _, _, R, g = built
    key = [(int(la), int(f)) for la, _, f in g.features.tolist()]
    pair = next(([i, j] for i in range(len(key)) for j in range(i + 1, len(key)) if key[i] == key[j]), None)
    if pair is None:
        pytest.skip("no latent active at two positions here")
    dec = ag.cosine_matrix(ag.decoder_rows(g, R.transcoders, pair))
    co = ag.cosine_matrix(ag.graph_profiles(g, R, pair))
    assert float(dec[0, 1]) == pytest.approx(1.0) and float(co[0, 1]) == pytest.approx(1.0)
    grouped = ag.propose(g, R, None, threshold=0.999, weights=(1, 1, 0))["supernodes"]
    assert any({g.describe(pair[0])["id"], g.describe(pair[1])["id"]} <= set(ms) for ms in grouped.values())


def test_text_profiles_of_the_prompt_are_the_graph_profiles(built):
    model, tc, R, g = built
    nodes = list(range(0, g.n_features, 3))
    from_text = ag.text_profiles(model, tc, g, nodes, [g.prompt])
    torch.testing.assert_close(from_text, ag.graph_profiles(g, R, nodes), atol=1e-5, rtol=1e-4)
    two = ag.text_profiles(model, tc, g, nodes, [g.prompt, "a dog ran"])
    assert two.shape[0] == len(nodes) and two.shape[1] > from_text.shape[1]


# -- faithfulness ------------------------------------------------------------------------------------------
def _connected_pair(g):
    """A layer-0 feature and a layer-1 feature it drives, the latter reaching the logit."""
    F = g.n_features
    A = g.adjacency
    row = g.logit_index(0)
    best = None
    for t in range(F):
        if int(g.features[t, 0]) == 1 and abs(float(A[row, t])) > 1e-3:
            s = int(A[t, :F].abs().argmax())
            if abs(float(A[t, s])) > 1e-3 and (best is None or abs(float(A[t, s])) > best[0]):
                best = (abs(float(A[t, s])), [s, t])
    return None if best is None else best[1]


def test_joint_prediction_is_exact_and_the_sum_double_counts(built):
    model, _, R, g = built
    layer0 = [i for i in range(g.n_features) if int(g.features[i, 0]) == 0]
    groups = [layer0[:4], layer0[4:9], list(range(0, g.n_features, 5))]
    pair = _connected_pair(g)
    assert pair is not None
    groups.append(pair)
    joint = ag.joint_predicted(g, groups)
    measured = ag.measured_group_effects(model, R, g, groups, "linear")
    torch.testing.assert_close(measured, joint, atol=1e-4, rtol=1e-4)
    summed = ag.sum_predicted(g, groups)
    torch.testing.assert_close(summed[:2], joint[:2], atol=1e-5, rtol=1e-5)  # one layer: no member feeds another
    assert abs(float(summed[3] - joint[3])) > 1e-4  # the pair: the first's effect through the second counted twice
    # scaling instead of switching off, still exact
    torch.testing.assert_close(ag.measured_group_effects(model, R, g, groups, "linear", scale=2.0),
                               ag.joint_predicted(g, groups, scale=2.0), atol=1e-4, rtol=1e-4)  # fmt: skip


def test_single_member_groups_are_intervene_s_single_features(built):
    model, _, R, g = built
    sources = intervene.sample_features(g, 5, seed=1)
    torch.testing.assert_close(ag.joint_predicted(g, [[s] for s in sources]), intervene.predicted_effects(g, sources))
    for mode in ("frozen", "live"):
        torch.testing.assert_close(ag.measured_group_effects(model, R, g, [[s] for s in sources], mode),
                                   intervene.measured_effects(model, R, g, sources, mode), atol=1e-5, rtol=1e-4)  # fmt: skip


def test_faithfulness_report(built):
    model, _, R, g = built
    pair = _connected_pair(g)
    ids = lambda ns: [g.describe(i)["id"] for i in ns]
    groups = {"pair": ids(pair), "spread": ids(range(1, g.n_features, 7)), "errors only": ["err0@2"],
              "with an error": [*ids([0, 2]), "err1@3"]}  # fmt: skip
    rep = ag.faithfulness(model, R, g, groups, modes=("linear", "frozen"))
    assert [r["name"] for r in rep["supernodes"]] == ["pair", "spread", "with an error"]  # no features: skipped
    assert rep["supernodes"][2]["members"] == ids([0, 2])  # error nodes are not switched
    lin = rep["modes"]["linear"]
    assert lin["pearson_supernodes_joint"] == pytest.approx(1.0, abs=1e-6) and lin["max_gap_supernodes_joint"] < 1e-4
    assert lin["pearson_features"] == pytest.approx(1.0, abs=1e-6) and lin["max_gap_features"] < 1e-4
    pr = rep["supernodes"][0]
    # the pair does not act additively: together differs from the members alone, and from the summed prediction
    assert abs(pr["measured"]["linear"] - pr["measured_singles_sum"]["linear"]) > 1e-4
    assert lin["max_interaction"] > 1e-4 and lin["max_gap_supernodes"] > 1e-4
    assert set(rep["features"]["measured"]) == {"linear", "frozen"}
    assert len(rep["features"]["nodes"]) == len(rep["features"]["predicted"]) == len(set(ids(pair)) | set(ids(range(1, g.n_features, 7))) | set(ids([0, 2])))  # fmt: skip
    text = ag.table(rep)
    assert "pair" in text and "mode frozen: correlation over supernodes" in text


# -- interp graph --auto-supernodes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli(tiny_llama, tiny_llama_dir, tmp_path_factory):
    from graph_helpers import random_transcoders

    from interp.features import save

    root = tmp_path_factory.mktemp("graph_autogroup")
    save(random_transcoders(tiny_llama), root / "tc")
    return ["graph", "--model", str(tiny_llama_dir), "--prompt", "The cat sat on the mat and", "--transcoders",
            str(root / "tc")]  # fmt: skip


def test_cli_writes_the_grouping_and_its_faithfulness(cli, tmp_path, capsys):
    import json

    from interp.cli import main

    out = tmp_path / "out"
    assert main([*cli, "--out", str(out), "--auto-supernodes", "0.3"]) == 0
    printed = capsys.readouterr().out
    graph = json.loads((out / "graph.json").read_text())
    groups = json.loads((out / "supernodes.json").read_text())
    faith = json.loads((out / "supernodes-faithfulness.json").read_text())
    assert groups and graph["supernodes"] == groups == faith["supernodes"]
    assert faith["threshold"] == 0.3 and faith["coactivation"] == "prompt positions"
    kept = {n["id"] for n in graph["nodes"] if n["kind"] == "feature"}
    assert set(faith["features"]) == kept and {m for ms in groups.values() for m in ms} <= kept
    rep = faith["faithfulness"]
    assert [r["name"] for r in rep["supernodes"]] == list(groups)
    assert set(rep["modes"]) == {"linear", "frozen"} and rep["modes"]["linear"]["max_gap_supernodes_joint"] < 1e-3
    assert "switching off each supernode" in printed and "mode frozen: correlation over supernodes" in printed
    assert all(name in printed for name in groups)
    texts = tmp_path / "texts.txt"
    texts.write_text("a dog ran home\n\nthe mat was red\n")
    out2 = tmp_path / "out2"
    assert (
        main([*cli, "--out", str(out2), "--auto-supernodes", "--auto-texts", str(texts), "--auto-layer-band", "0"]) == 0
    )
    faith2 = json.loads((out2 / "supernodes-faithfulness.json").read_text())
    assert faith2["threshold"] == 0.5 and faith2["coactivation"] == "texts" and faith2["n_texts"] == 2
    assert all(len({m.split(".")[0] for m in ms}) == 1 for ms in faith2["supernodes"].values())  # one layer each


@pytest.mark.parametrize("extra, expect", [
    (["--auto-supernodes", "0"], "must be in (0, 1], got 0.0"),
    (["--auto-supernodes", "1.5"], "must be in (0, 1], got 1.5"),
    (["--auto-supernodes", "-0.2"], "must be in (0, 1], got -0.2"),
    (["--auto-supernodes", "--supernodes", "s.json"], "not both"),
    (["--auto-layer-band", "1"], "go with --auto-supernodes"),
    (["--auto-supernodes", "--auto-texts", "missing.txt"], "cannot read --auto-texts"),
])  # fmt: skip
def test_cli_bad_auto_input_is_one_line(cli, tmp_path, capsys, extra, expect):
    from cli_helpers import error_line

    from interp.cli import main

    (tmp_path / "s.json").write_text('{"x": ["F0.1@1"]}')
    extra = [str(tmp_path / x) if x.endswith((".json", ".txt")) else x for x in extra]
    out = tmp_path / "out"
    assert main([*cli, "--out", str(out), *extra]) == 2
    assert expect in error_line(capsys)
    assert not out.exists()
