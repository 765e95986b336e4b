"""Figures written by the CLI render offline: plotly.js is a local file, never a CDN."""

from __future__ import annotations

import plotly.graph_objects as go

from interp.viz.html import write_figure


def test_write_figure_is_offline(tmp_path):
    out = write_figure(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), tmp_path / "sub" / "fig.html")
    html = out.read_text()
    assert "cdn.plot.ly" not in html and 'src="plotly.min.js"' in html
    bundle = tmp_path / "sub" / "plotly.min.js"
    assert bundle.stat().st_size > 1_000_000  # the whole library, once per folder
    write_figure(go.Figure(), tmp_path / "sub" / "second.html")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig.html", "plotly.min.js", "second.html"]


def test_head_marks_read_on_the_white_legend():
    """Each verdict's legend entry is drawn in a colour that shows on the white page (the confirmed
    ring is white on the heatmap, inside a black halo that carries its legend entry)."""
    import torch

    from interp.heads.find import HeadFinding
    from interp.viz.heads import score_heatmaps

    findings = [HeadFinding(1, 0, "induction", 0.9, confirmed=True), HeadFinding(0, 1, "induction", 0.8, flagged=True),
                HeadFinding(1, 1, "induction", 0.7, confirmed=False)]  # fmt: skip
    fig = score_heatmaps({"induction": torch.rand(2, 2)}, findings)
    legend = [t for t in fig.data if t.type == "scatter" and t.showlegend is not False]
    assert len(legend) == 3 and len({t.legendgroup for t in legend}) == 3
    for t in legend:
        assert t.marker.color not in ("white", "#ffffff", "#fff") and t.marker.line.color not in ("white", "#ffffff")
    confirmed = [t for t in fig.data if t.legendgroup == "confirmed"]
    assert [t.marker.color for t in confirmed] == ["black", "white"]  # the white ring on top of the halo
    assert list(confirmed[1].x) == [0] and list(confirmed[1].y) == [1] and confirmed[1].hovertemplate
