"""Circuit figures: heatmaps keep the layer x head grid, the graph shows every head and its edges."""

from __future__ import annotations

import torch

from interp.viz.circuits import circuit_graph, patching_heatmap


def test_patching_heatmap_keeps_the_grid():
    effect = torch.arange(12, dtype=torch.float32).view(3, 4) - 6
    fig = patching_heatmap(effect, "path patching to logits")
    z = fig.data[0].z
    assert len(z) == 3 and len(z[0]) == 4 and z[2][3] == 5.0
    assert fig.data[0].zmid == 0.0
    assert fig.layout.yaxis.autorange != "reversed"  # layer 0 at the bottom, as in the Heads view


def _nodes(fig) -> dict:
    """The graph's heads: label -> (x, y, hover customdata)."""
    return {t: (x, y, c) for tr in fig.data if tr.mode == "markers+text"
            for t, x, y, c in zip(tr.text, tr.x, tr.y, tr.customdata)}  # fmt: skip


def _edge_lines(fig) -> dict:
    """The graph's edges: 'sender -> receiver' -> (line width, dash)."""
    return {tr.name: (tr.line.width, tr.line.dash) for tr in fig.data if tr.mode == "lines"}


def test_circuit_graph_has_every_head_and_the_flow():
    classes = {
        "name mover": [(9, 9), (9, 6)],
        "s-inhibition": [(7, 3)],
        "induction": [(5, 5)],
        "previous token": [(2, 2)],
    }
    fig = circuit_graph(classes, n_layers=12)
    assert {"9.9", "9.6", "7.3", "5.5", "2.2", "logits"} <= set(_nodes(fig))
    # previous token -> induction -> s-inhibition -> name movers (2) -> logits: 1 + 1 + 2 + 2 edges
    assert len(_edge_lines(fig)) == 6
    assert all(dash == "dot" for _, dash in _edge_lines(fig).values())  # no effects given: unweighted, and says so
    assert "unweighted" in fig.layout.annotations[0].text


def test_circuit_graph_labels_apart_widths_by_effect_and_hover():
    """Issue 27: heads of one layer (16.0, 16.1) and of neighbouring layers in one class no longer share a
    label position; an edge's width follows the sender's path-patching effect in the step that admitted it;
    hover names the class, the position the head is kept at and its effect."""
    import math

    classes = {"name mover": [(16, 0), (16, 1), (17, 4), (25, 2)], "s-inhibition": [(12, 3), (13, 1)],
               "induction": [(8, 2)], "backup name mover": [(20, 5)]}  # fmt: skip
    logits = torch.zeros(30, 9)
    logits[16, 0], logits[16, 1], logits[17, 4], logits[25, 2] = -0.4, -0.1, -0.2, float("nan")
    movers = torch.zeros(30, 9)
    movers[12, 3], movers[13, 1] = -0.3, -0.06
    effects = {"logits": logits, "mover queries": movers.tolist(), "backup compensation": torch.full((30, 9), 0.05),
               "s-inhibition keys/values": torch.full((30, 9), -0.2)}  # fmt: skip
    positions = {"name mover": "END", "s-inhibition": "END", "induction": "S2", "backup name mover": "END"}
    fig = circuit_graph(classes, 30, effects=effects, positions=positions)
    nodes = _nodes(fig)
    spots = [(x, y) for x, y, _ in nodes.values()]
    assert len(set(spots)) == len(spots)  # every label at its own place
    for a, b in (("16.0", "16.1"), ("16.1", "17.4"), ("12.3", "13.1")):  # near in x: stacked apart in y
        assert abs(nodes[a][1] - nodes[b][1]) >= 0.35 - 1e-9
    assert nodes["16.0"][0] == 16 and nodes["25.2"][0] == 25  # x stays the layer
    lines = _edge_lines(fig)
    w = {k: width for k, (width, dash) in lines.items() if dash != "dot"}
    assert w["16.0 -> logits"] > w["17.4 -> logits"] > w["16.1 -> logits"]  # |-0.4| > |-0.2| > |-0.1|
    assert math.isclose(w["16.0 -> logits"], 8.0)  # the strongest edge is the widest
    assert w["12.3 -> 16.0"] > w["13.1 -> 16.0"] and w["12.3 -> 16.0"] == w["12.3 -> 17.4"]  # by the sender's effect
    assert lines["25.2 -> logits"][1] == "dot"  # nan: not measured, drawn dotted
    assert lines["12.3 -> 20.5"][1] == "dot"  # backups were not receivers of the movers' step
    assert list(nodes["16.0"][2]) == ["name mover", "END", "path patching to the logits: -0.400"]
    assert list(nodes["8.2"][2][:2]) == ["induction", "S2"]
    assert "rise of its direct effect" in nodes["20.5"][2][2]
    hovers = next(t for t in fig.data if t.name == "edges").hovertext
    assert any(h.startswith("16.0 (name mover) -> logits") and "-0.400" in h for h in hovers)


