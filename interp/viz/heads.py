"""Head-detector figures: a layer x head heatmap of pattern scores per kind, with the reported
heads marked (confirmed by the causal check, flagged as pattern-without-effect, or unvalidated)."""

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
) -> go.Figure:
    """One heatmap per kind: x = head (query head), y = layer (0 at the bottom); `measure` (the
    score's measure, interp.heads.scores) labels the colour bar and the hover text."""
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
                colorbar={"title": f"score ({measure})" if measure else "score"},
                hovertemplate=f"{kind}<br>layer %{{y}}, head %{{x}}<br>{label} %{{z:.3f}}<extra></extra>",
            ),
            row=1, col=col,
        )
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
                    hovertemplate=[_hover(f) for f in mine],
                ),
                row=1, col=col,
            )
            shown.add(verdict)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, row=1, col=col)
    fig.update_layout(title=title, height=max(350, 18 * next(iter(scores.values())).shape[0] + 150),
                      legend={"orientation": "h", "y": -0.15})
    return fig


def _hover(f) -> str:
    parts = [f"{f.kind} L{f.layer}H{f.head}", f"score {f.score:.3f}"]
    if f.copying is not None:
        parts.append(f"copying z {f.copying:.2f}")
    if f.ov_copying is not None:
        parts.append(f"OV eigenvalue copying {f.ov_copying:.2f}")
    if f.causal_effect is not None:
        parts.append(f"Δloss mean-abl {f.causal_effect:+.3f} [{f.causal_effect_lo:+.3f}, {f.causal_effect_hi:+.3f}], "
                     f"zero-abl {f.zero_effect:+.3f}")
    return "<br>".join(parts) + "<extra></extra>"
