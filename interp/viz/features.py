"""Figures for dictionary features (pure functions returning go.Figure)."""

from __future__ import annotations

import math

import plotly.graph_objects as go


def density_figure(active_fractions: list[float], highlight: float | None = None, title: str = "feature density") -> go.Figure:
    """Histogram of log10(firing frequency) over a layer's features; never-firing ones counted apart;
    `highlight` marks one feature's frequency."""
    fired = [math.log10(f) for f in active_fractions if f > 0]
    dead = sum(1 for f in active_fractions if f <= 0)
    fig = go.Figure(go.Histogram(x=fired, nbinsx=40, name="features"))
    if highlight is not None and highlight > 0:
        fig.add_vline(x=math.log10(highlight), line_color="#e65100", annotation_text="this feature")
    fig.update_layout(title=f"{title} ({dead} never fired)", xaxis_title="log10 firing frequency",
                      yaxis_title="features", height=320)  # fmt: skip
    return fig


def feature_trace_figure(trace, n: int = 10) -> go.Figure:
    """Bar chart: the features with the largest direct effect on the predicted token's logit."""
    rows = (trace.top[:n] + trace.against[:n])[::-1]
    fig = go.Figure(go.Bar(x=[f.contribution for f in rows], y=[f.name for f in rows], orientation="h",
                           marker_color=["#2e7d32" if f.contribution > 0 else "#c62828" for f in rows],
                           hovertext=[" ".join(repr(t) for t, _ in f.value_tokens[:5]) for f in rows]))  # fmt: skip
    fig.update_layout(title=f"features behind {trace.token!r} (direct effect on its logit)",
                      xaxis_title="contribution (logit)", height=max(320, 24 * len(rows) + 120))  # fmt: skip
    return fig
