"""Graphs on disk: our graph.json (read and written) and circuit-tracer's frontend graph JSON.

graph.json (FORMAT)   {"format", "prompt", "tokens", "str_tokens", "model", "settings", "n_layers",
                      "nodes": [{"index", "id", "kind", "layer", "pos", ...}],
                      "edges": [{"source", "target", "weight"}] (the pruned graph's kept edges, or all
                      nonzero ones), "thresholds": {"node", "edge"}, "scores": {"replacement",
                      "completeness"}, "pruned": bool, "supernodes": {name: [node ids]} (drawn as
                      one node each, interp.graphs.view), "graph": the whole graph with its dense
                      adjacency (optional, for a reload), "qk": {"edges": [...], "scores": [...]}
                      (optional: attention explained, interp.graphs.qk's QK.to_dict per entry, an
                      edge's with its "edge")}; a node may carry "top_tokens" (features) and "label"
circuit-tracer        the frontend's JSON (circuit_tracer/frontend/graph_models.py, read 2026-12-07):
                      {"metadata": {slug, scan, transcoder_list, prompt_tokens, prompt, node_threshold,
                      schema_version}, "qParams": {pinnedIds, supernodes, linkType, clickedId, sg_pos},
                      "nodes": [{node_id, feature, layer, ctx_idx, feature_type, token_prob,
                      is_target_logit, run_idx, reverse_ctx_idx, jsNodeId, clerp, influence,
                      activation}], "links": [{source, target, weight}]}; node ids as it spells them:
                      feature "L_F_P", error "0_L_P", token "E_V_P", logit "(L+1)_V_P"
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.errors import WorkbenchError
from interp.graphs.graph import Graph, visual
from interp.graphs.prune import Pruned
from interp.io import write_json

FORMAT = "interp-graph/1"


def graph_dict(g: Graph, pruned: Pruned | None = None, scores: tuple[float, float] | None = None,
               with_adjacency: bool = True, supernodes: dict | None = None, extra: dict | None = None,
               qk: dict | None = None) -> dict:  # fmt: skip
    """Our JSON form of `g` (the pruned graph's nodes and edges when `pruned` is given), with
    `supernodes` (name -> node ids, checked: interp.graphs.supernodes) and `extra` fields per node
    index (e.g. a feature's top_tokens, from `feature_tokens`, or a label), and `qk` (attention
    explained: interp.graphs.qk) as its "qk" section when given."""
    from interp.graphs.supernodes import check_supernodes

    groups = check_supernodes(supernodes or {}, {g.describe(i)["id"]: g.kind(i) for i in range(g.n_nodes)})
    keep = pruned.nodes if pruned is not None else torch.ones(g.n_nodes, dtype=torch.bool)
    edges = pruned.edges if pruned is not None else g.adjacency != 0
    nodes = []
    for i in torch.nonzero(keep)[:, 0].tolist():
        node = {"index": i, **g.describe(i), **((extra or {}).get(i) or {})}
        if pruned is not None:
            node["influence"] = float(pruned.influence[i])
            node["cumulative"] = float(pruned.cumulative[i])
        nodes.append(node)
    t, s = torch.nonzero(edges, as_tuple=True)
    out = {
        "format": FORMAT, "prompt": g.prompt, "tokens": g.tokens, "str_tokens": g.str_tokens, "model": g.model,
        "settings": g.settings, "n_layers": g.n_layers, "n_nodes": g.n_nodes, "n_features": g.n_features,
        "nodes": nodes,
        "edges": [{"source": int(a), "target": int(b), "weight": float(g.adjacency[b, a])} for a, b in zip(s.tolist(), t.tolist())],
        "pruned": pruned is not None, "supernodes": groups,
        "thresholds": {"node": pruned.node_threshold, "edge": pruned.edge_threshold} if pruned is not None else None,
        "scores": {"replacement": scores[0], "completeness": scores[1]} if scores is not None else None,
    }  # fmt: skip
    if qk is not None:
        out["qk"] = qk
    if with_adjacency:
        out["graph"] = {"features": g.features.tolist(), "activations": g.activations.tolist(),
                        "logit_tokens": g.logit_tokens.tolist(), "logit_probs": g.logit_probs.tolist(),
                        "logit_strs": g.logit_strs, "adjacency": g.adjacency.tolist(), "values": g.values.tolist(),
                        "constants": g.constants.tolist()}  # fmt: skip
    return out


def write_graph(g: Graph, path: str | Path, pruned: Pruned | None = None, scores=None, supernodes: dict | None = None,
                extra: dict | None = None) -> Path:  # fmt: skip
    """graph.json, atomically."""
    return write_json(path, graph_dict(g, pruned, scores, supernodes=supernodes, extra=extra))


@torch.no_grad()
def feature_tokens(model, transcoders, g: Graph, indices, n: int = 5) -> dict[int, dict]:
    """For the feature nodes among `indices`: {"top_tokens": [[token, probability], ...]}, the `n` tokens
    its decoder row promotes most through the final norm and the unembedding (a feature's top info)."""
    from interp.lens import direction_logits

    mine = [i for i in indices if g.kind(i) == "feature"]
    if not mine:
        return {}
    rows = torch.stack([transcoders.W_dec[transcoders.index(int(g.features[i, 0]))][int(g.features[i, 2])] for i in mine])
    logits = direction_logits(model, rows.detach())
    top = logits.topk(min(n, logits.shape[-1]), dim=-1)
    probs = (top.values - logits.logsumexp(-1, keepdim=True)).exp()
    decode = model.tokenizer.decode
    return {i: {"top_tokens": [[decode([t]), round(float(p), 6)] for t, p in zip(ids, ps)]}
            for i, ids, ps in zip(mine, top.indices.tolist(), probs.tolist())}  # fmt: skip


def read_graph(path: str | Path) -> Graph:
    """The whole graph back from a graph.json written with its adjacency."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkbenchError(
            f"{str(path)!r} is unreadable ({type(e).__name__}); write it again with `interp graph`"
        ) from e
    if not isinstance(data, dict) or data.get("format") != FORMAT or "graph" not in data:
        raise WorkbenchError(
            f"{str(path)!r} is not a whole graph of format {FORMAT}; write it again with `interp graph`"
        )
    d = data["graph"]
    return Graph(data["prompt"], data["tokens"], data["str_tokens"], data["n_layers"],
                 torch.tensor(d["features"], dtype=torch.long).reshape(-1, 3), torch.tensor(d["activations"]),
                 torch.tensor(d["logit_tokens"], dtype=torch.long), torch.tensor(d["logit_probs"]), d["logit_strs"],
                 torch.tensor(d["adjacency"]).reshape(data["n_nodes"], data["n_nodes"]), torch.tensor(d["values"]),
                 torch.tensor(d["constants"]), data["model"], data["settings"])  # fmt: skip


# -- circuit-tracer's frontend ---------------------------------------------------------------------------


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def tracer_node(g: Graph, i: int, influence: float | None = None) -> dict:
    """One node as circuit-tracer's frontend Node."""
    d = g.describe(i)
    base = {"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "",
            "influence": influence, "activation": None}  # fmt: skip
    if d["kind"] == "feature":
        la, pos, f = d["layer"], d["pos"], d["feature"]
        return {**base, "node_id": f"{la}_{f}_{pos}", "feature": _cantor(la, f), "layer": str(la), "ctx_idx": pos,
                "feature_type": "cross layer transcoder", "jsNodeId": f"{la}_{f}-0", "activation": d["activation"]}  # fmt: skip
    if d["kind"] == "error":
        la, pos = d["layer"], d["pos"]
        return {**base, "node_id": f"0_{la}_{pos}", "feature": -1, "layer": str(la), "ctx_idx": pos,
                "feature_type": "mlp reconstruction error", "jsNodeId": f"{la}_{pos}-0"}  # fmt: skip
    if d["kind"] == "token":
        v, pos = d["token"], d["pos"]
        return {**base, "node_id": f"E_{v}_{pos}", "feature": pos, "layer": "E", "ctx_idx": pos,
                "feature_type": "embedding", "jsNodeId": f"E_{v}-{pos}"}  # fmt: skip
    layer, v, pos, p = str(g.n_layers + 1), d["token"], d["pos"], d["prob"]
    return {**base, "node_id": f"{layer}_{v}_{pos}", "feature": v, "layer": layer, "ctx_idx": pos,
            "feature_type": "logit", "token_prob": p, "is_target_logit": i == g.logit_start,
            "jsNodeId": f"L_{v}-{pos}", "clerp": f'Output "{visual(d["text"])}" (p={p:.3f})', "influence": None}  # fmt: skip


def tracer_dict(g: Graph, pruned: Pruned, slug: str, scan: str = "interp-workbench", supernodes: dict | None = None) -> dict:
    """circuit-tracer's frontend graph of the pruned graph: kept nodes that a kept edge touches, plus
    every token and logit (as its create_graph_files keeps them); `supernodes` (checked, name -> our
    node ids) go into qParams as its frontend lists them, [name, node_id, ...]."""
    nodes = {i: tracer_node(g, i, float(pruned.cumulative[i])) for i in torch.nonzero(pruned.nodes)[:, 0].tolist()}
    # circuit-tracer spells a layer-0 feature f at pos p "0_f_p" and the error of layer f at pos p "0_f_p"
    # too; its frontend keys nodes by id, so such an error is renamed "0_f_p_error" (only then)
    features = {n["node_id"] for n in nodes.values() if n["feature_type"] == "cross layer transcoder"}
    for n in nodes.values():
        if n["feature_type"] == "mlp reconstruction error" and n["node_id"] in features:
            n["node_id"] += "_error"
    t, s = torch.nonzero(pruned.edges, as_tuple=True)
    links = [{"source": nodes[a]["node_id"], "target": nodes[b]["node_id"], "weight": float(g.adjacency[b, a])}
             for a, b in zip(s.tolist(), t.tolist()) if a in nodes and b in nodes]  # fmt: skip
    touched = {x for link in links for x in (link["source"], link["target"])}
    used = [n for n in nodes.values() if n["node_id"] in touched or n["feature_type"] in ("embedding", "logit")]
    meta = {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": [visual(t) for t in g.str_tokens],
            "prompt": g.prompt, "node_threshold": pruned.node_threshold, "schema_version": 1}  # fmt: skip
    ours = {d["id"]: i for i, d in ((i, g.describe(i)) for i in nodes)}
    shown = {n["node_id"] for n in used}
    groups = [[name, *(nodes[ours[m]]["node_id"] for m in members if m in ours and nodes[ours[m]]["node_id"] in shown)]
              for name, members in (supernodes or {}).items()]  # fmt: skip
    qparams = {"pinnedIds": [], "supernodes": [x for x in groups if len(x) > 1], "linkType": "both", "clickedId": "",
               "sg_pos": ""}  # fmt: skip
    return {"metadata": meta, "qParams": qparams, "nodes": used, "links": links}


def write_tracer(g: Graph, pruned: Pruned, path: str | Path, slug: str, scan: str = "interp-workbench") -> Path:
    """circuit-tracer's frontend JSON, atomically."""
    return write_json(path, tracer_dict(g, pruned, slug, scan))
