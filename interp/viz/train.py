"""Training figures: a run's curves (loss, in-context-learning score, head scores) and the
phase-change comparison of several runs (e.g. attn-only-1l vs attn-only-2l)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PANELS = [
    ("loss", "loss (train / held-out)"),
    ("icl_score", "in-context-learning score<br>(loss late - loss early)"),
    ("induction_score", "best induction head score"),
    ("prev_token_score", "best previous-token head score"),
]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    rows = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in rows], [v for _, v in rows]


def training_curves(records: list[dict], title: str = "training run") -> go.Figure:
    """Four stacked panels over steps from metrics.jsonl records."""
    fig = make_subplots(rows=len(PANELS), cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=[label for _, label in PANELS])
    for row, (key, _) in enumerate(PANELS, start=1):
        if key == "loss":
            for k, name in (("loss", "train"), ("eval_loss", "held-out")):
                steps, values = _series(records, k)
                fig.add_trace(go.Scatter(x=steps, y=values, name=name, mode="lines"), row=row, col=1)
        else:
            steps, values = _series(records, key)
            fig.add_trace(go.Scatter(x=steps, y=values, name=key, mode="lines+markers", showlegend=False), row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(PANELS), col=1)
    fig.update_layout(title=title, height=220 * len(PANELS), template="plotly_white")
    return fig


def phase_change(runs: dict[str, list[dict]], window: tuple[int, int] | None = None,
                 title: str = "In-context learning and induction heads form together") -> go.Figure:
    """ICL score and induction score of several runs side by side; `window` shades the steps
    where the phase change happens."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["in-context-learning score (lower = more ICL)",
                                                        "best induction head score"])
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for i, (name, records) in enumerate(runs.items()):
        color = palette[i % len(palette)]
        for col, key in ((1, "icl_score"), (2, "induction_score")):
            steps, values = _series(records, key)
            fig.add_trace(go.Scatter(x=steps, y=values, name=name, mode="lines+markers", line=dict(color=color),
                                     showlegend=col == 1, legendgroup=name), row=1, col=col)
    if window is not None:
        for col in (1, 2):
            fig.add_vrect(x0=window[0], x1=window[1], fillcolor="orange", opacity=0.2, line_width=0, row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=420, template="plotly_white")
    return fig
