"""Layout checks for issue 27: titles and labels that must not overlap at the default width, estimated
in pixels (text ~0.6 font size a character wide, 1.2 font size tall; plotly's default margins)."""

from __future__ import annotations

import re

import pytest
import torch

WIDTH = 900  # px: the width the figures are checked at


def _lines(text: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", line) for line in re.split(r"<br\s*/?>", text or "")]


def _margins(fig) -> dict:
    m = fig.layout.margin
    return {"l": 80 if m.l is None else m.l, "r": 80 if m.r is None else m.r}


def _paper_boxes(fig, annotations, width: int = WIDTH) -> list[tuple[float, float, str]]:
    """(left, right, text) in px of paper-anchored annotations (subplot titles)."""
    m = _margins(fig)
    plot = width - m["l"] - m["r"]
    out = []
    for a in annotations:
        size = a.font.size or 16
        w = 0.6 * size * max(len(line) for line in _lines(a.text))
        cx = m["l"] + a.x * plot
        left = {"left": cx, "right": cx - w}.get(a.xanchor, cx - w / 2)
        out.append((left, left + w, a.text))
    return out


# ---- 1. the phase-change figure (notebook 04): three subplot titles side by side


def test_phase_change_titles_do_not_overlap_at_900px():
    from interp.viz.train import phase_change

    records = [{"step": s, "icl_score": 1.0, "repeat_bigram_gap": 0.5, "induction_score": 0.1} for s in range(3)]
    fig = phase_change({"1l": records, "2l": records}, window=(0, 1))
    titles = [a for a in fig.layout.annotations if a.yref == "paper" and a.xref == "paper"]
    assert len(titles) == 3
    boxes = sorted(_paper_boxes(fig, titles))
    for (_, right, a), (left, _, b) in zip(boxes, boxes[1:]):
        assert right < left, f"{a!r} runs into {b!r}"
    assert boxes[0][0] >= 0 and boxes[-1][1] <= WIDTH  # none past the figure's edges
    assert fig.layout.legend.orientation == "h"  # the legend takes no width from the panels


# ---- 2. the memories trace: the right panel's tick labels clear the left panel


def _trace(labels_of: list[tuple[int, int, str, str]]):
    from interp.memories.trace import LayerTrace, Trace, TracedMemory

    top = [TracedMemory(layer, neuron, sign, 3.0, 1.5 - 0.1 * i, value_tokens=[(token, 0.4)])
           for i, (layer, neuron, sign, token) in enumerate(labels_of)]  # fmt: skip
    layers = [LayerTrace(la, 0.1 * la, []) for la in range(32)]
    return Trace("p", ["<s>", "p"], "sorption", 9, 0.4, 12.0, 2.0, layers, top, [])


@pytest.mark.parametrize("token", ["sorption", " unto", "x", " internationalization"])
def test_trace_figure_labels_clear_the_left_panel(token):
    from interp.viz.memories import trace_figure

    fig = trace_figure(_trace([(29, 1512, "-", token), (3, 7, "+", " a"), (12, 100, "+", " b")]))
    labels = list(fig.data[1].y)
    assert any(f"L29 N1512- → {token!r}" == label for label in labels)
    m = _margins(fig)
    plot = WIDTH - m["l"] - m["r"]
    left_panel_end = m["l"] + fig.layout.xaxis.domain[1] * plot
    right_panel_start = m["l"] + fig.layout.xaxis2.domain[0] * plot
    longest = 0.6 * 12 * max(map(len, labels)) + 6  # tick labels sit a few px left of the axis
    assert right_panel_start - longest > left_panel_end


# ---- 3. the edge graph: node labels of neighbouring layers, the selected node's label


def _edge_boxes(fig):
    from interp.viz.graph import label_box, plot_box

    xr, yr = fig.layout.xaxis.range, fig.layout.yaxis.range
    w, h = plot_box(fig.layout.height)
    scale = (w / (xr[1] - xr[0]), h / (yr[1] - yr[0]))
    boxes = []
    for t in fig.data:
        if t.mode != "markers+text":
            continue
        positions = t.textposition if isinstance(t.textposition, tuple) else [t.textposition] * len(t.x)
        for x, y, text, position in zip(t.x, t.y, t.text, positions):
            if text:
                boxes.append((label_box(x, y, text, position, scale), text, (x, y)))
    for a in fig.layout.annotations:  # the selected node's label, outside its ring
        if a.name == "selected label":
            text = _lines(a.text)[0]
            box = label_box(a.x, a.y, text, "top" if a.yshift > 0 else "bottom", scale, abs(a.yshift))
            boxes.append((box, text, (a.x, a.y)))
    return boxes, scale


@pytest.fixture(scope="module")
def big_circuit():
    """A SmolLM2-360M-shaped graph (32 layers, 15 heads, 5 KV heads) with neighbouring heads on one row
    and a run of MLPs kept."""
    from interp.circuits.types import Graph
    from interp.models.load import ModelInfo

    g = Graph.from_info(ModelInfo("m", "inhouse", "", 32, 15, 5, 960, 64, 2560, 100, 64, "rotary", "RMS", True, False))
    names = ["a23.h3->logits", "a24.h3->logits", "a19.h2->logits", "a20.h2->logits", "a22.h3->logits",
             "a23.h13->logits", "a24.h13->logits", "a25.h13->logits", "a26.h13->logits", "embed->a0.h1<q>"]
    names += [f"m{la}->logits" for la in range(10, 30)]
    names += [f"a{la}.h{h}->logits" for la in range(4, 30, 3) for h in (6, 7, 8)]
    scores = torch.zeros(g.n_edges)
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    for i, name in enumerate(names):
        j = g.index_of(g.parse_edge(name))
        scores[j], keep[j] = 1.0 - 0.01 * i, True
    return g, scores, keep


@pytest.mark.parametrize("selected", [None, "a23.h3", "m20"])
def test_edge_graph_labels_do_not_overlap(big_circuit, selected):
    from interp.viz.graph import overlaps

    fig = edge_graph_of(big_circuit, selected)
    boxes, _ = _edge_boxes(fig)
    texts = [t for _, t, _ in boxes]
    for name in ("a23.h3", "a24.h3", "a19.h2", "a20.h2", "m10", "m11", "m29"):
        assert name in texts  # labelled, not left to hover
    assert len(texts) == len(set(texts))  # the selected node's name once (outside the ring)
    for i, (a, ta, _) in enumerate(boxes):
        for b, tb, _ in boxes[i + 1:]:
            assert not overlaps(a, b), f"{ta} and {tb} overlap"


def edge_graph_of(circuit, selected):
    from interp.viz.graph import edge_graph

    return edge_graph(*circuit, "c", selected=selected)


def test_edge_graph_selected_label_sits_outside_its_ring(big_circuit):
    from interp.viz.graph import RING_SIZE

    fig = edge_graph_of(big_circuit, "a23.h3")
    ring = next(t for t in fig.data if t.name == "selected: a23.h3")
    label = next(a for a in fig.layout.annotations if a.name == "selected label")
    assert (label.x, label.y) == (ring.x[0], ring.y[0]) and "a23.h3" in label.text
    assert abs(label.yshift) > RING_SIZE / 2 + ring.marker.line.width / 2
    node_text = {n: t for tr in fig.data if tr.mode == "markers+text" for n, t in zip(tr.customdata, tr.text)}
    assert node_text["a23.h3"] == "" and node_text["a24.h3"] == "a24.h3"
