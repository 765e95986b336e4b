"""Training figures: a run's curves (loss, in-context-learning score, repeated-bigram gap, head
scores) with its phase-change window shaded, the phase-change comparison of several runs (e.g.
attn-only-1l vs attn-only-2l, each possibly over several seeds), and one pinned head across
checkpoints (its scores beside the best head's, its pattern on a probe at each checkpoint)."""

from __future__ import annotations

import numpy as np
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
WINDOW_FILL = "orange"  # the phase-change window's shading, in every figure


def shade_window(fig: go.Figure, window: tuple[int, int] | None, rows: int = 1, cols: int = 1) -> go.Figure:
    """Shade the steps of `window` (a phase change) in every panel of a rows x cols figure."""
    if window is None:
        return fig
    for row in range(1, rows + 1):
        for col in range(1, cols + 1):
            fig.add_vrect(x0=window[0], x1=window[1], fillcolor=WINDOW_FILL, opacity=0.2, line_width=0,
                          row=row if rows * cols > 1 else None, col=col if rows * cols > 1 else None)
    return fig


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
                             opacity=0.15, line={"width": 0}, hoverinfo="skip", showlegend=False,
                             name="icl_score +-1 se"), row=row, col=col)


def training_curves(records: list[dict], title: str = "training run", window: tuple[int, int] | None = None) -> go.Figure:
    """Stacked panels over steps from metrics.jsonl records (panels a log lacks stay empty), with
    `window` (the run's phase change, `interp.dynamics.induction_window`) shaded in each."""
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
                                 line={"color": PALETTE[0]}), row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(PANELS), col=1)
    fig.update_layout(title=title, height=200 * len(PANELS), template="plotly_white")
    return shade_window(fig, window, rows=len(PANELS))


def phase_change(runs: dict[str, list[dict] | list[list[dict]]], window: tuple[int, int] | None = None,
                 title: str = "In-context learning and induction heads form together") -> go.Figure:
    """ICL score, repeated-bigram gap and best induction score of several runs side by side.
    A value of `runs` is one run's records or a list of runs (seeds), drawn in one colour;
    `window` shades the steps where the phase change happens."""
    # titles wrapped short enough that three fit side by side at 900 px (tests/test_viz_layout.py)
    keys = [("icl_score", "in-context-learning score<br>(lower = more ICL)"),
            ("repeat_bigram_gap", "repeated-bigram gap<br>(lower = more copying)"),
            ("induction_score", "best induction<br>head score")]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[label for _, label in keys],
                        horizontal_spacing=0.08)
    for i, (name, value) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        seeds = value if value and isinstance(value[0], list) else [value]
        for j, records in enumerate(seeds):
            for col, (key, _) in enumerate(keys, start=1):
                steps, values = _series(records, key)
                if not steps:
                    continue
                fig.add_trace(go.Scatter(x=steps, y=values, name=name, mode="lines", line={"color": color, "width": 1.5},
                                         opacity=1.0 if j == 0 else 0.6, showlegend=col == 1 and j == 0,
                                         legendgroup=name), row=1, col=col)
    shade_window(fig, window, cols=len(keys))
    fig.update_xaxes(title_text="step")
    # the legend below the panels, so it takes no width from them
    fig.update_layout(title=title, height=460, template="plotly_white", margin={"t": 120},
                      legend={"orientation": "h", "y": -0.2, "x": 0})
    return fig


def pinned_head_figure(rows: list[dict], head: str, window: tuple[int, int] | None = None) -> go.Figure:
    """One head's induction and previous-token scores at each checkpoint (`interp.dynamics.pinned_rows`)
    beside the best induction head's score (dotted; hover names which head that is), `window` shaded."""
    steps = [r["step"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=[r["induction"] for r in rows], name=f"{head} induction", mode="lines+markers",
                             line={"color": PALETTE[0]}, customdata=[r["induction rank"] for r in rows],
                             hovertemplate="step %{x}<br>induction %{y:.3f}<br>rank %{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=steps, y=[r["previous-token"] for r in rows], name=f"{head} previous-token",
                             mode="lines+markers", line={"color": PALETTE[1]}))
    fig.add_trace(go.Scatter(x=steps, y=[r["best induction score"] for r in rows], name="best induction head",
                             mode="lines+markers", line={"color": "grey", "dash": "dot"},
                             customdata=[r["best induction head"] for r in rows],
                             hovertemplate="step %{x}<br>best: %{customdata} %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{head} at every checkpoint (probe: repeated random tokens)", height=380,
                      template="plotly_white", xaxis_title="step", yaxis_title="score (1 = a perfect head)",
                      yaxis_range=[0, 1.02], legend={"orientation": "h", "y": -0.25})
    return shade_window(fig, window)


def probe_grid(patterns: list[tuple[int, np.ndarray]], labels: list[str], head: str, cols: int = 4) -> go.Figure:
    """Small multiples: one head's pattern [dest, src] on the same probe at each (step, pattern),
    one colour scale; hover names the destination and source tokens (`labels`, readable)."""
    n = len(patterns)
    n_rows = -(-n // cols)  # `cols` kept with fewer panels: each stays about square
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[f"step {s}" for s, _ in patterns],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    size = len(labels)
    custom = np.empty((size, size, 2), dtype=object)
    for dest in range(size):
        for src in range(size):
            custom[dest, src] = (f"{dest}: {labels[dest]}", f"{src}: {labels[src]}")
    for i, (_, pattern) in enumerate(patterns):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Heatmap(z=np.asarray(pattern, dtype=float), customdata=custom, colorscale="Blues", zmin=0.0,
                                 zmax=1.0, showscale=i == 0,
                                 hovertemplate="destination %{customdata[0]}<br>source %{customdata[1]}<br>"
                                               "weight %{z:.3f}<extra></extra>"), row=row, col=col)  # fmt: skip
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=row, col=col)
        fig.update_xaxes(showticklabels=False, row=row, col=col)
    fig.update_layout(title=f"{head}'s pattern on the probe at each checkpoint (rows: destination, columns: source)",
                      height=110 + 230 * n_rows, template="plotly_white", margin={"t": 90, "b": 20})
    return fig
