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


# which path-patching step admitted each class (interp.circuits.discover: Discovery.effects' names), and
# which classes were that step's receivers: an edge sender -> receiver is weighted by the sender's effect
# in the step that admitted it, when the receiver's class was among that step's receivers
ADMITTED_BY: dict[str, str] = {
    "name mover": "logits", "s suppression": "logits", "negative name mover": "logits", "other direct": "logits",
    "backup name mover": "backup compensation", "s-inhibition": "mover queries",
    "induction": "s-inhibition keys/values", "duplicate token": "s-inhibition keys/values",
    "previous token": "induction keys",
}  # fmt: skip
STEP_RECEIVERS: dict[str, tuple[str, ...]] = {
    "logits": ("logits",), "backup compensation": ("logits",), "mover queries": ("name mover", "s suppression"),
    "s-inhibition keys/values": ("s-inhibition",), "induction keys": ("induction",),
}  # fmt: skip
STEP_WORDS = {
    "logits": "path patching to the logits", "mover queries": "path patching to the movers' queries at END",
    "s-inhibition keys/values": "path patching to the S-inhibition heads' keys and values at S2",
    "induction keys": "path patching to the induction heads' keys at S1+1",
    "backup compensation": "rise of its direct effect with the name movers knocked out",
}  # fmt: skip
LANE = 0.35  # vertical offset between heads of one class row that would otherwise collide
MAX_WIDTH = 8.0  # px, the strongest edge


def _effect(effects: dict | None, step: str | None, head: tuple[int, int]) -> float | None:
    """A head's effect in one step's layer x head grid (a tensor or nested lists), None where unmeasured."""
    import math

    if not effects or step not in effects:
        return None
    layer, h = head
    try:
        v = effects[step][layer][h]
        v = None if v is None else float(v)
    except (IndexError, TypeError, ValueError):
        return None
    return None if v is None or math.isnan(v) else v


NOMINAL_WIDTH = 900  # px: the width label sizes are estimated at (plotly's default margins, 80 px a side)
LABEL_FONT, MARKER_SIZE = 11, 12  # px: a head's label and marker
LANE_PX = 1.2 * LABEL_FONT + 4  # px: the least height of a lane, so stacked labels part


def _x_range(n_layers: int) -> list[float]:
    return [-1.0, n_layers + 3.0]  # room right of the logits node for its label


def _legend_px(names) -> float:
    """The vertical legend's width (a marker, then the class name at 12 px)."""
    return 0.6 * 12 * max((len(n) for n in names), default=0) + 50


def _label_px(text: str) -> float:
    """A label's width, ~0.6 font size a character."""
    return 0.6 * LABEL_FONT * len(text)


def _px_per_layer(classes, n_layers: int, width: float = NOMINAL_WIDTH) -> float:
    lo, hi = _x_range(n_layers)
    return (width - 160 - _legend_px([*classes, "logits"])) / (hi - lo)


def class_layout(classes: dict[str, list[tuple[int, int]]], n_layers: int) -> dict[str, list[tuple[float, float, tuple[int, int]]]]:
    """Where each head is drawn: x = its layer, one band per class (FLOW order, then any other class); in
    a band, heads closer than a label's width (heads of one layer, or of neighbouring layers) take lanes
    one below the other, so no label (drawn right of its marker) overlaps another, nor the next head's
    marker. Widths are estimated at NOMINAL_WIDTH."""
    per_layer = _px_per_layer(classes, n_layers)
    order = [c for c in FLOW if c in classes] + [c for c in classes if c not in FLOW]
    out, y = {}, 0.0
    for c in order:
        lanes: list[tuple[float, float]] = []  # the last head's x and the px its label reaches past it, per lane
        placed = []
        for head in sorted(set(map(tuple, classes[c]))):
            x = float(head[0])
            need = MARKER_SIZE + 6 + _label_px(f"{head[0]}.{head[1]}")  # marker, gap, label, gap, next marker
            lane = next((i for i, (last, reach) in enumerate(lanes) if (x - last) * per_layer >= reach), len(lanes))
            if lane == len(lanes):
                lanes.append((x, need))
            else:
                lanes[lane] = (x, need)
            placed.append((x, y + LANE * lane, head))
        out[c] = placed
        y += max(1.0, LANE * len(lanes) + 0.6)
    return out


