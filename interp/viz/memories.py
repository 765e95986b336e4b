"""Figures for FFN memories: agreement by layer, key shallowness, one memory's value tokens, the
memories behind a prediction.
Pure functions of an index's numbers, returning go.Figure."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def agreement_figure(rows: list[dict], title: str = "FFN memories by layer") -> go.Figure:
    """Left: key-value agreement (value's top token == next token of the top-1 trigger example)
    with its 95% Wilson interval, and its permutation baseline, per layer. Right: how often a
    memory's triggers share their last token / bigram (shallow keys; 95% intervals) vs random
    positions, and the fraction of active memories."""
    layers = [r["layer"] for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("key-value agreement", "shallow keys and activity"))

    def line(key: str, name: str, col: int, dash: str | None = None, color: str | None = None) -> None:
        error = None
        if rows and f"{key}_lo" in rows[0]:
            error = {"type": "data", "symmetric": False, "array": [r[f"{key}_hi"] - r[key] for r in rows],
                     "arrayminus": [r[key] - r[f"{key}_lo"] for r in rows], "thickness": 1}  # fmt: skip
        fig.add_trace(
            go.Scatter(x=layers, y=[r[key] for r in rows], name=name, mode="lines+markers",
                       line={"dash": dash, "color": color}, error_y=error),
            row=1, col=col,
        )  # fmt: skip

    line("agreement", "agreement (top-1 trigger)", 1, color="#1f77b4")
    line("agreement_baseline", "random baseline", 1, "dot", "#1f77b4")
    line("agreement_any", "agreement (any of top-k)", 1, color="#ff7f0e")
    line("agreement_any_baseline", "random baseline (any)", 1, "dot", "#ff7f0e")
    line("same_last", "triggers share last token", 2, color="#2ca02c")
    line("same_last_baseline", "random positions", 2, "dot", "#2ca02c")
    line("same_bigram", "triggers share last bigram", 2, color="#9467bd")
    line("active_fraction", "fraction of memories active", 2, "dash", "#7f7f7f")
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="fraction", rangemode="tozero")
    fig.update_layout(title=title, height=420, legend={"orientation": "h", "y": -0.2})
    return fig


NOMINAL_WIDTH = 900  # px: the width a figure's spacing is computed for (plotly's default margins, 80 px a side)
TICK_FONT = 12  # px: plotly's default tick label size


def label_spacing(labels: list[str], width: int = NOMINAL_WIDTH, font: int = TICK_FONT) -> float:
    """The `horizontal_spacing` (a fraction of the plot area) that leaves room, between two panels,
    for the right panel's y tick labels: ~0.6 font size a character, plus the tick gap and a little air."""
    longest = max((len(label) for label in labels), default=0)
    return min(0.5, max(0.1, (0.6 * font * longest + 24) / (width - 160)))


def trace_figure(t, n: int = 10) -> go.Figure:
    """A `Trace`: left, each layer's MLP direct effect on the predicted token's logit; right, the
    `n` memories (all layers) that raise it most, each labelled with its value's top token."""
    top = t.top[:n][::-1]
    labels = [f"{m.name} → {m.value_tokens[0][0]!r}" if m.value_tokens else m.name for m in top]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=label_spacing(labels),
                        subplot_titles=("MLP direct effect by layer", "top memories"))  # fmt: skip
    fig.add_trace(go.Bar(x=[f"L{la.layer}" for la in t.layers], y=[la.mlp_effect for la in t.layers],
                         name="MLP", marker_color="#1f77b4"), row=1, col=1)  # fmt: skip
    fig.add_trace(go.Bar(x=[m.contribution for m in top], y=labels, orientation="h", name="memory",
                         marker_color="#ff7f0e"), row=1, col=2)  # fmt: skip
    fig.update_yaxes(title_text=f"logit of {t.token!r}", row=1, col=1)
    fig.update_xaxes(title_text=f"contribution to the logit of {t.token!r}", row=1, col=2)
    fig.update_layout(title=f"memories behind the prediction {t.token!r} (p = {t.prob:.3f})", showlegend=False,
                      height=max(380, 26 * len(top) + 140))  # fmt: skip
    return fig


def value_tokens_figure(view, n: int = 15) -> go.Figure:
    """Bar chart of a memory's value's top tokens (a `MemoryView`)."""
    tokens = view.value_tokens[:n][::-1]
    fig = go.Figure(go.Bar(x=[p for _, p in tokens], y=[repr(t) for t, _ in tokens], orientation="h"))
    fig.update_layout(
        title=f"value of {view.name} through the unembedding",
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
