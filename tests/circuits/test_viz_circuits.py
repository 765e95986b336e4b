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


def test_circuit_graph_has_every_head_and_the_flow():
    classes = {
        "name mover": [(9, 9), (9, 6)],
        "s-inhibition": [(7, 3)],
        "induction": [(5, 5)],
        "previous token": [(2, 2)],
    }
    fig = circuit_graph(classes, n_layers=12)
    labels = {t for trace in fig.data if trace.text is not None for t in trace.text}
    assert {"9.9", "9.6", "7.3", "5.5", "2.2", "logits"} <= labels
    edges = fig.data[0]
    # previous token -> induction -> s-inhibition -> name movers (2) -> logits: 1 + 1 + 2 + 2 segments
    assert len([x for x in edges.x if x is None]) == 6


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
