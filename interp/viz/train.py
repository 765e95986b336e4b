"""Training figures: a run's curves (loss, in-context-learning score, repeated-bigram gap, head
scores) and the phase-change comparison of several runs (e.g. attn-only-1l vs attn-only-2l, each
possibly over several seeds)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

ICL_LABEL = "in-context-learning score<br>(loss late band - early band)"
GAP_LABEL = "repeated-bigram gap<br>(loss on [A][B]..[A]->[B] - rest)"
PANELS = [
    ("loss", "loss (train / held-out)"),
    ("icl_score", ICL_LABEL),
    ("repeat_bigram_gap", GAP_LABEL),
    ("induction_score", "best induction head score"),
    ("prev_token_score", "best previous-token head score"),
]
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    rows = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in rows], [v for _, v in rows]


def _se_band(records: list[dict], color: str, row: int, col: int, fig: go.Figure) -> None:
    """A shaded +-1 standard error band around the ICL score, where the log has one."""
    rows = [(r["step"], r["icl_score"], r["icl_score_se"]) for r in records if "icl_score_se" in r]
    if not rows:
        return
    steps = [s for s, _, _ in rows]
    upper = [v + e for _, v, e in rows]
    lower = [v - e for _, v, e in rows]
    fig.add_trace(go.Scatter(x=steps + steps[::-1], y=upper + lower[::-1], fill="toself", fillcolor=color,
                             opacity=0.15, line=dict(width=0), hoverinfo="skip", showlegend=False,
                             name="icl_score +-1 se"), row=row, col=col)


def training_curves(records: list[dict], title: str = "training run") -> go.Figure:
    """Stacked panels over steps from metrics.jsonl records (panels a log lacks stay empty)."""
    fig = make_subplots(rows=len(PANELS), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[label for _, label in PANELS])
    for row, (key, _) in enumerate(PANELS, start=1):
        if key == "loss":
            for k, name in (("loss", "train"), ("eval_loss", "held-out")):
                steps, values = _series(records, k)
                fig.add_trace(go.Scatter(x=steps, y=values, name=name, mode="lines"), row=row, col=1)
            continue
        if key == "icl_score":
            _se_band(records, PALETTE[0], row, 1, fig)
        steps, values = _series(records, key)
        fig.add_trace(go.Scatter(x=steps, y=values, name=key, mode="lines+markers", showlegend=False,
                                 line=dict(color=PALETTE[0])), row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(PANELS), col=1)
    fig.update_layout(title=title, height=200 * len(PANELS), template="plotly_white")
    return fig


def phase_change(runs: dict[str, list[dict] | list[list[dict]]], window: tuple[int, int] | None = None,
                 title: str = "In-context learning and induction heads form together") -> go.Figure:
    """ICL score, repeated-bigram gap and best induction score of several runs side by side.
    A value of `runs` is one run's records or a list of runs (seeds), drawn in one colour;
    `window` shades the steps where the phase change happens."""
    keys = [("icl_score", "in-context-learning score (lower = more ICL)"),
            ("repeat_bigram_gap", "repeated-bigram gap (lower = more copying)"),
            ("induction_score", "best induction head score")]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[label for _, label in keys])
    for i, (name, value) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        seeds = value if value and isinstance(value[0], list) else [value]
        for j, records in enumerate(seeds):
            for col, (key, _) in enumerate(keys, start=1):
                steps, values = _series(records, key)
                if not steps:
                    continue
                fig.add_trace(go.Scatter(x=steps, y=values, name=name, mode="lines", line=dict(color=color, width=1.5),
                                         opacity=1.0 if j == 0 else 0.6, showlegend=col == 1 and j == 0,
                                         legendgroup=name), row=1, col=col)
    if window is not None:
        for col in range(1, len(keys) + 1):
            fig.add_vrect(x0=window[0], x1=window[1], fillcolor="orange", opacity=0.2, line_width=0, row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=420, template="plotly_white")
    return fig
