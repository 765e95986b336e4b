"""Head-detector figures: a layer x head heatmap of pattern scores per kind, with the reported
heads marked (confirmed by the causal check, flagged as pattern-without-effect, or unvalidated),
every cell clickable (an invisible marker per cell carries the hover and the click: plotly selects
points of scatter traces, not heatmap cells; `clicked_head` reads a click back) and the picked head
ringed; and one head's page figures (`ablation_figure`: per-token loss change on a prompt)."""

from __future__ import annotations

import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

SCORE_SCALE = "Viridis"
MARKS = {  # verdict -> (marker symbol, colour, legend name); each reads on the white legend and on Viridis
    "confirmed": ("circle-open", "white", "confirmed (pattern + causal effect)"),  # a white ring in a black halo
    "flagged": ("x", "red", "flagged: pattern but no effect"),
    "reported": ("square-open", "orange", "reported (not confirmed)"),
}


def _verdict(finding) -> str:
    if finding.flagged:
        return "flagged"
    return "confirmed" if finding.confirmed else "reported"


def score_heatmaps(
    scores: dict[str, Float[Tensor, "layer head"]],
    findings=(),
    title: str = "Head pattern scores",
    measure: str | None = None,
    picked: tuple[int, int] | None = None,
) -> go.Figure:
    """One heatmap per kind: x = head (query head), y = layer (0 at the bottom); `measure` (the
    score's measure, interp.heads.scores) labels the colour bar and the hover text. Every cell has
    a clickable point (customdata [layer, head]); `picked` (layer, head) is ringed in every kind."""
    kinds = list(scores)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, horizontal_spacing=0.06)
    zmin = min(float(s.min()) for s in scores.values())
    zmax = max(float(s.max()) for s in scores.values())
    shown: set[str] = set()
    label = f"score ({measure})" if measure else "score"
    for col, kind in enumerate(kinds, start=1):
        z = scores[kind].float().cpu().numpy()
        fig.add_trace(
            go.Heatmap(
                z=z, zmin=zmin, zmax=zmax, colorscale=SCORE_SCALE, showscale=col == len(kinds),
                colorbar={"title": f"score ({measure})" if measure else "score"}, hoverinfo="skip",
            ),
            row=1, col=col,
        )
        fig.add_trace(_cells(kind, z, label), row=1, col=col)
        if picked is not None:
            fig.add_trace(
                go.Scatter(x=[picked[1]], y=[picked[0]], mode="markers", name="picked head", hoverinfo="skip",
                           legendgroup="picked", showlegend=col == 1,
                           marker={"symbol": "square-open", "size": 18, "color": "magenta", "line": {"width": 3}}),
                row=1, col=col,
            )  # fmt: skip
        for verdict, (symbol, colour, name) in MARKS.items():
            mine = [f for f in findings if f.kind == kind and _verdict(f) == verdict]
            if not mine:
                continue
            x, y = [f.head for f in mine], [f.layer for f in mine]
            # a black ring under a white one: it carries the legend entry (a white ring is white on white there)
            if colour == "white":
                fig.add_trace(
                    go.Scatter(x=x, y=y, mode="markers", name=name, hoverinfo="skip", legendgroup=verdict,
                               showlegend=verdict not in shown,
                               marker={"symbol": symbol, "size": 15, "color": "black", "line": {"width": 4, "color": "black"}}),
                    row=1, col=col,
                )  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, mode="markers", name=name,
                    marker={"symbol": symbol, "size": 12, "color": colour, "line": {"width": 2, "color": colour}},
                    showlegend=verdict not in shown and colour != "white", legendgroup=verdict,
                    hovertemplate=[_hover(f) for f in mine], customdata=[[f.layer, f.head] for f in mine],
                    unselected={"marker": {"opacity": 1}},
                ),
                row=1, col=col,
            )
            shown.add(verdict)
        # the axes span the grid exactly: the click points and rings would otherwise pad them past it,
        # leaving a grey frame around the heatmap
        n_layers, n_heads = z.shape
        fig.update_xaxes(title_text="head", dtick=1, range=[-0.5, n_heads - 0.5], autorange=False, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, range=[-0.5, n_layers - 0.5], autorange=False,
                         row=1, col=col)  # fmt: skip
    fig.update_layout(title=title, height=max(350, 18 * next(iter(scores.values())).shape[0] + 150),
                      legend={"orientation": "h", "y": -0.15}, hovermode="closest", hoverdistance=-1,
                      clickmode="event+select")
    return fig