def _curve(f):
    from interp.circuits.faithfulness import Curve

    p = [0.1, 1.0, 10.0, 100.0]
    return Curve(p, [1, 10, 100, 1000], [1, 8, 90, 1000], f, [x - 0.1 for x in f], [x + 0.1 for x in f], 0.5, 0.4,
                 (0.4, 0.6), (0.3, 0.5), 2.0, 0.1, f, "abs", True, "counterfactual", 8)  # fmt: skip


def test_faithfulness_figure_draws_each_curve_with_its_band():
    from interp.viz.circuits import faithfulness_figure

    fig = faithfulness_figure({"EAP-IG": _curve([0.1, 0.4, 0.9, 1.0]), "EAP": _curve([0.0, 0.2, 0.7, 1.0])}, "t", highlight=10)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name.split(" (")[0] for t in lines] == ["EAP-IG", "EAP"] and list(lines[1].y) == [0.0, 0.2, 0.7, 1.0]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2 and len(bands[0].x) == 8
    assert fig.layout.xaxis.type == "log"
    # every tick labelled in full: 0.2 and 20 read differently (plotly's log labels print both as "2")
    assert list(fig.layout.xaxis.ticktext) == [f"{v:g}" for v in fig.layout.xaxis.tickvals]


def test_log_ticks_are_one_two_five_per_decade():
    from interp.viz.circuits import log_ticks

    values, labels = log_ticks(0.1, 100)
    assert labels == ["0.1", "0.2", "0.5", "1", "2", "5", "10", "20", "50", "100"]
    assert values == sorted(values) and len(set(labels)) == len(labels)
    assert log_ticks(1, 5)[1] == ["1", "2", "5"] and log_ticks(0.5, 0.5)[1] == ["0.5"]


def test_edge_graph_and_exact_check():
    from interp.circuits.types import Graph
    from interp.models.load import ModelInfo
    from interp.viz.circuits import edge_graph, exact_check_figure

    g = Graph.from_info(ModelInfo("m", "inhouse", "", 2, 4, 2, 32, 8, 64, 100, 64, "rotary", "RMS", True, False))
    scores = torch.linspace(-1, 1, g.n_edges)
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    k = g.index_of(g.parse_edge("a0.h1->a1.kv1<k>"))  # feeds query heads 2 and 3 of layer 1
    keep[k] = keep[g.index_of(g.parse_edge("a1.h2->logits"))] = True
    fig = edge_graph(g, scores, keep, "c")
    segments = sum(len([x for x in t.x if x is None]) for t in fig.data if t.mode == "lines")
    assert segments == 3  # one line per query head the KV input feeds, one to the logits
    names = {n for t in fig.data if t.mode == "markers+text" for n in t.text}
    assert names == {"a0.h1", "a1.h2", "a1.h3", "logits"}
    fig = exact_check_figure([0.5, -0.2], [0.4, 0.1], ["a", "b"])
    assert list(fig.data[1].x) == [0.4, 0.1] and list(fig.data[1].y) == [0.5, -0.2]
