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


# ---- 4. the faithfulness curve: which ranking each legend number comes from


def _curve(f, ranking: str, cpr: float, cmd: float):
    from interp.circuits.faithfulness import Curve

    p = [0.1, 1.0, 10.0, 100.0]
    return Curve(p, [1, 10, 100, 1000], [1, 8, 90, 1000], f, [x - 0.1 for x in f], [x + 0.1 for x in f], cpr, cmd,
                 (0.4, 0.6), (0.3, 0.5), 2.0, 0.1, f, ranking, True, "counterfactual", 8)  # fmt: skip


def test_faithfulness_legend_names_the_ranking_of_each_number():
    """CircuitReport.cpr is the signed ranking's CPR, .cmd the |score| ranking's (interp.circuits.report):
    the legend quotes them plainly and names the ranking of the other two numbers."""
    from interp.viz.circuits import faithfulness_figure

    curves = {"|score| ranking": _curve([0.1, 0.4, 0.9, 1.0], "abs", 0.71, 0.22),
              "signed ranking": _curve([0.2, 0.5, 0.9, 1.0], "signed", 0.93, 0.35)}  # fmt: skip
    fig = faithfulness_figure(curves, "t")
    names = {t.name.split(" (")[0]: t.name for t in fig.data if t.mode == "lines+markers"}
    signed, by_abs = names["signed ranking"], names["|score| ranking"]
    assert "CPR 0.93" in signed and "CMD of the signed ranking 0.35" in signed
    assert "CMD 0.22" in by_abs and "CPR of the |score| ranking 0.71" in by_abs
    assert "CPR 0.71" not in by_abs  # not to be read as the report's CPR
    assert "signed ranking's" in fig.layout.legend.title.text


# ---- 5. the IOI class graph: the 42-head SmolLM2-135M circuit (benchmarks/RESULTS.md, "The headline")

IOI_42 = {
    "name mover": "23.0 23.2 23.1", "s suppression": "23.3 20.0", "negative name mover": "24.4 23.7 23.4",
    "other direct": "29.1 29.0 24.5 24.7", "s-inhibition": "19.2 22.4 21.5 19.4 22.5 18.1 18.2",
    "induction": "17.4 17.2 17.5 11.8 9.1 20.1 13.7",
    "duplicate token": "8.1 2.4 5.6 8.0 16.1 15.6 14.3 11.6 15.7 16.5 15.8 1.8 9.3 17.0 12.8",
    "previous token": "16.0",
}  # fmt: skip


def _ioi_boxes(fig, width: int = WIDTH) -> list[tuple[tuple, str]]:
    """Label boxes (right of each marker, 'middle right') and marker boxes in px (y down)."""
    lay = fig.layout
    m = lay.margin
    names = [t.name for t in fig.data if t.mode == "markers+text"]
    legend = 0.6 * 12 * max(map(len, names)) + 40  # the vertical legend at the right
    plot_w = width - m.l - m.r - legend
    plot_h = lay.height - m.t - m.b
    sx = plot_w / (lay.xaxis.range[1] - lay.xaxis.range[0])
    sy = plot_h / abs(lay.yaxis.range[0] - lay.yaxis.range[1])
    out = []
    for t in fig.data:
        if t.mode != "markers+text":
            continue
        assert t.textposition == "middle right"
        size, ms = t.textfont.size, t.marker.size
        for x, y, text in zip(t.x, t.y, t.text):
            cx, cy = x * sx, y * sy
            w, h = 0.6 * size * len(text), 1.2 * size
            out.append(((cx + ms / 2 + 2, cy - h / 2, cx + ms / 2 + 2 + w, cy + h / 2), text))
            out.append(((cx - ms / 2, cy - ms / 2, cx + ms / 2, cy + ms / 2), f"marker {text}"))
    return out


def test_ioi_circuit_graph_labels_do_not_overlap():
    from interp.viz.circuits import circuit_graph
    from interp.viz.graph import overlaps

    classes = {c: [tuple(map(int, h.split("."))) for h in heads.split()] for c, heads in IOI_42.items()}
    assert sum(map(len, classes.values())) == 42
    fig = circuit_graph(classes, 30)
    boxes = _ioi_boxes(fig)
    labels = {t for _, t in boxes if not t.startswith("marker")}
    for close in ("18.1 18.2 19.4", "23.0 23.1 23.2", "15.6 15.7 15.8", "24.5 24.7", "29.0 29.1"):
        assert set(close.split()) <= labels
    for i, (a, ta) in enumerate(boxes):
        for b, tb in boxes[i + 1:]:
            if ta.startswith("marker") and tb.startswith("marker"):
                continue
            if ta == f"marker {tb}" or tb == f"marker {ta}":
                continue  # a head's own marker and label touch by design
            assert not overlaps(a, b), f"{ta} and {tb} overlap"
    # every label inside the plot (scatter text is clipped at the axes)
    lo, hi = fig.layout.xaxis.range
    sx = (WIDTH - 160 - (0.6 * 12 * max(len(t.name) for t in fig.data if t.mode == "markers+text") + 40)) / (hi - lo)
    assert max(b[2] for b, _ in boxes) <= hi * sx and min(b[0] for b, _ in boxes) >= lo * sx


def test_faithfulness_by_heads_legend_below_and_explains_the_colours():
    from interp.viz.circuits import faithfulness_by_heads

    curve = [{"k": k, "value": 0.1 * k, "lo": 0.0, "hi": 0.2 * k, "head": (k, 0), "class": c}
             for k, c in enumerate(["name mover", "s-inhibition", "name mover", "induction"], start=1)]  # fmt: skip
    fig = faithfulness_by_heads(curve, "t")
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.x == 0 and legend.xanchor == "left" and legend.y < 0
    assert fig.layout.margin.b >= 120  # room under the axis title for the legend
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert shown == ["faithfulness", "name mover", "s-inhibition", "induction", "goal 0.8"]
    assert "class of the head added" in legend.title.text


# ---- 6. the head score heatmaps: the axes end at the grid


def test_score_heatmaps_axes_span_the_grid():
    from interp.heads.find import HeadFinding
    from interp.viz.heads import score_heatmaps

    scores = {"induction": torch.rand(4, 6), "previous": torch.rand(4, 6)}
    fig = score_heatmaps(scores, [HeadFinding(3, 5, "induction", 9.0)], picked=(0, 0))
    for axis in ("xaxis", "xaxis2"):
        assert list(fig.layout[axis].range) == [-0.5, 5.5]
    for axis in ("yaxis", "yaxis2"):
        assert list(fig.layout[axis].range) == [-0.5, 3.5]
