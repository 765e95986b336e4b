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
