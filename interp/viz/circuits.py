"""Figures for circuits: path/activation-patching heatmaps and the IOI circuit as a graph."""

from __future__ import annotations

import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

# the order information flows through the IOI circuit, and which class feeds which
FLOW: list[str] = [
    "previous token", "duplicate token", "induction", "s-inhibition",
    "name mover", "s suppression", "backup name mover", "negative name mover", "other direct",
]  # fmt: skip
EDGES: list[tuple[str, str]] = [
    ("previous token", "induction"), ("induction", "s-inhibition"), ("duplicate token", "s-inhibition"),
    ("s-inhibition", "name mover"), ("s-inhibition", "s suppression"), ("s-inhibition", "backup name mover"),
    ("s-inhibition", "negative name mover"), ("name mover", "logits"), ("s suppression", "logits"),
    ("backup name mover", "logits"), ("negative name mover", "logits"), ("other direct", "logits"),
]  # fmt: skip
COLORS = {
    "previous token": "#8c564b", "duplicate token": "#9467bd", "induction": "#2ca02c", "s-inhibition": "#ff7f0e",
    "name mover": "#1f77b4", "backup name mover": "#17becf", "negative name mover": "#d62728", "logits": "#333333",
    "s suppression": "#e377c2", "other direct": "#bcbd22",
}  # fmt: skip


def patching_heatmap(effect: Float[Tensor, "layer head"], title: str, label: str = "normalized effect") -> go.Figure:
    """Layer x head heatmap of a patching effect (blue = lowers the logit diff)."""
    z = effect.detach().float().cpu().numpy()
    fig = go.Figure(
        go.Heatmap(
            z=z,
            colorscale="RdBu",
            zmid=0.0,
            colorbar=dict(title=label),
            hovertemplate="layer %{y}, head %{x}<br>%{z:.3f}<extra></extra>",
        )  # fmt: skip
    )
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", yaxis_autorange="reversed")
    return fig


def circuit_graph(classes: dict[str, list[tuple[int, int]]], n_layers: int, title: str = "IOI circuit") -> go.Figure:
    """Heads as nodes (x = layer, one row per class), edges between classes that feed each other."""
    rows = {c: i for i, c in enumerate(FLOW)}
    nodes: dict[str, list[tuple[float, float, str]]] = {}
    for c, heads in classes.items():
        y = rows.get(c, len(FLOW))
        for k, (layer, head) in enumerate(sorted(heads)):
            nodes.setdefault(c, []).append((layer + 0.12 * (k % 3), y + 0.15 * (k // 3), f"{layer}.{head}"))
    nodes["logits"] = [(n_layers, (len(FLOW) - 1) / 2, "logits")]
    fig = go.Figure()
    ex, ey = [], []
    for a, b in EDGES:
        for xa, ya, _ in nodes.get(a, []):
            for xb, yb, _ in nodes.get(b, []):
                ex += [xa, xb, None]
                ey += [ya, yb, None]
    fig.add_trace(
        go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#bbbbbb", width=1), hoverinfo="skip", showlegend=False)
    )
    for c, pts in nodes.items():
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                text=[p[2] for p in pts],
                mode="markers+text",
                textposition="top center",
                name=c,
                marker=dict(size=14, color=COLORS.get(c, "#7f7f7f")),
                hovertemplate=f"{c} %{{text}}<extra></extra>",
            )  # fmt: skip
        )
    fig.update_layout(
        title=title, xaxis=dict(title="layer", range=[-1, n_layers + 1]),
        yaxis=dict(tickvals=list(rows.values()), ticktext=list(rows), autorange="reversed"),
    )  # fmt: skip
    return fig
