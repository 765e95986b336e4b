"""An edge circuit drawn as a graph to explore, after circuit-tracer's frontend: layers left to right
(the embedding first, the logits last), one row per head and a row of its own for the MLPs (or, grouped
by layer, one node for a layer's heads); each line joins two nodes, its width the |score| and its colour
the sign (summed over the inputs that join them: a head's q, k and v), with a legend for both; a
node's incoming and outgoing edges as a table; pinning (only the edges that touch chosen nodes) and
hiding nodes.

The data (`links`, `subgraph`, `node_table`, `nodes_of`) is pure and apart from the figure (`edge_graph`),
so a front end can offer the nodes to pick and show the table without drawing. The drawing pieces
(`draw_lines`: width classes and sign colours with their legend, `draw_nodes`, `draw_ring`) and the
Link helpers (a Link's ends may be plain node ids) serve attribution graphs too (interp.viz.attribution).
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from interp.circuits.graph import Node

GROUPS = ("head", "layer")  # one node per head, or one per layer's heads
POSITIVE, NEGATIVE = "#1f77b4", "#d62728"  # edge colour by the sign of its score
NODE_COLORS = {"embed": "#333333", "head": "#2ca02c", "mlp": "#9467bd", "logits": "#333333"}
BINS = (0.75, 0.5, 0.25, 0.0)  # width classes: the share of the largest |score| drawn
LABEL_NODES = 80  # above this many nodes, names show on hover only


@dataclass(frozen=True)
class Link:
    """One edge of the circuit as drawn: writer node -> reading node (a k or v input links to every
    query head of its KV group, once per head; grouped by layer, once per layer)."""

    src: Node | str  # a string: a node of another graph (an attribution graph's node id)
    dst: Node | str
    edge: str  # the circuit's edge, e.g. 'a0.h1->a1.kv0<k>'
    input: str  # the input it enters: q, k, v, mlp or logits (an attribution graph: how many edges it sums)
    score: float


def node_name(node: Node | str) -> str:
    """'a3.h1', 'm3', 'embed', 'logits'; a layer's heads grouped: 'a3'; a node named by a string (an
    attribution graph's): that string."""
    if isinstance(node, str):
        return node
    return f"a{node.layer}" if node.kind == "head" and node.head is None else node.name


def _grouped(node: Node, group: str) -> Node:
    return Node("head", node.layer) if group == "layer" and node.kind == "head" else node


def links(graph, scores, keep, group: str = "head") -> list[Link]:
    """The kept edges (a boolean mask over `graph`'s edges, `scores` one per edge) as links between
    drawn nodes, strongest |score| first."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS} (got {group!r})")
    idx = keep.nonzero().flatten()
    idx = idx[scores[idx].abs().argsort(descending=True)]
    src, dst = graph.src[idx].tolist(), graph.dst[idx].tolist()
    out = []
    for i, s, d, v in zip(idx.tolist(), src, dst, scores[idx].tolist()):
        writer, reader = graph.writers[s], graph.readers[d]
        if reader.kind in ("logits", "mlp"):
            targets = [Node(reader.kind, reader.layer)]
        else:
            targets = [Node("head", reader.layer, h) for h in graph.heads_fed(reader)]
        name = f"{writer.name}->{reader.name}"
        a = _grouped(writer, group)
        for t in dict.fromkeys(_grouped(t, group) for t in targets):
            out.append(Link(a, t, name, reader.kind, float(v)))
    return out


def nodes_of(ls: list[Link]) -> list[str]:
    """The nodes the links touch, in flow order (embedding, layer by layer heads then MLP, logits)."""
    nodes = {n for link in ls for n in (link.src, link.dst)}
    order = {"embed": (-1, 0), "head": (0, 0), "mlp": (0, 1), "logits": (10**9, 0)}

    def key(n: Node) -> tuple:
        return order[n.kind][0] + (n.layer or 0), order[n.kind][1], -1 if n.head is None else n.head

    return [node_name(n) for n in sorted(nodes, key=key)]


def subgraph(ls: list[Link], pin=(), hide=()) -> list[Link]:
    """Without the links that touch a hidden node; with nodes pinned, only the links that touch one
    (each pinned node with its incoming and outgoing edges)."""
    pin, hide = set(pin), set(hide)
    out = [x for x in ls if node_name(x.src) not in hide and node_name(x.dst) not in hide]
    if pin:
        out = [x for x in out if node_name(x.src) in pin or node_name(x.dst) in pin]
    return out


def node_table(ls: list[Link], node: str) -> list[dict]:
    """`node`'s incoming then outgoing edges, each with its score, strongest |score| first."""
    rows = []
    for direction, mine in (("in", [x for x in ls if node_name(x.dst) == node]),
                            ("out", [x for x in ls if node_name(x.src) == node])):  # fmt: skip
        for x in sorted(mine, key=lambda x: -abs(x.score)):
            rows.append({"direction": direction, "from": node_name(x.src), "to": node_name(x.dst), "input": x.input,
                         "score": x.score, "edge": x.edge})  # fmt: skip
    return rows