def _cells(kind: str, z, label: str) -> go.Scatter:
    """One invisible, clickable point per cell of a kind's heatmap, with the cell's hover text."""
    n_layers, n_heads = z.shape
    layers = [layer for layer in range(n_layers) for _ in range(n_heads)]
    heads = [head for _ in range(n_layers) for head in range(n_heads)]
    return go.Scatter(
        x=heads, y=layers, mode="markers", name=f"{kind} cells", showlegend=False,
        customdata=[[layer, head, float(z[layer, head])] for layer, head in zip(layers, heads)],
        marker={"symbol": "square", "size": 14, "color": "rgba(0,0,0,0)"},
        selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}},
        hovertemplate=f"{kind}<br>layer %{{y}}, head %{{x}}<br>{label} %{{customdata[2]:.3f}}<br>click to open<extra></extra>",
    )  # fmt: skip


def clicked_head(points, n_layers: int, n_heads: int) -> tuple[int, int] | None:
    """The (layer, head) of the first clicked point of a `score_heatmaps` figure (a cell or a
    marker: x = head, y = layer), or None when nothing in the model's range was clicked."""
    for point in points or ():
        try:
            layer, head = round(float(point["y"])), round(float(point["x"]))
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= layer < n_layers and 0 <= head < n_heads:
            return layer, head
    return None


def _hover(f) -> str:
    parts = [f"{f.kind} L{f.layer}H{f.head}", f"score {f.score:.3f}"]
    if f.copying is not None:
        parts.append(f"copying z {f.copying:.2f}")
    if f.ov_copying is not None:
        parts.append(f"OV eigenvalue copying {f.ov_copying:.2f}")
    if f.causal_effect is not None:
        parts.append(f"Δloss mean-abl {f.causal_effect:+.3f} [{f.causal_effect_lo:+.3f}, {f.causal_effect_hi:+.3f}], "
                     f"zero-abl {f.zero_effect:+.3f}")
    if f.verdict is not None:
        parts += [f"{f.verdict}:"] + [f"  {p}" for p in f.why.split("; ")]
    return "<br>".join(parts) + "<br>click to open<extra></extra>"


def ablation_figure(ablations: dict, str_tokens: list[str], title: str) -> go.Figure:
    """Per-token loss change when one head is ablated on a prompt: one bar series per mode
    (`ablations`: mode -> interp.heads.page.PromptAblation); bar p is the loss of predicting
    token p+1 (named on the axis, with its position) from the tokens up to p."""
    fig = go.Figure()
    labels = [f"{p + 1}: {t!r}" for p, t in enumerate(str_tokens[1:])]
    for mode, result in ablations.items():
        delta = result.delta_loss.tolist()
        fig.add_trace(go.Bar(
            x=labels, y=delta, name=f"{mode}-ablated",
            customdata=[[c, a] for c, a in zip(result.clean_loss.tolist(), result.ablated_loss.tolist())],
            hovertemplate=f"predicting %{{x}}<br>{mode}-ablated: Δloss %{{y:+.3f}} nats"
                          "<br>loss %{customdata[0]:.3f} → %{customdata[1]:.3f}<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(title=title, barmode="group", yaxis_title="Δ loss (nats), ablated − clean",
                      xaxis_title="predicted token (position)", height=380, legend={"orientation": "h", "y": 1.12})
    fig.add_hline(y=0, line_width=1, line_color="grey")
    return fig
