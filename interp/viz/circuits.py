"""Figures for circuits: path/activation-patching heatmaps, the IOI circuit as a graph, and for
edge circuits of any task: the faithfulness curve, the circuit's edges, estimates vs exact patching."""

from __future__ import annotations

import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from interp.viz.graph import edge_graph  # noqa: F401  (the edge circuit's graph, here beside its other figures)

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
    """Layer x head heatmap of a patching effect (blue = lowers the logit diff), layer 0 at the bottom
    as in the Heads view (interp.viz.heads)."""
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
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
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


# -- edge circuits -----------------------------------------------------------------------------------

CURVE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis from `lo` to `hi`: every 1, 2 and 5 of each decade, each
    labelled in full (plotly's own labels on a log axis read "0.1, 2, 5, 1, 2, 5, 10", which hides
    whether a tick is 0.2 or 20)."""
    import math

    values = [m * 10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5)]
    values = [round(v, 10) for v in values if lo / 1.0001 <= v <= hi * 1.0001]
    return values, [f"{v:g}" for v in values]


def faithfulness_figure(curves: dict, title: str = "Faithfulness", highlight: float | None = None,
                        random=None) -> go.Figure:  # fmt: skip
    """f over circuit size (% of edges, log axis) for each named curve (interp.circuits.faithfulness.Curve),
    with its bootstrap band; `highlight` marks one size; `random` (a RandomBaseline) adds random
    circuits of the same sizes as a dashed grey line (the mean over draws) in the band of the draws."""
    fig = go.Figure()
    if random is not None:
        lo, hi = random.band()
        p = list(random.percents)
        fig.add_trace(go.Scatter(x=p + p[::-1], y=hi + lo[::-1], fill="toself", fillcolor="#7f7f7f", opacity=0.15,
                                 line=dict(width=0), hoverinfo="skip", showlegend=False))  # fmt: skip
        cpr, cmd = random.area("cpr"), random.area("cmd")
        fig.add_trace(go.Scatter(
            x=p, y=random.mean(), mode="lines+markers", line=dict(color="#7f7f7f", dash="dash"), marker=dict(size=5),
            name=f"random circuits, {random.draws} draws (CPR {cpr.value:.2f}, CMD {cmd.value:.2f})",
            customdata=[[a, b] for a, b in zip(lo, hi)],
            hovertemplate="%{x}% of edges<br>f = %{y:.3f} (draws %{customdata[0]:.3f} to %{customdata[1]:.3f})"
                          "<extra>random</extra>",
        ))  # fmt: skip
    for i, (name, c) in enumerate(curves.items()):
        color = CURVE_COLORS[i % len(CURVE_COLORS)]
        fig.add_trace(go.Scatter(x=list(c.percents) + list(c.percents)[::-1], y=list(c.hi) + list(c.lo)[::-1],
                                 fill="toself", fillcolor=color, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=list(c.percents), y=list(c.faithfulness), mode="lines+markers", name=f"{name} (CPR {c.cpr:.2f}, CMD {c.cmd:.2f})",
            line=dict(color=color), customdata=list(c.n_edges),
            hovertemplate="%{x}% of edges (%{customdata} after pruning)<br>f = %{y:.3f}<extra>" + name + "</extra>",
        ))  # fmt: skip
    for y in (0.0, 1.0):
        fig.add_hline(y=y, line=dict(color="#999999", width=1, dash="dot"))
    if highlight is not None:
        fig.add_vline(x=highlight, line=dict(color="#333333", width=1, dash="dash"))
    sizes = [float(x) for c in curves.values() for x in c.percents if float(x) > 0]
    ticks, labels = log_ticks(min(sizes), max(sizes)) if sizes else ([], [])
    fig.update_layout(title=title, xaxis=dict(title="circuit size (% of edges)", type="log", tickvals=ticks,
                                              ticktext=labels),
                      yaxis=dict(title="faithfulness f = (m(C) - m(∅)) / (m(M) - m(∅))"), legend=dict(x=0.01, y=0.99))  # fmt: skip
    return fig


def faithfulness_by_heads(curve: list[dict], title: str = "Faithfulness against heads kept",
                          goal: float | None = 0.8) -> go.Figure:  # fmt: skip
    """F(first k heads) / F(M) against k, heads added in discovery's order (interp.circuits.evaluate's
    `Evaluation.curve`), with the 95% band; each marker is colored by the class of the head it adds."""
    k = [p["k"] for p in curve]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=k + k[::-1], y=[p["hi"] for p in curve] + [p["lo"] for p in curve][::-1], fill="toself",
                             fillcolor="#1f77b4", opacity=0.15, line=dict(width=0), hoverinfo="skip", showlegend=False))  # fmt: skip
    fig.add_trace(go.Scatter(
        x=k, y=[p["value"] for p in curve], mode="lines+markers", name="faithfulness", line=dict(color="#1f77b4"),
        marker=dict(size=9, color=[COLORS.get(p["class"], "#333333") for p in curve]),
        customdata=[[f"{p['head'][0]}.{p['head'][1]}", p["class"], p["lo"], p["hi"]] for p in curve],
        hovertemplate="%{x} heads (adds %{customdata[0]}, %{customdata[1]})<br>F(C)/F(M) = %{y:.3f} "
                      "[%{customdata[2]:.3f}, %{customdata[3]:.3f}]<extra></extra>",
    ))  # fmt: skip
    for y in (0.0, 1.0):
        fig.add_hline(y=y, line=dict(color="#999999", width=1, dash="dot"))
    if goal is not None:
        fig.add_hline(y=goal, line=dict(color="#2ca02c", width=1, dash="dash"))
    fig.update_layout(title=title, xaxis=dict(title="heads kept (in the order discovery admitted them)"),
                      yaxis=dict(title="F(C) / F(M), held out"))  # fmt: skip
    return fig


GROUP_STYLE = {  # the exact check's groups (interp.circuits.exact_check): name, color, marker
    "top": ("top by |estimate|", "#1f77b4", "circle"),
    "random": ("drawn at random", "#ff7f0e", "diamond"),
    "bottom": ("drawn from the bottom half", "#2ca02c", "square"),
}


def exact_check_figure(estimates, exact, names, title: str = "Estimate vs exact patching", groups=None) -> go.Figure:
    """Each edge's estimated effect against its exact patched effect; the diagonal is agreement.
    `groups` (one per edge: 'top', 'random', 'bottom') marks where each checked edge came from."""
    lo = min(min(estimates), min(exact), 0.0)
    hi = max(max(estimates), max(exact), 0.0)
    groups = list(groups) if groups is not None else [None] * len(names)
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999999", dash="dot"), name="estimate = exact"),
    ])  # fmt: skip
    for g in dict.fromkeys(groups):
        label, color, symbol = GROUP_STYLE.get(g, ("edges", "#1f77b4", "circle"))
        at = [i for i, x in enumerate(groups) if x == g]
        fig.add_trace(go.Scatter(
            x=[exact[i] for i in at], y=[estimates[i] for i in at], mode="markers", text=[names[i] for i in at],
            name=label, marker=dict(size=8, color=color, symbol=symbol),
            hovertemplate="%{text}<br>exact %{x:.4g}<br>estimate %{y:.4g}<extra>" + label + "</extra>",
        ))  # fmt: skip
    fig.update_layout(title=title, xaxis_title="exact effect of corrupting the edge", yaxis_title="estimated effect")
    return fig