def _position(node: Node, n_layers: int, n_heads: int, group: str) -> tuple[float, float]:
    """x = layer (the embedding at -1, an MLP half a layer after its heads, the logits at n_layers);
    y = the head's row, the MLPs' row above the heads, the two ends in the middle."""
    mlp_row = 1.0 if group == "layer" else n_heads + 0.5
    if node.kind == "embed":
        return -1.0, mlp_row / 2
    if node.kind == "logits":
        return float(n_layers), mlp_row / 2
    if node.kind == "mlp":
        return node.layer + 0.5, mlp_row
    return float(node.layer), 0.0 if node.head is None else float(node.head)


def _pairs(ls: list[Link]) -> list[tuple[Node, Node, float, list[Link]]]:
    """Links joining the same two nodes, summed (a head's q, k and v), strongest |sum| first."""
    out: dict[tuple[Node, Node], list[Link]] = {}
    for x in ls:
        out.setdefault((x.src, x.dst), []).append(x)
    pairs = [(a, b, sum(x.score for x in xs), xs) for (a, b), xs in out.items()]
    return sorted(pairs, key=lambda p: -abs(p[2]))


def line_style(positive: bool, level: int) -> dict:
    return {"color": POSITIVE if positive else NEGATIVE, "width": 0.75 + 1.25 * (len(BINS) - 1 - level)}


def _bend(span: float) -> float:
    """The most an edge bends, in rows."""
    return 0.4 if span <= 1 else 0.12 * span


def _arc(a: tuple[float, float], b: tuple[float, float], span: float, n: int = 8) -> tuple[list, list]:
    """Points on a gentle arc from a to b (a quadratic Bezier curve), bent away from the middle of the
    figure by more the more layers it crosses, so a long edge along one row does not run through the
    nodes between its ends."""
    (x0, y0), (x1, y1) = a, b
    bend = _bend(span) * min(1.0, abs(x1 - x0) / 8) * (1 if y0 + y1 >= span else -1)
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2 + bend
    t = [i / n for i in range(n + 1)]
    xs = [(1 - u) ** 2 * x0 + 2 * u * (1 - u) * mx + u**2 * x1 for u in t]
    ys = [(1 - u) ** 2 * y0 + 2 * u * (1 - u) * my + u**2 * y1 for u in t]
    return xs, ys


def level(v: float, top: float) -> int:
    """The width class of a line of value `v` when the strongest drawn is `top` (0 the widest)."""
    return next(k for k, share in enumerate(BINS) if abs(v) >= share * top)


