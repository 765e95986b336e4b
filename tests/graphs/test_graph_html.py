"""graph.html: its embedded data is the graph's nodes and edges, placed by layer and position; token
text is escaped everywhere; a supernode's edges are the sums of its members' edges (a hand-made graph
and a real one); the page's script parses (node) and explores the graph in Chromium (browser)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from interp.errors import WorkbenchError
from interp.graphs import export, prune
from interp.graphs.view import graph_view
from interp.viz.attribution import attribution_figure
from interp.viz.graph_html import SCRIPT, graph_html, read_embedded, write_graph_html

EVIL = '</script><img src=x onerror="alert(1)">&amp;\n'


@pytest.fixture(scope="module")
def graph_data(tiny_llama):
    """graph.json's dict for a pruned graph of a tiny Llama, its second token's text made hostile."""
    from graph_helpers import random_transcoders

    from interp.graphs.attribute import attribute

    g = attribute(tiny_llama, random_transcoders(tiny_llama), "The cat sat on the mat and", batch_size=16)
    g.str_tokens = [g.str_tokens[0], EVIL, *g.str_tokens[2:]]
    p = prune.prune(g, 0.9, 0.95)
    return g, p, json.loads(json.dumps(export.graph_dict(g, p, prune.scores(g))))


def _edges_by_id(data: dict) -> dict[tuple[str, str], float]:
    ids = {n["index"]: n["id"] for n in data["nodes"]}
    return {(ids[e["source"]], ids[e["target"]]): e["weight"] for e in data["edges"]}


def test_embedded_data_is_the_graph(graph_data):
    g, p, data = graph_data
    page = graph_html(graph_view(data))
    got = read_embedded(page)
    assert [n["id"] for n in got["nodes"]] == [n["id"] for n in data["nodes"]]
    assert {(e["source"], e["target"]): e["weight"] for e in got["edges"]} == _edges_by_id(data)
    assert len(got["edges"]) == int(p.edges.sum()) and all(e["parts"] == 1 for e in got["edges"])
    by_id = {n["id"]: n for n in got["nodes"]}
    for n in data["nodes"]:  # every field of graph.json's node travels; placed by layer (y) and position (x)
        mine = by_id[n["id"]]
        assert mine["info"] == {k: v for k, v in n.items() if k != "index"}
        row = -1 if n["kind"] == "token" else g.n_layers if n["kind"] == "logit" else n["layer"]
        assert mine["y"] == row and (abs(mine["x"] - n["pos"]) < 0.5 or n["kind"] == "logit")
    logits = sorted(n["x"] for n in got["nodes"] if n["kind"] == "logit")
    assert -0.5 < logits[0] and logits[-1] < g.n_pos - 0.5 and len(set(logits)) == g.n_logits  # the top row, apart
    assert {n["kind"] for n in got["nodes"]} >= {"token", "logit", "feature"}
    assert got["scores"] == data["scores"] and got["thresholds"] == {"node": 0.9, "edge": 0.95}
    assert not re.search(r"<script[^>]*\bsrc=", page) and "Plotly.newPlot" in page  # plotly.js inlined, nothing fetched
    assert len(page) > 3_000_000  # the bundle itself


def test_token_text_is_escaped(graph_data):
    _, _, data = graph_data
    data = {**data, "prompt": EVIL}
    page = graph_html(graph_view(data), title=EVIL)
    assert "<img" not in page and "</script><img" not in page
    assert read_embedded(page)["str_tokens"][1] == EVIL  # intact once parsed
    token = next(n for n in read_embedded(page)["nodes"] if n["id"] == "tok@1")
    assert token["info"]["text"] == EVIL and token["label"] == EVIL.replace("\n", "⏎")
    fig = attribution_figure(graph_view(data))
    tokens = next(t for t in fig.data if t.name == "token embeddings")
    assert "&lt;/script&gt;&lt;img" in tokens.text[list(tokens.customdata).index("tok@1")]  # plotly's own tags escaped
    assert "&lt;img" in fig.layout.xaxis.ticktext[1]


def test_error_nodes_drawn_apart(graph_data):
    _, _, data = graph_data
    fig = attribution_figure(graph_view(data))
    traces = {t.name: t for t in fig.data if t.meta == "nodes"}
    errors = [n["id"] for n in data["nodes"] if n["kind"] == "error"]
    assert errors, "the pruned graph keeps some error node"
    err = next(t for name, t in traces.items() if name.startswith("error nodes"))
    assert sorted(err.customdata) == sorted(errors) and err.marker.symbol != traces["features"].marker.symbol
    assert list(fig.layout.yaxis.ticktext)[0] == "embeddings" and list(fig.layout.yaxis.ticktext)[-1] == "logits"


HAND = {  # a hand-made graph.json: 2 tokens, 3 features, an error node, a logit
    "prompt": "a b", "str_tokens": ["a", "b"], "tokens": [1, 2], "n_layers": 2,
    "nodes": [
        {"index": 0, "id": "F0.1@0", "kind": "feature", "layer": 0, "pos": 0, "feature": 1, "activation": 1.0},
        {"index": 1, "id": "F0.2@1", "kind": "feature", "layer": 0, "pos": 1, "feature": 2, "activation": 2.0},
        {"index": 2, "id": "F1.3@1", "kind": "feature", "layer": 1, "pos": 1, "feature": 3, "activation": 0.5},
        {"index": 3, "id": "err0@1", "kind": "error", "layer": 0, "pos": 1},
        {"index": 4, "id": "tok@0", "kind": "token", "layer": "E", "pos": 0, "token": 1, "text": "a"},
        {"index": 5, "id": "tok@1", "kind": "token", "layer": "E", "pos": 1, "token": 2, "text": "b"},
        {"index": 6, "id": "logit0", "kind": "logit", "layer": 2, "pos": 1, "token": 7, "text": "c", "prob": 0.5},
    ],
    "edges": [  # (source, target, weight)
        {"source": 4, "target": 0, "weight": 0.5}, {"source": 5, "target": 1, "weight": -0.25},
        {"source": 4, "target": 1, "weight": 0.125}, {"source": 0, "target": 2, "weight": 1.5},
        {"source": 1, "target": 2, "weight": -0.75}, {"source": 3, "target": 2, "weight": 0.0625},
        {"source": 0, "target": 6, "weight": 2.0}, {"source": 1, "target": 6, "weight": 0.5},
        {"source": 2, "target": 6, "weight": -1.0}, {"source": 0, "target": 1, "weight": 0.375},
    ],
    "scores": {"replacement": 0.7, "completeness": 0.8}, "thresholds": {"node": 0.8, "edge": 0.98},
}  # fmt: skip


def test_supernode_edges_are_sums_of_members_edges():
    view = graph_view(HAND, {"S": ["F0.1@0", "F0.2@1"]})
    edges = {(e.source, e.target): (e.weight, e.parts) for e in view.edges}
    # by hand: tok@0 feeds both members (0.5 + 0.125), tok@1 one (-0.25); S -> F1.3@1 = 1.5 - 0.75;
    # S -> logit0 = 2.0 + 0.5; F0.1@0 -> F0.2@1 (0.375) lies inside S
    assert edges == {("tok@0", "S"): (0.625, 2), ("tok@1", "S"): (-0.25, 1), ("S", "F1.3@1"): (0.75, 2),
                     ("S", "logit0"): (2.5, 2), ("err0@1", "F1.3@1"): (0.0625, 1),
                     ("F1.3@1", "logit0"): (-1.0, 1)}  # fmt: skip
    s = view.node("S")
    assert s.kind == "supernode" and s.info["members"] == ["F0.1@0", "F0.2@1"] and s.info["internal"] == 0.375
    # the members' mean place: F0.2@1 shares (layer 0, position 1) with err0@1, the error node right of it
    assert view.node("err0@1").x == pytest.approx(1.2) and (s.x, s.y) == (pytest.approx((0 + 0.8) / 2), 0.0)
    assert {n.id for n in view.nodes} == {"S", "F1.3@1", "err0@1", "tok@0", "tok@1", "logit0"}
    page = read_embedded(graph_html(view))
    assert {(e["source"], e["target"]): e["weight"] for e in page["edges"]}[("S", "logit0")] == 2.5
    assert page["supernodes"] == {"S": ["F0.1@0", "F0.2@1"]}
    fig = attribution_figure(view)
    diamond = next(t for t in fig.data if t.meta == "nodes" and t.name.startswith("supernodes"))
    assert list(diamond.customdata) == ["S"] and "sums of" in diamond.name
    hover = next(t for t in fig.data if t.name == "edges").hovertext
    assert "S → logit0: +2.5 (sum of 2 edges)" in hover


@pytest.mark.parametrize("groups, expect", [
    ({"S": ["F9.9@0"]}, "no node of this graph"),
    ({"S": ["tok@0"]}, "only features and error nodes"),
    ({"S": ["F0.1@0"], "T": ["F0.1@0", "F1.3@1"]}, "in two supernodes"),
    ({"S": []}, "one or more node ids"),
    ({"logit0": ["F0.1@0"]}, "is a node's id"),
    (["F0.1@0"], "JSON object"),
])  # fmt: skip
def test_bad_supernodes_are_one_line(groups, expect):
    with pytest.raises(WorkbenchError, match=expect) as e:
        graph_view(HAND, groups)
    assert "\n" not in str(e.value)


def test_supernodes_on_a_real_graph(graph_data, tmp_path):
    g, p, data = graph_data
    features = [n for n in data["nodes"] if n["kind"] == "feature"]
    members = [features[0]["id"], features[-1]["id"]]
    with_groups = json.loads(json.dumps(export.graph_dict(g, p, prune.scores(g), supernodes={"pair": members})))
    assert with_groups["supernodes"] == {"pair": members}
    view = graph_view(with_groups)  # read from graph.json's record
    index = {n["id"]: n["index"] for n in data["nodes"]}
    m = [index[x] for x in members]
    for e in view.edges:  # every edge out of the pair: the sum of the kept edges out of its members
        if e.source == "pair":
            t = index[e.target]
            assert e.weight == pytest.approx(sum(float(g.adjacency[t, s]) for s in m if p.edges[t, s]), abs=1e-6)
    assert any(e.source == "pair" for e in view.edges)
    path = write_graph_html(view, tmp_path / "graph.html")
    assert read_embedded(path.read_text())["supernodes"] == {"pair": members}
    tracer = export.tracer_dict(g, p, "t", supernodes={"pair": members})
    assert tracer["qParams"]["supernodes"][0][0] == "pair"


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to parse the script")
def test_the_script_parses(tmp_path):
    path = tmp_path / "explorer.js"
    path.write_text(SCRIPT)
    done = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
