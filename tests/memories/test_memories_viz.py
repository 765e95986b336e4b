"""Figure builders for FFN memories."""

from __future__ import annotations

from interp.memories.index import MemoryView, Trigger
from interp.viz.memories import agreement_figure, triggers_html, value_tokens_figure

ROW = {"agreement": 0.02, "agreement_baseline": 0.001, "agreement_any": 0.1, "agreement_any_baseline": 0.01,
           "same_last": 0.5, "same_last_baseline": 0.1, "same_bigram": 0.3, "active_fraction": 0.5}  # fmt: skip


def test_agreement_figure_has_a_line_per_measure():
    fig = agreement_figure([{"layer": 0, **ROW}, {"layer": 1, **ROW, "agreement": 0.05}])
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["agreement (top-1 trigger)"].y) == [0.02, 0.05]
    assert list(by_name["random baseline"].x) == [0, 1]
    assert len(fig.data) == 8


def test_memory_figures():
    view = MemoryView(
        3, 7, [Trigger(9.5, 0, 4, [" a", " <b>"], " LORD", " said")], [(" God", 0.5), (" Lord", 0.2)], 0.1
    )
    html = triggers_html(view)
    assert "&lt;b&gt;" in html and "<b style='background:#ffd54f'> LORD</b>" in html and " said" in html
    fig = value_tokens_figure(view)
    assert list(fig.data[0].x) == [0.2, 0.5] and "L3 N7" in fig.layout.title.text
