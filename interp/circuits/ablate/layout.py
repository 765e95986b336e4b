"""How a batch of edge plans rebuilds the inputs it changes: pure tensor math on the CPU, worked out
before the forward so that the forward never waits on the host.

For plans s = 1..S (stacked as variants) and an input v with the n writers before it, `kept[s, w]`
says whether edge w -> v is in plan s. The input is rebuilt from the smaller side: from the fully
ablated input ("inside": base + the kept edges' differences) or from the current residual stream
("outside": X - the ablated edges' differences), with signed weights [s, w] over the writers'
differences a(w) - r(w). An input left exactly at one end needs no sum: with every edge kept it is X
itself, with none kept it is the base (its projection is the fully ablated one, known). Across a
batch, an input is summed for every plan as soon as one plan needs its sum; it stays X only when every
plan keeps all its edges, and takes the known projection only when every plan keeps none (the weights
of a plan at an end are then zero, and `inside` picks the end). Writers whose difference is exactly
zero in a plan (an MLP that writes its replacement, `Layout.zero`) weigh nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.circuits.types import Graph


@dataclass
class Sum:
    """One batch of inputs rebuilt by one batched matmul over the writers' differences."""

    inside: Bool[Tensor, "variant input"]  # rebuilt from the base (True) or from X (False)
    weights: Float[Tensor, "variant input row"]  # signed weights over the writers `rows`
    rows: Int[Tensor, "row"]  # the writers read (indices into the graph's writers)


@dataclass
class AttentionLayout:
    """A layer's q/k/v inputs (stacked columns: query heads, k heads, v heads)."""

    columns: Int[Tensor, "n"]  # columns summed
    sum: Sum | None
    fixed: Int[Tensor, "m"]  # columns every plan ablates completely: the known projection
    default: Int[Tensor, "r"]  # columns every plan keeps whole: they read X


@dataclass
class MLPLayout:
    """A layer's MLP: its input summed, left as X_mid, or its output known (not computed)."""

    sum: Sum | None  # None: every plan reads X_mid (or the output is known)
    known: str | None  # "replacement": writes r (unread, or fed nothing under counterfactual);
    # "ablated": writes the MLP of the fully ablated input (fed nothing under mean ablation)


@dataclass
class Layout:
    """Every layer's rebuilds for a batch of plans, and the writers whose differences are read."""

    attention: list[AttentionLayout]
    mlp: list[MLPLayout | None]  # None for attention-only models
    logits: Sum
    read: Bool[Tensor, "writer"]  # some sum reads the writer's difference
    zero: Bool[Tensor, "variant writer"]  # the writer's difference is exactly zero in that plan


def _signed(sub: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
    """(inside [S input], weights [S input writer]) of inputs with kept edges `sub` [S writer input]."""
    kept = sub.sum(1)
    inside = kept <= sub.shape[1] - kept
    w = torch.where(inside[:, None], sub.float(), -(~sub).float())
    w = w.masked_fill(zero[:, : sub.shape[1], None], 0.0)
    return inside, w.transpose(1, 2)


def _sum(inside: Tensor, w: Tensor) -> Sum:
    """A Sum reading only the writers some weight reads."""
    rows = w.ne(0).any(0).any(0).nonzero().flatten()
    return Sum(inside, w[:, :, rows].contiguous(), rows)


def layout(graph: Graph, keeps: Bool[Tensor, "variant edge"], counterfactual: bool) -> Layout:
    """The rebuilds of a batch of plans (each a kept-edge mask; see the module docstring)."""
    S, W = len(keeps), len(graph.writers)
    M = torch.zeros(S, W, len(graph.readers), dtype=torch.bool)
    M[:, graph.src, graph.dst] = keeps
    zero = torch.zeros(S, W, dtype=torch.bool)
    mlps: list[MLPLayout | None] = []
    if graph.has_mlp:  # which MLPs write exactly their replacement, per plan
        for layer in range(graph.n_layers):
            w, r = graph.mlp_writer(layer), int(graph.layer_readers(layer, "mlp")[0])
            unread = ~M[:, w].any(1)
            fed = M[:, : graph.n_writers_before(graph.readers[r]), r].any(1)
            zero[:, w] = unread | (~fed if counterfactual else torch.zeros_like(unread))
    attention = []
    for layer in range(graph.n_layers):
        cols = graph.attention_readers(layer)
        n = graph.n_writers_before(graph.readers[int(cols[0])])
        inside, w = _signed(M[:, :n, cols], zero)
        active = w.ne(0).any(2)
        summed = ~((~inside & ~active).all(0) | (inside & ~active).all(0))
        fixed = (inside & ~active).all(0) & ~summed
        sel = summed.nonzero().flatten()
        attention.append(AttentionLayout(sel, _sum(inside[:, sel], w[:, sel]) if len(sel) else None, fixed.nonzero().flatten(),
                                         (~summed & ~fixed).nonzero().flatten()))  # fmt: skip
        if graph.has_mlp:
            mlps.append(_mlp_layout(graph, layer, M, zero, counterfactual))
    r = len(graph.readers) - 1
    inside, w = _signed(M[:, :, r : r + 1], zero)
    logits = _sum(inside, w)
    read = torch.zeros(W, dtype=torch.bool)
    for s in [a.sum for a in attention] + [m.sum for m in mlps if m is not None] + [logits]:
        if s is not None:
            read[s.rows] = True
    return Layout(attention, mlps if graph.has_mlp else [None] * graph.n_layers, logits, read, zero)


def _mlp_layout(graph: Graph, layer: int, M: Tensor, zero: Tensor, counterfactual: bool) -> MLPLayout:
    w_mlp, r = graph.mlp_writer(layer), int(graph.layer_readers(layer, "mlp")[0])
    n = graph.n_writers_before(graph.readers[r])
    if bool(zero[:, w_mlp].all()):  # every plan: the MLP writes exactly its replacement
        return MLPLayout(None, "replacement")
    inside, w = _signed(M[:, :n, r : r + 1], zero)
    active = w.ne(0).any(2)[:, 0]
    if not bool(active.any()):
        if bool((~inside[:, 0]).all()):
            return MLPLayout(None, None)  # every plan keeps every edge into it: it reads X_mid
        if bool(inside[:, 0].all()):
            return MLPLayout(None, "ablated")  # every plan keeps none (mean ablation; counterfactual is zero above)
    return MLPLayout(_sum(inside, w), None)
