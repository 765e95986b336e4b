"""Figures for FFN memories: agreement by layer, key shallowness, one memory's value tokens.
Pure functions of an index's numbers, returning go.Figure."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def agreement_figure(rows: list[dict], title: str = "FFN memories by layer") -> go.Figure:
    """Left: key-value agreement (value's top token == next token of the top trigger example)
    and its random baseline per layer. Right: how often a neuron's triggers share their last
    token / bigram (shallow keys) vs random positions, and the fraction of active neurons."""
    layers = [r["layer"] for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("key-value agreement", "shallow keys and activity"))

    def line(key: str, name: str, col: int, dash: str | None = None, color: str | None = None) -> None:
        fig.add_trace(
            go.Scatter(x=layers, y=[r[key] for r in rows], name=name, mode="lines+markers",
                       line={"dash": dash, "color": color}),
            row=1, col=col,
        )  # fmt: skip

    line("agreement", "agreement (top-1 trigger)", 1, color="#1f77b4")
    line("agreement_baseline", "random baseline", 1, "dot", "#1f77b4")
    line("agreement_any", "agreement (any of top-k)", 1, color="#ff7f0e")
    line("agreement_any_baseline", "random baseline (any)", 1, "dot", "#ff7f0e")
    line("same_last", "triggers share last token", 2, color="#2ca02c")
    line("same_last_baseline", "random positions", 2, "dot", "#2ca02c")
    line("same_bigram", "triggers share last bigram", 2, color="#9467bd")
    line("active_fraction", "fraction of neurons active", 2, "dash", "#7f7f7f")
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="fraction", rangemode="tozero")
    fig.update_layout(title=title, height=420, legend={"orientation": "h", "y": -0.2})
    return fig


def value_tokens_figure(view, n: int = 15) -> go.Figure:
    """Bar chart of a memory's value's top tokens (a `MemoryView`)."""
    tokens = view.value_tokens[:n][::-1]
    fig = go.Figure(go.Bar(x=[p for _, p in tokens], y=[repr(t) for t, _ in tokens], orientation="h"))
    fig.update_layout(
        title=f"value of L{view.layer} N{view.neuron} through the unembedding",
        xaxis_title="probability", height=max(300, 22 * len(tokens) + 120),
    )  # fmt: skip
    return fig


def triggers_html(view, n: int = 10) -> str:
    """Trigger examples as HTML, the trigger token highlighted and the next token greyed."""
    lines = []
    for t in view.triggers[:n]:
        before = html.escape("".join(t.before))
        nxt = f"<span style='color:#999'>{html.escape(t.next)}</span>" if t.next else ""
        lines.append(
            f"<div><code>{t.coefficient:.2f}</code> …{before}"
            f"<b style='background:#ffd54f'>{html.escape(t.token)}</b>{nxt}</div>"
        )
    return "\n".join(lines)
