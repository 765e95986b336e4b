"""The graph vocabulary: counts, names, GQA key/value inputs, pruning to embedding-to-logits paths."""

from __future__ import annotations

import pytest
import torch

from interp.circuits.types import Edge, Graph, Node, Reader, prune
from interp.errors import WorkbenchError
from interp.models.load import ModelInfo


def _info(n_layers, n_heads, n_kv, attn_only=False) -> ModelInfo:
    return ModelInfo("m", "inhouse", "", n_layers, n_heads, n_kv, 64, 16, None if attn_only else 128, 100, 64,
                     "rotary", "RMS", True, attn_only)  # fmt: skip


def _expected_edges(L, H, G, mlp=True) -> int:
    """Written out: attention inputs of layer l read 1 + l (H + mlp) writers, the MLP of layer l
    those plus its own heads, the logits every writer."""
    per = H + (1 if mlp else 0)
    attn = sum((H + 2 * G) * (1 + layer * per) for layer in range(L))
    mlps = sum(1 + layer * per + H for layer in range(L)) if mlp else 0
    return attn + mlps + 1 + L * per


@pytest.mark.parametrize("shape", [(2, 4, 2), (30, 9, 3), (3, 4, 4), (1, 2, 1)])
def test_counts(shape):
    L, H, G = shape
    g = Graph.from_info(_info(L, H, G))
    assert g.n_nodes == 1 + L * (H + 1) + 1
    assert len(g.readers) == L * (H + 2 * G + 1) + 1
    assert g.n_edges == _expected_edges(L, H, G) == int(g.mask.sum())
    if shape == (30, 9, 3):  # SmolLM2-135M
        assert (g.n_nodes, g.n_edges) == (302, 70651)
    ga = Graph.from_info(_info(L, H, G, attn_only=True))
    assert ga.n_edges == _expected_edges(L, H, G, mlp=False)


def test_edges_only_run_forward_and_names_round_trip():
    g = Graph.from_info(_info(3, 4, 2))
    order = {n: i for i, n in enumerate(g.writers)}
    for e in g.edges():
        if e.dst.kind in ("q", "k", "v"):
            assert e.src.kind == "embed" or e.src.layer < e.dst.layer
        elif e.dst.kind == "mlp":
            assert e.src.kind == "embed" or e.src.layer < e.dst.layer or (e.src.kind == "head" and e.src.layer == e.dst.layer)
        assert g.parse_edge(e.name) == e and g.edge(g.index_of(e)) == e
        assert order[e.src] < len(g.writers)
    assert g.parse_edge("a0.h3->a2.kv1<k>") == Edge(Node("head", 0, 3), Reader("k", 2, 1))
    with pytest.raises(WorkbenchError, match="not in this model's graph"):
        g.parse_edge("a2.h0->a1.h0<q>")  # backwards
    with pytest.raises(WorkbenchError, match="not in this model's graph"):
        g.parse_edge("a0.h0->a1.kv2<v>")  # no such KV head (2 per layer)


def test_kv_inputs_belong_to_their_query_group():
    g = Graph.from_info(_info(2, 4, 2))
    where = g.writer_index()
    k = g.readers.index(Reader("k", 1, 1))
    owners = {g.writers[w] for w in g.feeds[:, k].nonzero().flatten().tolist()}
    assert owners == {Node("head", 1, 2), Node("head", 1, 3)}
    assert g.feeds[where[Node("head", 1, 0)], g.readers.index(Reader("q", 1, 0))]
    assert g.kv_of(3) == 1 and g.group == 2


def _keep(g, names):
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    for n in names:
        keep[g.index_of(g.parse_edge(n))] = True
    return keep


def _names(g, keep):
    return {g.edge(i).name for i in keep.nonzero().flatten().tolist()}


def test_prune_keeps_exactly_the_paths_from_embedding_to_logits():
    g = Graph.from_info(_info(3, 4, 2))
    path = ["embed->a0.h1<q>", "a0.h1->a1.kv1<v>", "a1.h2->logits"]  # a1.h2 reads KV head 1
    dangling = ["a0.h0->m0", "embed->a2.h0<q>", "m1->a2.kv1<k>"]  # m0 and a2.h0 lead nowhere; m1 reads nothing
    got = _names(g, prune(g, _keep(g, path + dangling)))
    assert got == set(path)
    # an input of a head whose output is unused does not keep the edge into it
    assert _names(g, prune(g, _keep(g, ["embed->a1.h0<q>"]))) == set()
    assert _names(g, prune(g, _keep(g, ["embed->logits"]))) == {"embed->logits"}


def test_prune_follows_gqa_groups():
    g = Graph.from_info(_info(2, 4, 2))
    # the k input of KV head 0 feeds query heads 0 and 1: head 1 reaching the logits keeps it
    assert _names(g, prune(g, _keep(g, ["embed->a1.kv0<k>", "a1.h1->logits"]))) == {"embed->a1.kv0<k>", "a1.h1->logits"}
    # head 2 reads KV head 1, so nothing reaches the logits through KV head 0
    assert _names(g, prune(g, _keep(g, ["embed->a1.kv0<k>", "a1.h2->logits"]))) == set()


def test_graph_of_models(tiny_llama, tiny_gpt2):
    g = Graph.of(tiny_llama)
    assert (g.n_heads, g.n_kv) == (4, 2) and g.n_edges == _expected_edges(2, 4, 2)
    assert Graph.of(tiny_gpt2).n_kv == 4
