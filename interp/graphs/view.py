"""An attribution graph as drawn: its nodes placed by layer and position, supernodes merged. Pure data,
read from graph.json's dict (interp.graphs.export.graph_dict), shared by the figure (interp.viz.attribution),
the offline HTML (interp.viz.graph_html) and the dashboard's Graph view.

    y   the layer: token embeddings at -1 (the bottom), features and error nodes at their layer, the
        logits at n_layers (the top)
    x   the token position; the nodes sharing one (layer, position) spread across it, the most
        influential first, the error node last; the logits, alone on the top row, spread leftwards from
        the last position

A supernode (interp.graphs.supernodes) replaces its members: it sits at their mean place, and its edge
to any other node is the SUM of its members' edges to that node (edges between two members lie inside
it and are only counted in its `internal` sum). Members the pruning dropped take no part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from interp.graphs.graph import visual
from interp.graphs.supernodes import check_supernodes, owners

SPREAD = 0.8  # the share of a position's width its nodes spread over
LOGIT_SPREAD = 0.6  # the width each logit gets on the top row (ending at the last position)


@dataclass
class ViewNode:
    id: str
    kind: str  # feature, error, token, logit or supernode
    x: float
    y: float
    label: str  # the short text drawn beside it
    hover: str  # the lines shown on hover
    info: dict = field(default_factory=dict)  # what graph.json says about it (a supernode: members, internal)


@dataclass
class ViewEdge:
    source: str
    target: str
    weight: float  # direct effect; between supernodes, the sum over their members' edges
    parts: int = 1  # how many graph edges it sums


@dataclass
class GraphView:
    nodes: list[ViewNode]
    edges: list[ViewEdge]  # strongest |weight| first
    n_layers: int
    n_pos: int
    prompt: str
    str_tokens: list[str]
    supernodes: dict[str, list[str]]  # as given: name -> member ids
    scores: dict | None = None  # replacement, completeness
    thresholds: dict | None = None  # node, edge

    def node(self, node_id: str) -> ViewNode:
        return next(n for n in self.nodes if n.id == node_id)


def node_kinds(data: Mapping) -> dict[str, str]:
    """id -> kind of every node of the graph graph.json describes: the kept ones, and, when it holds the
    whole graph, every feature and error node (so a grouping names pruned nodes without error)."""
    kinds = {n["id"]: n["kind"] for n in data["nodes"]}
    whole = data.get("graph")
    if isinstance(whole, Mapping):
        n_pos = len(data["tokens"])
        for layer, pos, f in whole.get("features", []):
            kinds.setdefault(f"F{layer}.{f}@{pos}", "feature")
        for layer in range(int(data["n_layers"])):
            for pos in range(n_pos):
                kinds.setdefault(f"err{layer}@{pos}", "error")
    return kinds


def _row(n: Mapping, n_layers: int) -> int:
    return -1 if n["kind"] == "token" else n_layers if n["kind"] == "logit" else int(n["layer"])


def _hover(n: Mapping, tokens: list[str]) -> tuple[str, str]:
    """(label, hover lines) of one graph.json node."""
    kind, pos = n["kind"], int(n["pos"])
    at = f"at {pos} {visual(tokens[pos])!r}" if 0 <= pos < len(tokens) else f"at {pos}"
    lines = []
    if kind == "feature":
        label = n.get("label") or f"F{n['layer']}.{n['feature']}"
        lines.append(f"{n['id']}: feature {n['feature']} of layer {n['layer']} {at}")
        if n.get("label"):
            lines.append(f"label: {n['label']}")
        lines.append(f"activation {n['activation']:.4g}")
        if n.get("top_tokens"):
            lines.append("promotes: " + ", ".join(f"{visual(t)!r}" for t, _ in n["top_tokens"]))
    elif kind == "error":
        label = f"err{n['layer']}"
        lines.append(f"{n['id']}: what layer {n['layer']}'s transcoder misses {at}")
    elif kind == "token":
        label = visual(n["text"])
        lines.append(f"{n['id']}: token {visual(n['text'])!r} (id {n['token']}) at {pos}")
    else:
        label = visual(n["text"])
        lines.append(f"{n['id']}: logit {visual(n['text'])!r} (id {n['token']}), p = {n['prob']:.3f}")
    if n.get("influence") is not None:
        lines.append(f"influence {n['influence']:.3g}")
    return label, "\n".join(lines)


def graph_view(data: Mapping, supernodes: Mapping | None = None) -> GraphView:
    """The drawable graph of a graph.json dict, with `supernodes` (default: the ones it records)."""
    n_layers, tokens = int(data["n_layers"]), list(data["str_tokens"])
    groups = data.get("supernodes") or {} if supernodes is None else supernodes
    groups = check_supernodes(groups, node_kinds(data))
    owner = owners(groups)
    cells: dict[tuple[int, int], list[Mapping]] = {}
    for n in data["nodes"]:
        cells.setdefault((_row(n, n_layers), int(n["pos"])), []).append(n)
    place: dict[str, tuple[float, float]] = {}
    for (row, pos), members in cells.items():
        members.sort(key=lambda n: (n["kind"] == "error", -(n.get("influence") or 0.0), n["id"]))
        k = len(members)
        for i, n in enumerate(members):
            place[n["id"]] = (pos + (SPREAD * ((i + 0.5) / k - 0.5) if k > 1 else 0.0), float(row))
        if row == n_layers and k > 1:  # the logits have the top row to themselves: spread leftwards from the last position
            width = min(LOGIT_SPREAD * k, len(tokens) - 1 + SPREAD)
            for i, n in enumerate(members):
                place[n["id"]] = (pos + SPREAD / 2 - width + width * (i + 0.5) / k, float(row))
    nodes, kept = [], set()
    for n in data["nodes"]:
        if n["id"] in owner:
            kept.add(n["id"])
            continue
        label, hover = _hover(n, tokens)
        x, y = place[n["id"]]
        nodes.append(ViewNode(n["id"], n["kind"], x, y, label, hover, {k: v for k, v in n.items() if k != "index"}))
    ids = {n["index"]: n["id"] for n in data["nodes"]}
    merged: dict[tuple[str, str], list[float]] = {}
    internal: dict[str, float] = {}
    for e in data["edges"]:
        s, t = ids[e["source"]], ids[e["target"]]
        s, t = owner.get(s, s), owner.get(t, t)
        if s == t:
            internal[s] = internal.get(s, 0.0) + e["weight"]
            continue
        merged.setdefault((s, t), []).append(e["weight"])
    for name, members in groups.items():
        present = [m for m in members if m in kept]
        if not present:
            continue
        x = sum(place[m][0] for m in present) / len(present)
        y = sum(place[m][1] for m in present) / len(present)
        info = {"kind": "supernode", "members": present, "dropped": [m for m in members if m not in kept],
                "internal": internal.get(name, 0.0)}  # fmt: skip
        hover = (f"supernode {name}: {len(present)} members ({', '.join(present)}); its edges are the sums of its "
                 f"members' edges")  # fmt: skip
        if info["dropped"]:
            hover += f"\nnot in the pruned graph: {', '.join(info['dropped'])}"
        nodes.append(ViewNode(name, "supernode", x, y, name, hover, info))
    edges = [ViewEdge(s, t, sum(ws), len(ws)) for (s, t), ws in merged.items()]
    edges.sort(key=lambda e: -abs(e.weight))
    return GraphView(nodes, edges, n_layers, len(tokens), str(data.get("prompt", "")), tokens, groups,
                     data.get("scores"), data.get("thresholds"))  # fmt: skip