def draw_lines(fig: go.Figure, lines: list[tuple[str, str, float, list, list, str]], top: float, anchor: tuple[float, float],
               selected: str | None = None, measure: str = "score") -> None:  # fmt: skip
    """Lines joining drawn nodes, one trace per (selected or not, sign, width class): each line is
    (its two nodes' names, value, xs, ys, hover text); width = |value| against `top`, colour = sign;
    a line touching the `selected` node is drawn over the rest, which fade. A legend entry per sign
    and width (a short line at `anchor`) and a hover point at each line's middle (trace "edges")."""
    traces: dict[tuple, tuple[list, list]] = {}  # (focus, sign, bin) -> x, y
    mid_x, mid_y, mid_text = [], [], []
    for a, b, v, cx, cy, hover in lines:
        lvl = level(v, top)
        focus = selected is not None and selected in (a, b)
        tx, ty = traces.setdefault((focus, v >= 0, lvl), ([], []))
        tx += [*cx, None]
        ty += [*cy, None]
        mid_x.append(cx[len(cx) // 2])
        mid_y.append(cy[len(cy) // 2])
        mid_text.append(hover)
    for (focus, positive, lvl), (tx, ty) in sorted(traces.items()):
        opacity = (0.95 if focus else 0.12) if selected is not None else 0.9 - 0.15 * lvl
        fig.add_trace(go.Scatter(x=tx, y=ty, mode="lines", hoverinfo="skip", showlegend=False, opacity=opacity,
                                 legendgroup=f"{positive}{lvl}", line=line_style(positive, lvl), meta="edges"))  # fmt: skip
    for rank, (positive, lvl) in enumerate((p, k) for p in (True, False) for k in range(len(BINS))):
        if any(t[1] == positive and t[2] == lvl for t in traces):  # the legend: one entry per sign and width
            lo, hi = BINS[lvl] * top, (BINS[lvl - 1] * top if lvl else top)
            fig.add_trace(go.Scatter(x=[anchor[0]] * 2, y=[anchor[1]] * 2, mode="lines", name=f"{'+' if positive else '−'} |{measure}| {lo:.3g} to {hi:.3g}",
                                     legendgroup=f"{positive}{lvl}", legendrank=rank, line=line_style(positive, lvl), meta="legend"))  # fmt: skip
    fig.add_trace(go.Scatter(x=mid_x, y=mid_y, mode="markers", hovertext=mid_text, hoverinfo="text", showlegend=False,
                             marker=dict(size=7, color="#777777", opacity=0.0), name="edges", meta="edge-hover"))  # fmt: skip


def draw_nodes(fig: go.Figure, name: str, xy: list[tuple[float, float]], names: list[str], text: list[str],
               marker: dict, hover: list[str] | None = None, textposition: str | list[str] = "top center") -> None:  # fmt: skip
    """One kind of node as a trace of markers named by `names` (customdata: a click on one selects it);
    `textposition` one for all or one a node (see `place_labels`)."""
    fig.add_trace(go.Scatter(
        x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", name=name, text=text,
        customdata=names, textposition=textposition, textfont=dict(size=LABEL_FONT), marker=marker, meta="nodes",
        **({"hovertext": hover, "hovertemplate": "%{hovertext}<extra></extra>"} if hover is not None else
           {"hovertemplate": "%{customdata} (click: its edges)<extra></extra>"}),
    ))  # fmt: skip


def draw_ring(fig: go.Figure, x: float, y: float, name: str, label: str | None = None) -> None:
    """The selected node, ringed; `label` ("top" or "bottom") also writes its name outside the ring
    there (the node's own label, which the ring would cover, is then left blank by the caller)."""
    ring = dict(size=RING_SIZE, symbol="circle-open", color="#ff7f0e", line=dict(width=3))
    fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"selected: {name}", hoverinfo="skip", marker=ring,
                             meta="ring"))  # fmt: skip
    if label is not None:
        shift = RING_SIZE / 2 + 3
        fig.add_annotation(x=x, y=y, text=f"<b>{name}</b>", showarrow=False, font=dict(size=LABEL_FONT + 1, color="#ff7f0e"),
                           yshift=shift if label == "top" else -shift, yanchor="bottom" if label == "top" else "top",
                           name="selected label")  # fmt: skip


# Label placement. A node's name goes above or below it (layers alternate, so neighbours on one row
# part), whichever overlaps no label placed before it, else it shows on hover only. Boxes are estimated
# in pixels at NOMINAL_WIDTH: ~0.6 font size a character, 1.2 font size tall.
LABEL_FONT = 9
RING_SIZE = 22
NODE_SIZE = 11
NOMINAL_WIDTH = 900
LEGEND_WIDTH = 170  # px the vertical legend takes from the plot at the right
MARGIN = dict(l=80, r=80, t=100, b=80)  # plotly's defaults, set explicitly so the estimate holds


def plot_box(layout_height: float, width: float = NOMINAL_WIDTH, legend: float = LEGEND_WIDTH) -> tuple[float, float]:
    """The plot area's width and height in px."""
    return width - MARGIN["l"] - MARGIN["r"] - legend, layout_height - MARGIN["t"] - MARGIN["b"]


def label_box(x: float, y: float, text: str, position: str, scale: tuple[float, float], offset: float = NODE_SIZE / 2,
              font: float = LABEL_FONT) -> tuple[float, float, float, float]:  # fmt: skip
    """(left, bottom, right, top) in px (y up) of `text` written above ("top ...") or below a point."""
    w, h = 0.6 * font * len(text), 1.2 * font
    cx, cy = x * scale[0], y * scale[1]
    bottom = cy + offset if position.startswith("top") else cy - offset - h
    return cx - w / 2, bottom, cx + w / 2, bottom + h


def overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(points: list[tuple[float, float, str, int]], scale: tuple[float, float],
                 selected: str | None = None) -> dict[str, str | None]:  # fmt: skip
    """Each point (x, y, name, layer)'s text position: "top center" or "bottom center" (even layers try
    the top first, odd ones the bottom), or None (hover only) where both overlap a label already
    placed; the `selected` point is placed first, outside its ring. `scale`: px per unit of x and y."""
    placed: list[tuple] = []
    out: dict[str, str | None] = {}
    order = sorted(points, key=lambda p: (p[2] != selected, p[0], p[1]))
    for x, y, name, layer in order:
        offset = RING_SIZE / 2 + 3 if name == selected else NODE_SIZE / 2
        tries = ("top center", "bottom center") if layer % 2 == 0 else ("bottom center", "top center")
        out[name] = None
        for position in tries:
            box = label_box(x, y, name, position, scale, offset)
            if not any(overlaps(box, other) for other in placed):
                placed.append(box)
                out[name] = position
                break
    return out


def edge_graph(graph, scores, keep, title: str = "Circuit", max_edges: int | None = None, *, group: str = "head",
               pin=(), hide=(), selected: str | None = None, faithfulness=None) -> go.Figure:  # fmt: skip
    """The circuit `keep` (a boolean mask over `graph`'s edges) as a graph: see the module docstring.
    `max_edges` caps the node pairs drawn (the strongest); `selected` (a node's name) is ringed and its
    edges drawn over the rest, which fade; `faithfulness` (f, lo, hi) of the circuit at this size goes
    in the title. Node markers carry their name as customdata (a click on one selects it)."""
    every = links(graph, scores, keep, group)
    pairs = _pairs(subgraph(every, pin, hide))
    n_pairs = len(pairs)
    pairs = pairs[:max_edges] if max_edges is not None else pairs
    where = lambda n: _position(n, graph.n_layers, graph.n_heads, group)  # noqa: E731
    top = max((abs(p[2]) for p in pairs), default=1.0) or 1.0
    span = 1.0 if group == "layer" else graph.n_heads + 0.5  # the MLPs' row; the heads' rows lie below it
    fig = go.Figure()
    lines = []
    for a, b, v, xs in pairs:
        cx, cy = _arc(where(a), where(b), span)
        parts = ", ".join(f"{x.input} {x.score:+.3g}" for x in xs) if len(xs) > 1 else xs[0].input
        lines.append((node_name(a), node_name(b), v, cx, cy, f"{node_name(a)} → {node_name(b)}: {v:+.4g} ({parts})"))
    draw_lines(fig, lines, top, (-1, span / 2), selected)
    drawn = {n for a, b, _, _ in pairs for n in (a, b)}
    label = len(drawn) <= LABEL_NODES
    height = max(460, 60 * (graph.n_heads + 3)) if group == "head" else 460
    x_range = [-1.8, graph.n_layers + 0.8]
    y_range = [-0.5 - _bend(span), span + _bend(span) + 0.5]
    plot_w, plot_h = plot_box(height)
    scale = (plot_w / (x_range[1] - x_range[0]), plot_h / (y_range[1] - y_range[0]))
    is_selected = selected is not None and any(node_name(n) == selected for n in drawn)
    layer_of = lambda n: -1 if n.kind == "embed" else (n.layer or 0)  # noqa: E731
    positions = place_labels([(*where(n), node_name(n), layer_of(n)) for n in drawn], scale,
                             selected if is_selected else None) if label else {}  # fmt: skip
    legend = {"head": "heads" if group == "head" else "a layer's heads", "mlp": "MLPs"}
    for kind, color in NODE_COLORS.items():
        pts = sorted(n for n in drawn if n.kind == kind)
        if not pts:
            continue
        names = [node_name(n) for n in pts]
        text = [nm if positions.get(nm) and nm != selected else "" for nm in names]
        draw_nodes(fig, legend.get(kind, kind), [where(n) for n in pts], names, text,
                   dict(size=NODE_SIZE, color=color, line=dict(width=1, color="white")),
                   textposition=[positions.get(nm) or "top center" for nm in names])  # fmt: skip
    if is_selected:
        where_selected = where(next(n for n in drawn if node_name(n) == selected))
        position = positions.get(selected)
        draw_ring(fig, *where_selected, selected, label=position.split()[0] if position else None)
    n_keep = int(keep.sum())
    what = f"{len(pairs)} of {n_pairs} node pairs drawn" if len(pairs) < n_pairs else f"{n_pairs} node pairs"
    sub = f"{n_keep:,} edges, {what}"
    sub += "".join(f"; {k}: {', '.join(v)}" for k, v in (("pinned", pin), ("hidden", hide)) if v)
    if faithfulness is not None:
        f, lo, hi = faithfulness
        title += f" — f = {f:.2f} [{lo:.2f}, {hi:.2f}]"
    heads = list(range(graph.n_heads))
    rows = ([0.0], ["attention"]) if group == "layer" else (heads, [f"head {h}" for h in heads])
    mlp_row = span
    fig.update_layout(
        title=dict(text=f"{title}<br><sup>{sub}; line width = |score|, colour = sign (blue +, red −), "
                        "summed over the inputs joining two nodes</sup>"),
        xaxis=dict(title="layer", tickvals=[-1, *range(graph.n_layers), graph.n_layers], range=x_range,
                   ticktext=["embed", *map(str, range(graph.n_layers)), "logits"], zeroline=False, showgrid=False),
        yaxis=dict(tickvals=rows[0] + ([mlp_row] if graph.has_mlp else []),
                   ticktext=rows[1] + (["MLP"] if graph.has_mlp else []), zeroline=False,
                   range=y_range),
        hovermode="closest", clickmode="event+select", legend=dict(title="edges and nodes"),
        height=height, margin=MARGIN,
    )  # fmt: skip
    return fig
