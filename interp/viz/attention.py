"""Attention, logit-lens and prediction figures: one head's pattern with token hover, all heads of a layer as
small multiples, and the logit lens as a layer x position grid of predicted tokens.

Axes are numeric positions labelled with the tokens (repeated tokens would otherwise collapse
into one categorical tick); hover shows the destination token, the source token and the weight.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

ATTN_SCALE = "Blues"
LENS_SCALE = "Viridis"


def token_labels(str_tokens: list[str]) -> list[str]:
    """Tokens made visible: whitespace shown as symbols, empty tokens named."""
    out = []
    for tok in str_tokens:
        shown = tok.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥")
        out.append(shown if shown else "∅")
    return out


def _hover_grid(str_tokens: list[str], n_dest: int, n_src: int) -> np.ndarray:
    """customdata[dest, src] = (dest label, src label) for the hover text."""
    labels = token_labels(str_tokens)
    grid = np.empty((n_dest, n_src, 2), dtype=object)
    for d in range(n_dest):
        for s in range(n_src):
            grid[d, s, 0] = f"{d}: {labels[d]}"
            grid[d, s, 1] = f"{s}: {labels[s]}"
    return grid


def _as_array(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=float)


def _heatmap(pattern: np.ndarray, custom: np.ndarray, showscale: bool = True) -> go.Heatmap:
    return go.Heatmap(
        z=pattern,
        customdata=custom,
        colorscale=ATTN_SCALE,
        zmin=0.0,
        zmax=1.0,
        showscale=showscale,
        hovertemplate="destination %{customdata[0]}<br>source %{customdata[1]}<br>weight %{z:.3f}<extra></extra>",
    )


def attention_figure(
    pattern: Float[Tensor, "dest src"], str_tokens: list[str], title: str = "", height: int | None = None
) -> go.Figure:
    """One head's attention pattern: rows are destination (query) tokens, columns source (key)
    tokens (labelled along the top)."""
    z = _as_array(pattern)
    n_dest, n_src = z.shape
    labels = token_labels(str_tokens)
    fig = go.Figure(_heatmap(z, _hover_grid(str_tokens, n_dest, n_src)))
    side = height or min(900, max(340, 24 * n_dest + 190))
    fig.update_layout(
        title=dict(text=title, y=0.99, yanchor="top"),
        height=side,
        margin=dict(l=10, r=10, t=110 if title else 80, b=10),  # room for the source tokens on top
        xaxis=dict(tickvals=list(range(n_src)), ticktext=labels[:n_src], side="top"),
        yaxis=dict(title="destination token", tickvals=list(range(n_dest)), ticktext=labels[:n_dest], autorange="reversed"),
    )
    return fig


def head_grid_figure(
    patterns: Float[Tensor, "head dest src"], str_tokens: list[str], layer: int, cols: int = 6
) -> go.Figure:
    """Small multiples: every head of one layer, same colour scale, hover with tokens."""
    z = _as_array(patterns)
    n_heads, n_dest, n_src = z.shape
    cols = max(1, min(cols, n_heads))
    rows = math.ceil(n_heads / cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=[f"L{layer}H{h}" for h in range(n_heads)],
        horizontal_spacing=0.02, vertical_spacing=min(0.12, 0.3 / rows) if rows > 1 else 0.0,
    )
    custom = _hover_grid(str_tokens, n_dest, n_src)
    for h in range(n_heads):
        trace = _heatmap(z[h], custom, showscale=h == 0)
        trace.hovertemplate = f"L{layer}H{h}<br>" + trace.hovertemplate
        fig.add_trace(trace, row=h // cols + 1, col=h % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(height=200 * rows + 60, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def logit_lens_figure(lens, title: str = "Logit lens: top next token after each layer") -> go.Figure:
    """Layers (rows, the embedding at the bottom, the last block on top) x positions (columns):
    each cell shows the top-1 next token there, coloured by its probability; hover adds the input
    token and the rank, at that layer, of the model's final prediction."""
    probs = _as_array(lens.top_probs[..., 0])  # [layer, pos]
    n_layers, n_pos = probs.shape
    top = [[token_labels([lens.top_tokens[layer][pos][0]])[0] for pos in range(n_pos)] for layer in range(n_layers)]
    inputs = token_labels(lens.str_tokens)
    ranks = _as_array(lens.final_rank).astype(int)
    custom = np.empty((n_layers, n_pos, 3), dtype=object)
    for layer in range(n_layers):
        for pos in range(n_pos):
            custom[layer, pos] = (lens.layer_names[layer], f"{pos}: {inputs[pos]}", int(ranks[layer, pos]))
    fig = go.Figure(
        go.Heatmap(
            z=probs,
            text=top,
            texttemplate="%{text}",
            textfont=dict(size=10),
            customdata=custom,
            colorscale=LENS_SCALE,
            zmin=0.0,
            zmax=1.0,
            colorbar=dict(title="p(top)"),
            hovertemplate=(
                "after %{customdata[0]}<br>input %{customdata[1]}<br>top next token %{text} (p=%{z:.3f})"
                "<br>rank of final prediction: %{customdata[2]}<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        title=title,
        height=min(1400, 22 * n_layers + 160),
        margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(title="input token", tickvals=list(range(n_pos)), ticktext=inputs, side="top"),
        yaxis=dict(title="layer", tickvals=list(range(n_layers)), ticktext=lens.layer_names),
    )
    return fig


def predictions_figure(tokens: list[str], probs: list[float], title: str = "Next-token predictions") -> go.Figure:
    """Horizontal bars: the top next tokens and their probabilities, most likely on top."""
    labels = token_labels(tokens)
    fig = go.Figure(
        go.Bar(
            x=probs, y=[f"{i + 1}. {t}" for i, t in enumerate(labels)], orientation="h",
            text=[f"{p:.3f}" for p in probs], textposition="auto",
            hovertemplate="%{y}<br>p=%{x:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, height=26 * len(tokens) + 90, margin=dict(l=10, r=10, t=40, b=10),
        yaxis=dict(autorange="reversed"), xaxis=dict(title="probability", range=[0, max(probs + [1e-6]) * 1.1]),
    )
    return fig


def attention_rows_figure(
    weights: Float[Tensor, "row src"], str_tokens: list[str], row_labels: list[str], title: str = ""
) -> go.Figure:
    """Several heads' attention from one destination (e.g. the last token) over the source tokens:
    one row per head, hover with the head, the source token and the weight."""
    z = _as_array(weights)
    labels = token_labels(str_tokens)
    custom = np.empty(z.shape + (2,), dtype=object)
    for r in range(z.shape[0]):
        for s in range(z.shape[1]):
            custom[r, s] = (row_labels[r], f"{s}: {labels[s]}")
    fig = go.Figure(
        go.Heatmap(
            z=z, customdata=custom, colorscale=ATTN_SCALE, zmin=0.0, zmax=1.0,
            hovertemplate="%{customdata[0]}<br>source %{customdata[1]}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, height=min(900, 22 * z.shape[0] + 160), margin=dict(l=10, r=10, t=70 if title else 10, b=10),
        xaxis=dict(tickvals=list(range(z.shape[1])), ticktext=labels[: z.shape[1]], side="top"),
        yaxis=dict(tickvals=list(range(z.shape[0])), ticktext=row_labels, autorange="reversed"),
    )
    return fig
