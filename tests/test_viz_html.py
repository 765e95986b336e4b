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
