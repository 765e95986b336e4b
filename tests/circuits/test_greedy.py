"""Greedy circuit selection from the logits, held to a plainly written reference walk."""

from __future__ import annotations

import pytest
import torch

from interp.circuits.select import greedy_order
from interp.circuits.types import Graph
from interp.errors import WorkbenchError
from interp.models.load import ModelInfo


def _graph(n_layers=3, n_heads=4, n_kv=2) -> Graph:
    return Graph.from_info(ModelInfo("m", "inhouse", "", n_layers, n_heads, n_kv, 64, 16, 128, 100, 64,
                                     "rotary", "RMS", True, False))  # fmt: skip


def _reference(graph: Graph, key: torch.Tensor) -> list[int]:
    """The walk written out: the circuit's nodes start as the logits; each step scans every edge
    not yet taken whose input belongs to a node in the circuit and takes the highest key."""
    logits = len(graph.readers) - 1
    in_circuit: set[int] = set()  # writers in the circuit
    taken: list[int] = []
    left = set(range(graph.n_edges))
    while left:
        best = None
        for e in sorted(left):
            r = int(graph.dst[e])
            owners = set(graph.feeds[:, r].nonzero()[:, 0].tolist())
            if (r == logits or owners & in_circuit) and (best is None or key[e] > key[best]):
                best = e
        taken.append(best)
        left.remove(best)
        in_circuit.add(int(graph.src[best]))
    return taken


@pytest.mark.parametrize("shape", [(2, 4, 2), (2, 2, 2)])
def test_greedy_order_matches_the_reference_walk(shape):
    g = _graph(*shape)
    key = torch.randn(g.n_edges, generator=torch.Generator().manual_seed(0))
    order = greedy_order(g, key)
    assert sorted(order.tolist()) == list(range(g.n_edges))  # every edge exactly once
    assert order.tolist() == _reference(g, key)
    # it is not plain top-n: an edge into a node off the circuit waits for that node
    assert order.tolist() != torch.argsort(key, descending=True).tolist()


def test_every_prefix_hangs_from_the_logits():
    g = _graph()
    key = torch.rand(g.n_edges, generator=torch.Generator().manual_seed(1))
    order = greedy_order(g, key).tolist()
    assert g.readers[int(g.dst[order[0]])].kind == "logits"
    joined: set[int] = set()
    for e in order[:200]:
        r = int(g.dst[e])
        assert g.readers[r].kind == "logits" or set(g.feeds[:, r].nonzero()[:, 0].tolist()) & joined
        joined.add(int(g.src[e]))


def test_greedy_refuses_a_key_of_the_wrong_length():
    with pytest.raises(WorkbenchError, match="one key per edge"):
        greedy_order(_graph(), torch.zeros(3))
