"""graph.json round-trips; circuit-tracer's frontend JSON has its schema and a consistent structure."""

from __future__ import annotations

import json

import torch

from interp.graphs import export, prune

# circuit-tracer's frontend models (circuit_tracer/frontend/graph_models.py)
NODE_FIELDS = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx",
               "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}  # fmt: skip
META_FIELDS = {"slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold", "schema_version"}


def test_graph_json_round_trips(built, tmp_path):
    _, _, _, g = built
    p = prune.prune(g)
    path = export.write_graph(g, tmp_path / "graph.json", p, prune.scores(g))
    back = export.read_graph(path)
    for name in ("features", "activations", "logit_tokens", "logit_probs", "adjacency", "values", "constants"):
        torch.testing.assert_close(getattr(back, name), getattr(g, name))
    assert (back.prompt, back.tokens, back.str_tokens, back.n_layers) == (g.prompt, g.tokens, g.str_tokens, g.n_layers)
    data = json.loads(path.read_text())
    assert data["thresholds"] == {"node": 0.8, "edge": 0.98} and set(data["scores"]) == {"replacement", "completeness"}
    assert len(data["edges"]) == int(p.edges.sum()) and len(data["nodes"]) == int(p.nodes.sum())
    kept = {n["index"] for n in data["nodes"]}
    assert all(e["source"] in kept and e["target"] in kept for e in data["edges"])
    e = data["edges"][0]
    assert e["weight"] == float(g.adjacency[e["target"], e["source"]])


def test_tracer_json_structure(built):
    _, _, _, g = built
    p = prune.prune(g)
    data = json.loads(json.dumps(export.tracer_dict(g, p, "tiny")))
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    assert set(data["metadata"]) == META_FIELDS and data["metadata"]["prompt_tokens"] == g.str_tokens
    ids = {n["node_id"] for n in data["nodes"]}
    assert len(ids) == len(data["nodes"])
    assert all(set(n) == NODE_FIELDS for n in data["nodes"])
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    kinds = {n["feature_type"] for n in data["nodes"]}
    assert (
        {"embedding", "logit"} <= kinds <= {"embedding", "logit", "cross layer transcoder", "mlp reconstruction error"}
    )
    logits = [n for n in data["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == g.n_logits and sum(n["is_target_logit"] for n in logits) == 1
    assert logits[0]["layer"] == str(g.n_layers + 1) and logits[0]["ctx_idx"] == g.n_pos - 1
    assert sum(n["feature_type"] == "embedding" for n in data["nodes"]) == g.n_pos
    # every link is a kept edge of the graph, with its weight; ids spell layer_feature_pos
    index = {export.tracer_node(g, i)["node_id"]: i for i in range(g.n_nodes) if g.kind(i) != "error"}
    index |= {
        export.tracer_node(g, i)["node_id"]: i
        for i in range(g.error_start, g.token_start)
        if export.tracer_node(g, i)["node_id"] not in index
    }
    index |= {export.tracer_node(g, i)["node_id"] + "_error": i for i in range(g.error_start, g.token_start)}
    for link in data["links"]:
        s, t = index[link["source"]], index[link["target"]]
        assert p.edges[t, s] and link["weight"] == float(g.adjacency[t, s])
    f = next(n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder")
    layer, _feat, pos = (int(x) for x in f["node_id"].split("_"))
    assert (f["layer"], f["ctx_idx"]) == (str(layer), pos)
