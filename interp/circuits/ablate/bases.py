"""Which node plans to record as bases, so that the others replay less (interp.circuits.ablate.engine).

A node plan is replayed from the first layer and, per prompt, the first position where it differs from
a recorded base, to END: its cost is about (n_layers - layer) x the mean width of that window.
Recording a plan as a base costs one run of whole sequences from its own first layer, after which every
plan that shares more with it than with the bases known so far replays from it. Families of nested
configurations (a faithfulness curve's first k heads, completeness's subsets) share long prefixes with
one another and little with the clean run or the circuit: one of them as a base saves the rest most of
their work.

`extra_bases` chooses greedily: while some plan saves more replay than its own recording costs, the one
that saves most becomes a base. Costs are estimated from signatures (random projections of each plan's
replaced writers per layer and per position: equal plans give equal signatures, different ones
different signatures but for a chance of the order of 2^-50); a wrong estimate can only make a choice
worse, never a result wrong, since every replay still starts where `AblationPlan.first_difference`
says.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.circuits.ablate.plan import AblationPlan, writer_layer
from interp.circuits.types import Graph


def _signatures(plans: list[AblationPlan], graph: Graph, n_prompts: int, n_pos: int) -> tuple[Tensor, Tensor]:
    """Per plan, a signature of its replaced writers in each layer [plan layer], and at each prompt and
    position [plan batch pos] (float64 random projections; a plan replacing nothing: zeros)."""
    W = len(graph.writers)
    g = torch.Generator().manual_seed(0)
    per_cell = torch.rand(W, n_prompts * n_pos, generator=g, dtype=torch.float64)
    per_writer = torch.rand(W, generator=g, dtype=torch.float64)
    layer_of = torch.tensor([writer_layer(graph, w) for w in range(W)])
    by_layer = torch.zeros(len(plans), graph.n_layers, dtype=torch.float64)
    by_cell = torch.zeros(len(plans), n_prompts, n_pos, dtype=torch.float64)
    for i, p in enumerate(plans):
        if p.writers is None:
            continue
        x = p.writers.reshape(W, -1).double()
        by_layer[i].index_add_(0, layer_of, (x * per_cell).sum(1))
        by_cell[i] = (per_writer @ x).view(n_prompts, n_pos)
    return by_layer, by_cell


def first_differences(plans: list[AblationPlan], graph: Graph, end: Tensor, n_pos: int) -> tuple[Tensor, Tensor]:
    """([i, j] the first layer where plans i and j differ, n_layers where they are equal; [i, j] the mean
    width of the window from the first position where they differ to END), estimated from signatures."""
    L, B = graph.n_layers, len(end)
    by_layer, by_cell = _signatures(plans, graph, B, n_pos)
    differ = by_layer[:, None] != by_layer[None]  # [i j layer]
    layer = torch.where(differ.any(-1), differ.float().argmax(-1).long(), torch.full(differ.shape[:2], L))
    cells = by_cell[:, None] != by_cell[None]  # [i j batch pos]
    first = torch.where(cells.any(-1), cells.float().argmax(-1).long(), torch.full(cells.shape[:3], n_pos))
    return layer, (end - torch.minimum(first, end) + 1).double().mean(-1)


def extra_bases(plans: list[AblationPlan], graph: Graph, end: Tensor, n_pos: int, known: list[AblationPlan],
                max_new: int = 16) -> list[int]:  # fmt: skip
    """Indices of `plans` worth recording as bases besides `known` (the clean run first), best first
    (module docstring)."""
    n, L = len(plans), graph.n_layers
    if n < 3 or not known:
        return []
    layer, window = first_differences(plans + known, graph, end.cpu(), n_pos)
    cost = torch.where(layer < L, (L - layer.clamp(max=L - 1)).double() * window, 0.0)  # replay i from j
    current = cost[:n, n:].min(1).values
    first = layer[:n, n]  # where each plan departs from the clean run: its recording starts there
    record = torch.where(first < L, (L - first.clamp(max=L - 1)).double() * n_pos, 0.0)
    embed = [w for w, node in enumerate(graph.writers) if node.kind == "embed"]
    eligible = torch.tensor([not (p.writers is not None and bool(p.writers[embed].any())) for p in plans])
    chosen: list[int] = []
    for _ in range(max_new):
        saved = (current[:, None] - cost[:n, :n]).clamp(min=0).sum(0)  # [j]: what recording j saves the plans
        gain = saved - record  # j's own replay is among what it saves (cost[j, j] = 0)
        gain[~eligible] = float("-inf")
        gain[chosen] = float("-inf")
        j = int(gain.argmax())
        if not float(gain[j]) > 0:
            break
        chosen.append(j)
        current = torch.minimum(current, cost[:n, j])
    return chosen
