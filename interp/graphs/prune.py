"""Pruning by influence on the logits, and the graph's replacement and completeness scores, as
circuit-tracer defines them (circuit_tracer/graph.py, read 2026-12-07: prune_graph's defaults
node_threshold=0.8, edge_threshold=0.98; compute_graph_scores). Pure tensor math on an adjacency
[target, source] in interp.graphs.graph's node order.

    normalised   Â = |A| / (row sums of |A|)          (each target's inputs as shares)
    influence    w^T (Â + Â² + ...) = w^T ((I - Â)^-1 - I), w = the logits' probabilities on the logit
                 nodes (the graph is acyclic, so the series ends)
    nodes        keep the most influential nodes holding `node_threshold` of the total influence;
                 tokens and logits always stay
    edges        on the pruned matrix: score(t <- s) = Â'[t, s] (influence'(t) + w(t)); keep the best
                 edges holding `edge_threshold` of the total; then drop, until nothing changes, the
                 feature and error nodes left without an outgoing edge and features without an incoming
    replacement  of the influence reaching the logits from tokens and errors, the tokens' share
    completeness the share of each node's input not from error nodes, averaged with weights
                 influence + w over all nodes
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import WorkbenchError
from interp.graphs.graph import Graph

NODE_THRESHOLD = 0.8  # circuit-tracer's prune_graph default
EDGE_THRESHOLD = 0.98  # circuit-tracer's prune_graph default


def normalise(A: Float[Tensor, "node node"]) -> Float[Tensor, "node node"]:
    """|A| with each row scaled to sum to 1 (rows of zeros stay zero)."""
    a = A.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-10)


def influence(A: Float[Tensor, "node node"], weights: Float[Tensor, " node"], max_iter: int = 1000) -> Tensor:
    """weights^T (A + A^2 + ...) by its power series (ends: the graph is acyclic)."""
    step = weights @ A
    total = step.clone()
    for _ in range(max_iter):
        if not step.any():
            return total
        step = step @ A
        total += step
    raise WorkbenchError(f"influence did not converge in {max_iter} steps; the adjacency is not acyclic")


def influence_by_inverse(A: Float[Tensor, "node node"], weights: Float[Tensor, " node"]) -> Tensor:
    """The same, as weights^T ((I - A)^-1 - I) (the reference for `influence`; float64)."""
    n = A.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    inv = torch.linalg.solve(eye - A.double(), eye)
    return (weights.double() @ (inv - eye)).to(A.dtype)


def threshold_of(scores: Float[Tensor, " n"], share: float) -> Tensor:
    """The smallest score among the best scores that together hold `share` of the total."""
    ordered = scores.sort(descending=True).values
    cum = ordered.cumsum(0) / ordered.sum()
    i = min(int(torch.searchsorted(cum, torch.tensor(share, dtype=cum.dtype))), len(cum) - 1)
    return ordered[i]


def logit_weights(g: Graph) -> Float[Tensor, " node"]:
    w = torch.zeros(g.n_nodes)
    w[g.logit_start :] = g.logit_probs
    return w


@dataclass
class Pruned:
    nodes: Bool[Tensor, " node"]  # kept nodes
    edges: Bool[Tensor, "node node"]  # kept edges [target, source]
    cumulative: Float[Tensor, " node"]  # each node's cumulative influence share, best first (circuit-tracer's)
    influence: Float[Tensor, " node"]  # each node's influence on the logits
    node_threshold: float
    edge_threshold: float


def prune(g: Graph, node_threshold: float = NODE_THRESHOLD, edge_threshold: float = EDGE_THRESHOLD) -> Pruned:
    return prune_adjacency(
        g.adjacency, logit_weights(g), g.n_features, g.n_pos, g.n_logits, node_threshold, edge_threshold
    )


def prune_adjacency(A: Float[Tensor, "node node"], w: Float[Tensor, " node"], n_features: int, n_tokens: int,
                    n_logits: int, node_threshold: float = NODE_THRESHOLD, edge_threshold: float = EDGE_THRESHOLD) -> Pruned:  # fmt: skip
    """See the module docstring; the node order is features, errors, tokens, logits."""
    for name, t in (("node", node_threshold), ("edge", edge_threshold)):
        if not 0.0 <= t <= 1.0:
            raise WorkbenchError(f"the {name} threshold must be between 0 and 1, got {t}")
    fixed = n_tokens + n_logits  # tokens and logits: the last nodes, always kept
    infl = influence(normalise(A), w)
    nodes = infl >= threshold_of(infl, node_threshold)
    nodes[-fixed:] = True
    kept = A.clone()
    kept[~nodes] = 0
    kept[:, ~nodes] = 0
    Ak = normalise(kept)
    scores = Ak * (influence(Ak, w) + w)[:, None]
    edges = scores >= threshold_of(scores.flatten(), edge_threshold)
    inner = slice(0, A.shape[0] - fixed)  # features and errors
    while True:
        before = nodes.clone()
        edges[~nodes] = False
        edges[:, ~nodes] = False
        nodes[inner] &= edges[:, inner].any(0)  # features and errors need an outgoing edge
        nodes[:n_features] &= edges[:n_features].any(1)  # features need an incoming edge
        if torch.equal(nodes, before):
            break
    order = infl.sort(descending=True)
    cumulative = torch.zeros_like(infl)
    cumulative[order.indices] = order.values.cumsum(0) / order.values.sum()
    return Pruned(nodes, edges, cumulative, infl, node_threshold, edge_threshold)


def scores(g: Graph) -> tuple[float, float]:
    """(replacement score, completeness score) of the unpruned graph."""
    return graph_scores(g.adjacency, logit_weights(g), g.error_start, g.token_start, g.logit_start)


def graph_scores(A: Float[Tensor, "node node"], w: Float[Tensor, " node"], error_start: int, token_start: int,
                 logit_start: int) -> tuple[float, float]:  # fmt: skip
    Ahat = normalise(A)
    infl = influence(Ahat, w)
    tokens, errors = infl[token_start:logit_start].sum(), infl[error_start:token_start].sum()
    replacement = tokens / (tokens + errors)
    clean_share = 1 - Ahat[:, error_start:token_start].sum(1)
    weight = infl + w
    completeness = (clean_share * weight).sum() / weight.sum()
    return float(replacement), float(completeness)
