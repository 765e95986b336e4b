"""Choosing circuits from edge scores beyond plain top-n (`EdgeScores.circuit`): the greedy walk back
from the logits that Hanna et al.'s EAP-IG code offers (`apply_greedy`)."""

from __future__ import annotations

import heapq

import torch
from jaxtyping import Int
from torch import Tensor

from interp.circuits.types import Graph
from interp.errors import WorkbenchError


def greedy_order(graph: Graph, key: Tensor) -> Int[Tensor, "edge"]:
    """Every edge, in the order a greedy walk back from the logits takes them (Hanna et al.'s
    EAP-IG `apply_greedy`): the circuit starts as the logits alone; each step adds the edge of
    highest `key` among those into an input of a node already in the circuit, and the edge's
    writer joins the circuit (its q / k / v or MLP inputs open). The top-n circuit of this
    selection is the first n edges, so every prefix is connected to the logits (ties: lower edge
    index first). `key` is the ranking value per edge (|score| or the signed score)."""
    key = key.detach().float().cpu()
    if key.shape != (graph.n_edges,):
        raise WorkbenchError(f"greedy selection needs one key per edge ({graph.n_edges}), got {tuple(key.shape)}")
    dst = graph.dst.tolist()
    into: list[list[int]] = [[] for _ in graph.readers]
    for e, r in enumerate(dst):
        into[r].append(e)
    owned = [graph.feeds[w].nonzero()[:, 0].tolist() for w in range(len(graph.writers))]
    src, k = graph.src.tolist(), key.tolist()
    opened = [False] * len(graph.readers)
    joined = [False] * len(graph.writers)
    heap: list[tuple[float, int]] = []

    def open_input(r: int) -> None:
        if not opened[r]:
            opened[r] = True
            for e in into[r]:
                heapq.heappush(heap, (-k[e], e))

    open_input(len(graph.readers) - 1)  # the logits
    order = []
    while heap:
        _, e = heapq.heappop(heap)
        order.append(e)
        w = src[e]
        if not joined[w]:
            joined[w] = True
            for r in owned[w]:
                open_input(r)
    return torch.tensor(order, dtype=torch.long)
