"""Figures for the logit lens beyond its heatmap (interp.viz.attention.logit_lens_figure): chosen
tokens followed across the layers (interp.lens.TokenTrace)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = ["#1f77b4", "#d62728", "#2ca02c"]


def token_trace_figure(trace, title: str | None = None) -> go.Figure:
    """Per layer (x): the followed tokens' logits, or their logit difference (top panel); their
    probabilities (middle); their ranks, 0 = the top token, on a log axis of rank + 1 (bottom)."""
    x = trace.layer_names
    names = [repr(t) for t in trace.tokens]
    diff = trace.logit_diff
    top = "logit difference" if diff is not None else "logit"
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[top, "probability", "rank (0 = top token)"])  # fmt: skip
    if diff is not None:
        fig.add_trace(go.Scatter(x=x, y=diff.tolist(), mode="lines+markers", name=f"logit {names[0]} − logit {names[1]}",
                                 line={"color": "#333333"},
                                 hovertemplate="after %{x}: %{y:+.3f}<extra>logit difference</extra>"), row=1, col=1)  # fmt: skip
        fig.add_hline(y=0.0, line={"color": "#999999", "width": 1, "dash": "dot"}, row=1, col=1)
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        if diff is None:
            fig.add_trace(go.Scatter(x=x, y=trace.logits[:, i].tolist(), mode="lines+markers", name=f"logit {name}",
                                     line={"color": color}, hovertemplate="after %{x}: %{y:.3f}<extra>" + name + "</extra>"),
                          row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=trace.probs[:, i].tolist(), mode="lines+markers", name=f"p({name})",
                                 line={"color": color, "dash": "dash"},
                                 hovertemplate="after %{x}: p = %{y:.4f}<extra>" + name + "</extra>"), row=2, col=1)  # fmt: skip
        ranks = trace.ranks[:, i].tolist()
        fig.add_trace(go.Scatter(x=x, y=[r + 1 for r in ranks], customdata=ranks, mode="lines+markers",
                                 name=f"rank of {name}", line={"color": color, "dash": "dot"},
                                 hovertemplate="after %{x}: rank %{customdata}<extra>" + name + "</extra>"), row=3, col=1)  # fmt: skip
    fig.update_yaxes(type="log", title_text="rank + 1", row=3, col=1)
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="after layer", row=3, col=1)
    what = " − ".join(names) if diff is not None else names[0]
    fig.update_layout(title=title or f"{what} across the layers at position {trace.position} "
                      f"(input {trace.input_token!r})", height=650, legend={"orientation": "h", "y": -0.12})  # fmt: skip
    return fig
