"""Figure builders for FFN memories."""

from __future__ import annotations

from interp.memories.index import MemoryView, Trigger
from interp.memories.trace import LayerTrace, Trace, TracedMemory
from interp.viz.memories import agreement_figure, trace_figure, triggers_html, value_tokens_figure

ROW = {"agreement": 0.02, "agreement_lo": 0.01, "agreement_hi": 0.04, "agreement_baseline": 0.001,
       "agreement_any": 0.1, "agreement_any_baseline": 0.01, "same_last": 0.5, "same_last_lo": 0.45,
       "same_last_hi": 0.55, "same_last_baseline": 0.1, "same_bigram": 0.3, "active_fraction": 0.5}  # fmt: skip


def test_agreement_figure_has_a_line_per_measure_with_intervals():
    fig = agreement_figure([{"layer": 0, **ROW}, {"layer": 1, **ROW, "agreement": 0.05, "agreement_hi": 0.07}])
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["agreement (top-1 trigger)"].y) == [0.02, 0.05]
    assert [round(v, 3) for v in by_name["agreement (top-1 trigger)"].error_y.array] == [0.02, 0.02]
    assert [round(v, 3) for v in by_name["agreement (top-1 trigger)"].error_y.arrayminus] == [0.01, 0.04]
    assert list(by_name["random baseline"].x) == [0, 1]
    assert by_name["random baseline"].error_y.array is None
    assert len(fig.data) == 8


def test_memory_figures():
    view = MemoryView(
        3, 7, [Trigger(9.5, 0, 4, [" a", " <b>"], " LORD", " said")], [(" God", 0.5), (" Lord", 0.2)], 0.1, sign="-"
    )
    html = triggers_html(view)
    assert "&lt;b&gt;" in html and "<b style='background:#ffd54f'> LORD</b>" in html and " said" in html
    fig = value_tokens_figure(view)
    assert list(fig.data[0].x) == [0.2, 0.5] and "L3 N7-" in fig.layout.title.text


def test_trace_figure():
    m = TracedMemory(2, 5, "+", 3.0, 1.5, value_tokens=[(" unto", 0.4)])
    t = Trace("p", ["<s>", "p"], " unto", 9, 0.4, 12.0, 2.0, [LayerTrace(0, -0.5, []), LayerTrace(1, 2.0, [m])], [m], [])
    fig = trace_figure(t)
    assert list(fig.data[0].y) == [-0.5, 2.0] and list(fig.data[0].x) == ["L0", "L1"]
    assert list(fig.data[1].y) == ["L2 N5+ → ' unto'"] and list(fig.data[1].x) == [1.5]
