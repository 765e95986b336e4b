"""The edge circuit's graph (interp.viz.graph): links per drawn node, pin/hide, a node's table, and the
figure's layout, legend and title, on a hand-made 2-layer, 4-head graph with 2 KV heads."""

from __future__ import annotations

import pytest
import torch

from interp.circuits.types import Graph
from interp.models.load import ModelInfo
from interp.viz.graph import Link, edge_graph, links, node_table, nodes_of, subgraph

EDGES = {  # circuit edge -> score
    "embed->a0.h1<q>": 0.5,
    "a0.h1->a1.kv1<k>": -0.25,  # KV head 1 feeds query heads 2 and 3
    "a0.h1->a1.h2<q>": 0.125,  # joins a0.h1 and a1.h2 again: drawn as one line of 0.125 - 0.25
    "a0.h1->m0": 0.375,
    "m0->a1.h2<q>": 0.0625,
    "a1.h2->logits": 1.0,
    "m1->logits": -0.5,
}


@pytest.fixture(scope="module")
def circuit():
    g = Graph.from_info(ModelInfo("m", "inhouse", "", 2, 4, 2, 32, 8, 64, 100, 64, "rotary", "RMS", True, False))
    scores = torch.zeros(g.n_edges)
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    for name, v in EDGES.items():
        i = g.index_of(g.parse_edge(name))
        scores[i], keep[i] = v, True
    scores[g.index_of(g.parse_edge("embed->logits"))] = 9.0  # not kept: never drawn
    return g, scores, keep


def _names(ls: list[Link]) -> list[tuple[str, str, float]]:
    from interp.viz.graph import node_name

    return [(node_name(x.src), node_name(x.dst), x.score) for x in ls]


def test_links_follow_kv_groups_and_group_by_layer(circuit):
    g, scores, keep = circuit
    by_head = links(g, scores, keep)
    assert _names(by_head)[0] == ("a1.h2", "logits", 1.0)  # strongest first
    kv = [x for x in by_head if x.edge == "a0.h1->a1.kv1<k>"]
    assert [(x.dst.head, x.input, x.score) for x in kv] == [(2, "k", -0.25), (3, "k", -0.25)]
    assert len(by_head) == len(EDGES) + 1  # the k input reaches two heads
    by_layer = links(g, scores, keep, group="layer")
    assert len(by_layer) == len(EDGES)  # one link per layer's heads
    assert ("a0", "a1", -0.25) in _names(by_layer) and ("m0", "a1", 0.0625) in _names(by_layer)
    assert nodes_of(by_head) == ["embed", "a0.h1", "m0", "a1.h2", "a1.h3", "m1", "logits"]
    assert nodes_of(by_layer) == ["embed", "a0", "m0", "a1", "m1", "logits"]
    with pytest.raises(ValueError, match="group"):
        links(g, scores, keep, group="kv")


def test_pin_hide_and_a_nodes_table(circuit):
    ls = links(*circuit)
    pinned = subgraph(ls, pin=["m0"])
    assert sorted(_names(pinned)) == [("a0.h1", "m0", 0.375), ("m0", "a1.h2", 0.0625)]
    hidden = subgraph(ls, hide=["a0.h1"])
    assert all("a0.h1" not in (a, b) for a, b, _ in _names(hidden)) and len(hidden) == 3
    assert subgraph(ls, pin=["m0"], hide=["a0.h1"]) == [x for x in pinned if x.src.kind == "mlp"]
    rows = node_table(ls, "a1.h2")
    assert [(r["direction"], r["from"], r["to"], r["input"], r["score"]) for r in rows] == [
        ("in", "a0.h1", "a1.h2", "k", -0.25), ("in", "a0.h1", "a1.h2", "q", 0.125),
        ("in", "m0", "a1.h2", "q", 0.0625), ("out", "a1.h2", "logits", "logits", 1.0),
    ]  # fmt: skip
    assert rows[0]["edge"] == "a0.h1->a1.kv1<k>" and node_table(ls, "a9.h9") == []


def test_figure_rows_legend_title_and_selection(circuit):
    g, scores, keep = circuit
    fig = edge_graph(g, scores, keep, "c", faithfulness=(0.83, 0.7, 0.9), selected="m0")
    nodes = {n: (x, y) for t in fig.data if t.mode == "markers+text" for n, x, y in zip(t.customdata, t.x, t.y)}
    assert set(nodes) == {"embed", "a0.h1", "m0", "a1.h2", "a1.h3", "m1", "logits"}
    assert nodes["a1.h3"] == (1.0, 3.0) and nodes["a0.h1"] == (0.0, 1.0)  # heads on their own rows
    assert nodes["m0"][1] == nodes["m1"][1] == 4.5 > 3  # the MLPs on a row of their own, above every head
    assert nodes["embed"][0] == -1 and nodes["logits"][0] == 2
    assert list(fig.layout.yaxis.ticktext) == ["head 0", "head 1", "head 2", "head 3", "MLP"]
    lines = [t for t in fig.data if t.mode == "lines"]
    assert sum(len([x for x in t.x if x is None]) for t in lines) == 7  # a0.h1 -> a1.h2: q and k summed to one line
    legend = {t.name: t.line for t in lines if t.showlegend is not False}  # one entry per sign and width
    assert any(n.startswith("+ |score|") for n in legend) and any(n.startswith("− |score|") for n in legend)
    widest = max(legend.values(), key=lambda line: line.width)
    assert widest.color == "#1f77b4"  # the strongest (a1.h2 -> logits, +1.0) is the widest, blue
    hover = next(t for t in fig.data if t.name == "edges").hovertext
    assert "a0.h1 → a1.h2: -0.125 (k -0.25, q +0.125)" in hover
    title = fig.layout.title.text
    assert title.startswith("c — f = 0.83 [0.70, 0.90]") and "7 edges" in title
    ring = next(t for t in fig.data if t.name == "selected: m0")
    assert (ring.x[0], ring.y[0]) == nodes["m0"]
    faded = {t.opacity for t in lines}
    assert 0.12 in faded and 0.95 in faded  # m0's two edges over the rest
    layered = edge_graph(g, scores, keep, "c", group="layer", pin=["a1"], max_edges=2)
    names = {n for t in layered.data if t.mode == "markers+text" for n in t.customdata}
    assert names <= {"a0", "m0", "a1", "logits"} and "2 of 3 node pairs drawn" in layered.layout.title.text
    assert list(layered.layout.yaxis.ticktext) == ["attention", "MLP"]
