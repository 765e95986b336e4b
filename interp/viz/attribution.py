"""An attribution graph (interp.graphs.view) drawn to explore: y = layer (token embeddings at the bottom,
the logits at the top), x = token position; a feature a green dot, an error node (what a transcoder
misses) a grey cross, a supernode a purple diamond whose edges are the sums of its members' edges. Lines
and legend, pinning, hiding and the selected node's ring are interp.viz.graph's, as for edge circuits:
width = |weight| against the strongest edge of the whole graph (so pinning or hiding never rescales
them), colour = sign.

`links` turns the view's edges into interp.viz.graph Links (named by node id), so its `subgraph` and
`node_table` serve attribution graphs too; `visible` adds the nodes shown.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from interp.graphs.view import GraphView, ViewNode
from interp.viz.graph import LABEL_NODES, Link, draw_lines, draw_nodes, draw_ring, subgraph

KINDS = {  # kind -> (legend name, marker), drawn in this order (supernodes over features)
    "token": ("token embeddings", dict(size=11, color="#333333", symbol="square")),
    "error": ("error nodes (what the transcoder misses)", dict(size=9, color="#9e9e9e", symbol="x")),
    "feature": ("features", dict(size=10, color="#2ca02c", symbol="circle")),
    "supernode": ("supernodes (edges: sums of members' edges)", dict(size=17, color="#9467bd", symbol="diamond")),
    "logit": ("logits", dict(size=12, color="#ff7f0e", symbol="triangle-up")),
}
for _, marker in KINDS.values():
    marker["line"] = dict(width=1, color="white")


def plotly_text(text: str) -> str:
    """Text as plotly shows it: its own tags (<b>, <br>...) escaped, new lines as <br>."""
    return html.escape(text, quote=False).replace("\n", "<br>")


def how(parts: int) -> str:
    return "direct" if parts == 1 else f"sum of {parts} edges"


def links(view: GraphView) -> list[Link]:
    """The view's edges as Links (source id -> target id), strongest |weight| first; `input` says
    whether an edge is one graph edge or a supernode's sum of several."""
    return [Link(e.source, e.target, f"{e.source}->{e.target}", how(e.parts), e.weight) for e in view.edges]


def visible(view: GraphView, pin=(), hide=()) -> tuple[list[ViewNode], list[Link]]:
    """The nodes and links shown: hidden nodes and their edges left out; with nodes pinned, only the
    edges touching a pinned node and the nodes they join (the pinned ones always)."""
    ls = subgraph(links(view), pin, hide)
    if pin:
        shown = (set(pin) - set(hide)) | {x for link in ls for x in (link.src, link.dst)}
        return [n for n in view.nodes if n.id in shown], ls
    return [n for n in view.nodes if n.id not in set(hide)], ls


def strongest(view: GraphView) -> float:
    return max((abs(e.weight) for e in view.edges), default=1.0) or 1.0


def summary(view: GraphView) -> str:
    """Scores and thresholds in one line."""
    parts = []
    if view.scores:
        parts.append(f"replacement score {view.scores['replacement']:.3f}, completeness {view.scores['completeness']:.3f}")
    if view.thresholds:
        parts.append(f"pruned at node threshold {view.thresholds['node']:g}, edge threshold {view.thresholds['edge']:g}")
    return "; ".join(parts)


def attribution_figure(view: GraphView, title: str = "Attribution graph", max_edges: int | None = None, *, pin=(),
                       hide=(), selected: str | None = None) -> go.Figure:  # fmt: skip
    """The graph as a figure (see the module docstring): `max_edges` caps the lines drawn (the strongest);
    `selected` (a node id) is ringed and its edges drawn over the rest. Node markers carry their id as
    customdata (a click on one selects it)."""
    nodes, ls = visible(view, pin, hide)
    n_links = len(ls)
    ls = ls[:max_edges] if max_edges is not None else ls
    where = {n.id: (n.x, n.y) for n in view.nodes}
    lines = []
    for x in ls:
        (x0, y0), (x1, y1) = where[x.src], where[x.dst]
        hover = f"{x.src} → {x.dst}: {x.score:+.4g}" + ("" if x.input == "direct" else f" ({x.input})")
        lines.append((x.src, x.dst, x.score, [x0, (x0 + x1) / 2, x1], [y0, (y0 + y1) / 2, y1], plotly_text(hover)))
    fig = go.Figure()
    draw_lines(fig, lines, strongest(view), (0.0, -1.0), selected, measure="weight")
    label = len(nodes) <= LABEL_NODES
    for kind, (name, marker) in KINDS.items():
        mine = [n for n in nodes if n.kind == kind]
        if mine:
            draw_nodes(fig, name, [(n.x, n.y) for n in mine], [n.id for n in mine],
                       [plotly_text(n.label) if label else "" for n in mine], marker,
                       [plotly_text(n.hover) for n in mine])  # fmt: skip
    if selected is not None and any(n.id == selected for n in nodes):
        draw_ring(fig, *where[selected], selected)
    drawn = f"{len(ls)} of {n_links} edges drawn" if len(ls) < n_links else f"{n_links} edges"
    sub = f"{len(nodes)} nodes, {drawn}"
    sub += "".join(f"; {k}: {', '.join(v)}" for k, v in (("pinned", pin), ("hidden", hide)) if v)
    sub = plotly_text(sub) + (f"<br>{plotly_text(summary(view))}" if summary(view) else "")
    ticks = [f"{i} {view.str_tokens[i]!r}" if i < len(view.str_tokens) else str(i) for i in range(view.n_pos)]
    fig.update_layout(
        title=dict(text=f"{plotly_text(title)}<br><sup>{sub}; line width = "
                        "|weight|, colour = sign (blue +, red −)</sup>"),
        xaxis=dict(title="token position", tickvals=list(range(view.n_pos)), ticktext=[plotly_text(t) for t in ticks],
                   zeroline=False, showgrid=False, range=[-0.6, view.n_pos - 0.4]),
        yaxis=dict(title="layer", tickvals=list(range(-1, view.n_layers + 1)),
                   ticktext=["embeddings", *map(str, range(view.n_layers)), "logits"], zeroline=False,
                   range=[-1.6, view.n_layers + 0.6]),
        hovermode="closest", clickmode="event+select", legend=dict(title="edges and nodes"),
        height=max(520, 45 * (view.n_layers + 3)), margin=dict(t=110),
    )  # fmt: skip
    return fig
