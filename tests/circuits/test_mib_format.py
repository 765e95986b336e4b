"""MIB's edge-score file (interp.circuits.mib): a file laid out as MIB documents it (EAP-IG's
Graph.to_json: cfg, nodes, edges named 'input->a0.h1<q>', 'a0.h1->m0', 'm1->logits'), read into our
graph and written back, on a model with and without grouped-query attention; files for other models
refused in one line."""

from __future__ import annotations

import json
import random

import pytest
import torch

from interp.circuits.mib import from_mib, read_mib, to_mib, write_mib
from interp.circuits.types import EdgeScores, Graph
from interp.errors import WorkbenchError


def mib_file(n_layers: int, n_heads: int, seed: int = 0) -> dict:
    """A MIB edge file written out by hand from MIB's description of its graph: the input and every
    head and MLP write to every later head's q, k and v input (one per query head), the heads of a
    layer also to that layer's MLP, everything to the logits."""
    rng = random.Random(seed)
    upstream = ["input"]
    edges = {}
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        for src in upstream:
            for head in heads:
                for letter in "qkv":
                    edges[f"{src}->{head}<{letter}>"] = {"score": rng.uniform(-1, 1), "in_graph": rng.random() < 0.2}
        upstream = upstream + heads
        for src in upstream:
            edges[f"{src}->m{layer}"] = {"score": rng.uniform(-1, 1), "in_graph": False}
        upstream = upstream + [f"m{layer}"]
    for src in upstream:
        edges[f"{src}->logits"] = {"score": rng.uniform(-1, 1), "in_graph": False}
    nodes = {name: {"in_graph": False} for name in upstream}
    nodes["logits"] = {"in_graph": True}
    return {"cfg": {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": False, "d_model": 32},
            "nodes": nodes, "edges": edges}  # fmt: skip


def _scores(graph: Graph, values: torch.Tensor) -> EdgeScores:
    return EdgeScores(graph, values, "eap-ig", "ioi", "logit-diff", 4, 2.0, -1.0, steps=5)


def test_mib_file_round_trips_one_to_one_without_gqa(tmp_path):
    graph = Graph(2, 4, 4, True)  # MHA: MIB's graph and ours are the same
    data = mib_file(2, 4)
    assert len(data["edges"]) == graph.n_edges == 110
    scores, keep, _ = from_mib(data, graph)
    for name in ("input->a0.h1<q>", "a0.h3->m0", "a0.h2->a1.h0<k>", "m0->a1.h3<v>", "m1->logits", "input->logits"):
        src, dst = name.split("->")
        ours = graph.index_by_names(
            "embed" if src == "input" else src, dst.replace(".h", ".kv") if dst.endswith(("<k>", "<v>")) else dst
        )
        assert float(scores[ours]) == pytest.approx(data["edges"][name]["score"], abs=1e-6)
        assert bool(keep[ours]) == data["edges"][name]["in_graph"]
    back = to_mib(_scores(graph, scores), keep, d_model=32)
    assert set(back["edges"]) == set(data["edges"]) and set(back["nodes"]) == set(data["nodes"])
    assert back["cfg"] == data["cfg"]
    for name, e in data["edges"].items():
        assert back["edges"][name]["score"] == pytest.approx(e["score"], abs=1e-6)
        assert back["edges"][name]["in_graph"] == e["in_graph"]
    # through a file, as EdgeScores with the run's provenance
    path = write_mib(tmp_path / "mib_edges.json", _scores(graph, scores), keep, 32, {"model": "tiny"})
    got = read_mib(path, graph)
    assert torch.allclose(got.scores, scores) and got.method == "eap-ig" and got.steps == 5
    assert torch.equal(got.extra["in_graph"], keep)


def test_gqa_kv_edges_split_on_write_and_sum_on_read():
    graph = Graph(2, 4, 2, True)  # two query heads per KV head
    data = mib_file(2, 4, seed=1)
    assert graph.n_edges == 82 and len(data["edges"]) == 110
    scores, keep, _ = from_mib(data, graph)
    kv = graph.index_by_names("a0.h1", "a1.kv1<k>")  # MIB's a1.h2<k> and a1.h3<k>
    e = data["edges"]
    assert float(scores[kv]) == pytest.approx(e["a0.h1->a1.h2<k>"]["score"] + e["a0.h1->a1.h3<k>"]["score"], abs=1e-6)
    assert bool(keep[kv]) == (e["a0.h1->a1.h2<k>"]["in_graph"] or e["a0.h1->a1.h3<k>"]["in_graph"])
    q = graph.index_by_names("a0.h1", "a1.h3<q>")
    assert float(scores[q]) == pytest.approx(e["a0.h1->a1.h3<q>"]["score"], abs=1e-6)
    written = to_mib(_scores(graph, scores), keep)
    assert set(written["edges"]) == set(data["edges"])
    assert written["edges"]["a0.h1->a1.h2<k>"]["score"] == pytest.approx(float(scores[kv]) / 2)
    assert written["interp"]["query_heads_per_kv_head"] == 2 and "sum" in written["interp"]["kv_split"]
    again, keep2, _ = from_mib(written, graph)
    assert torch.allclose(again, scores, atol=1e-6) and torch.equal(keep2, keep)  # split, then summed: the same


BAD = {
    "layers": (lambda d: d["cfg"].update(n_layers=3), "written for a model with 3 layers of 4 heads"),
    "heads": (lambda d: d["cfg"].update(n_heads=8), "written for a model with 2 layers of 8 heads"),
    "head out of range": (lambda d: d["edges"].update({"a0.h7->m0": {"score": 1.0, "in_graph": False}}),
                          "edge 'a0.h7->m0' is not in this model's graph"),
    "backwards": (lambda d: d["edges"].update({"m1->a0.h0<q>": {"score": 1.0, "in_graph": False}}),
                  "edge 'm1->a0.h0<q>' is not in this model's graph"),
    "missing": (lambda d: d["edges"].pop("a0.h2->a1.h0<v>"), "lists 1 of the 2 MIB edges of our a0.h2->a1.kv0<v>;"),
    "not mib": (lambda d: d.pop("edges"), "is not a MIB edge file"),
    "nan": (lambda d: d["edges"]["input->logits"].update(score=float("nan")), "every edge needs a finite score"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_file_for_another_model_is_refused_in_one_line(tmp_path, case):
    data = mib_file(2, 4)
    change, message = BAD[case]
    change(data)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    with pytest.raises(WorkbenchError) as err:
        read_mib(path, Graph(2, 4, 2, True))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_attention_only_models_have_no_mib_file():
    graph = Graph(2, 4, 4, False)
    with pytest.raises(WorkbenchError, match="attention-only"):
        to_mib(_scores(graph, torch.zeros(graph.n_edges)))