def circuit_graph(classes: dict[str, list[tuple[int, int]]], n_layers: int, title: str = "IOI circuit",
                  effects: dict | None = None, positions: dict[str, str] | None = None) -> go.Figure:  # fmt: skip
    """The IOI circuit by class: heads as nodes (x = layer, one band per class, heads that would collide
    stacked in lanes: `class_layout`), edges between classes that feed each other. `effects` (step name ->
    layer x head path-patching effect, Discovery.effects) weights each edge by the sender's effect in the
    step that admitted it when the receiver was among that step's receivers (width by |effect|, blue where
    patching the path lowers the logit diff, red where it raises it; dotted grey: not measured). Hover:
    the head, its class, the position it is kept at (`positions`, class -> position) and its effect."""
    placed = class_layout(classes, n_layers)
    nodes = {c: [(x, y, f"{h[0]}.{h[1]}", h) for x, y, h in pts] for c, pts in placed.items()}
    ys = [y for pts in placed.values() for _, y, _ in pts] or [0.0]
    nodes["logits"] = [(float(n_layers), (min(ys) + max(ys)) / 2, "logits", None)]
    y_range = [max(ys) + 0.5, min(ys) - 0.5]  # reversed: the flow's first class at the top
    # tall enough that a lane (LANE apart) parts its labels: LANE_PX at least
    height = max(380, 70 * len(placed) + 160, int(LANE_PX / LANE * (y_range[0] - y_range[1])) + 180)
    measured = {}
    for a, b in EDGES:
        step = ADMITTED_BY.get(a)
        for *_, h in nodes.get(a, []):
            if b in STEP_RECEIVERS.get(step, ()):
                measured[(a, h, b)] = _effect(effects, step, h)
    top = max((abs(v) for v in measured.values() if v is not None), default=0.0)
    fig = go.Figure()
    mid_x, mid_y, mid_text = [], [], []
    for a, b in EDGES:
        for xa, ya, la, ha in nodes.get(a, []):
            for xb, yb, lb, _ in nodes.get(b, []):
                e = measured.get((a, ha, b))
                if e is None:
                    line = dict(color="#bbbbbb", width=1, dash="dot")
                    words = "not measured by path patching" if effects else "no path-patching effects at hand"
                else:
                    line = dict(color="#1f77b4" if e < 0 else "#d62728", width=1 + (MAX_WIDTH - 1) * abs(e) / (top or 1))
                    words = f"{STEP_WORDS.get(ADMITTED_BY[a], ADMITTED_BY[a])}: effect {e:+.3f}"
                fig.add_trace(go.Scatter(x=[xa, xb], y=[ya, yb], mode="lines", line=line, hoverinfo="skip", opacity=0.55,
                                         showlegend=False, customdata=[e, e], name=f"{la} -> {lb}"))  # fmt: skip
                mid_x.append((xa + xb) / 2)
                mid_y.append((ya + yb) / 2)
                mid_text.append(f"{la} ({a}) -> {lb}<br>{words}")
    fig.add_trace(go.Scatter(x=mid_x, y=mid_y, mode="markers", marker=dict(size=10, color="rgba(0,0,0,0)"),
                             hovertext=mid_text, hoverinfo="text", showlegend=False, name="edges"))  # fmt: skip
    for c, pts in nodes.items():
        step = ADMITTED_BY.get(c)
        info = []
        for *_, h in pts:
            if h is None:
                info.append(["output", "-", "the logit difference IO - S"])
                continue
            e = _effect(effects, step, h)
            words = (f"{STEP_WORDS.get(step, step)}: {e:+.3f}" if e is not None else
                     "effect not at hand" if not effects else f"not measured in {step or 'any step'}")  # fmt: skip
            info.append([c, (positions or {}).get(c, "all positions" if positions else "not recorded"), words])
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], text=[p[2] for p in pts], customdata=info,
            mode="markers+text", textposition="middle right", textfont=dict(size=LABEL_FONT), name=c,
            marker=dict(size=MARKER_SIZE, color=COLORS.get(c, "#7f7f7f"), line=dict(color="white", width=1)),
            hovertemplate="<b>%{text}</b>: %{customdata[0]}<br>kept at %{customdata[1]}<br>%{customdata[2]}<extra></extra>",
        ))  # fmt: skip
    rows = list(placed)
    note = (f"edge width: |effect| of the sender (widest {top:.3f}, shares of the IOI gap); blue: patching the path "
            "lowers the logit diff" if top else "edges unweighted: no path-patching effects at hand")  # fmt: skip
    fig.update_layout(
        title=title, xaxis=dict(title="layer", range=_x_range(n_layers)),
        yaxis=dict(tickvals=[min(y for _, y, _ in placed[c]) for c in rows], ticktext=rows, range=y_range),
        annotations=[dict(text=note, xref="paper", yref="paper", x=0, y=-0.15, showarrow=False, font=dict(size=11),
                          xanchor="left")],
        height=height, margin=dict(l=80, r=80, t=100, b=80),
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


def area_words(c) -> str:
    """A curve's CPR and CMD for its legend entry, each named by the ranking it comes from unless it
    is the one quoted (interp.circuits.report, as MIB: CPR from the signed ranking's curve, CMD from
    the |score| ranking's), so the |score| curve's CPR is not read as CircuitReport.cpr."""
    ranking = getattr(c, "ranking", None)
    cpr = f"CPR {c.cpr:.2f}" if ranking == "signed" else f"CPR of the {RANKING_WORDS.get(ranking, ranking)} ranking {c.cpr:.2f}"
    cmd = f"CMD {c.cmd:.2f}" if ranking == "abs" else f"CMD of the {RANKING_WORDS.get(ranking, ranking)} ranking {c.cmd:.2f}"
    return f"{cpr}, {cmd}" if ranking == "signed" else f"{cmd}, {cpr}"


RANKING_WORDS = {"abs": "|score|", "signed": "signed"}
QUOTED = "CPR quoted: the signed ranking's; CMD: the |score| ranking's"


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
            x=list(c.percents), y=list(c.faithfulness), mode="lines+markers", name=f"{name} ({area_words(c)})",
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
                      yaxis=dict(title="faithfulness f = (m(C) - m(∅)) / (m(M) - m(∅))"),
                      legend=dict(x=0.01, y=0.99, title=dict(text=QUOTED if curves else None, font=dict(size=11))))  # fmt: skip
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
    for c in dict.fromkeys(p["class"] for p in curve):  # the markers' colours, one legend entry a class
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=c, hoverinfo="skip",
                                 marker=dict(size=9, color=COLORS.get(c, "#333333"))))  # fmt: skip
    for y in (0.0, 1.0):
        fig.add_hline(y=y, line=dict(color="#999999", width=1, dash="dot"))
    if goal is not None:
        fig.add_hline(y=goal, line=dict(color="#2ca02c", width=1, dash="dash"))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"goal {goal:g}", hoverinfo="skip",
                                 line=dict(color="#2ca02c", width=1, dash="dash")))  # fmt: skip
    # the legend below the plot, left-aligned: a horizontal legend wraps instead of running past the right edge
    fig.update_layout(title=title, xaxis=dict(title="heads kept (in the order discovery admitted them)"),
                      yaxis=dict(title="F(C) / F(M), held out"), showlegend=True,
                      legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top",
                                  title=dict(text="marker: the class of the head added")),
                      margin=dict(b=140))  # fmt: skip
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
