"""The exact check of an edge ranking: some edges' estimated effects beside their exact patched effects.

Checking only the top edges by estimate cannot show a false negative (an edge the estimate ranks low
that matters), so the k checked edges come from three groups:

    top      the ceil(k/2) strongest by |estimate| (what the circuit is made of)
    random   k // 4 drawn uniformly from the rest (seeded)
    bottom   k // 4 drawn uniformly from the bottom half by |estimate| (not already drawn)

and the agreement is summed up over all of them: Spearman's rank correlation (ties share their mean
rank) and Pearson's correlation between estimate and exact effect.

The exact effect of edge u -> v is m(clean) - m(clean with v reading u's corrupted output), the
quantity EAP and EAP-IG linearize (interp.circuits.edges). Here it runs on the ablation engine
(interp.circuits.ablate): knocking one edge out is the counterfactual AblationPlan that keeps every
other edge, and all k plans go through one `run_many` (its cheap self-check once, the plans replayed
from the first position where a clean prompt differs from its corrupted one). `exact_effects_reference`
is interp.circuits.edges' plain one-hooked-forward-per-edge reference, which tests hold it to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.circuits.ablate import AblationPlan, Ablator
from interp.circuits.types import EdgeScores
from interp.data.task import Task
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

GROUPS = ("top", "random", "bottom")


def checked_edges(scores: EdgeScores, k: int, seed: int = 0) -> list[tuple[int, str]]:
    """(edge index, group) of the k edges to check (see the module docstring), top edges first by
    |estimate|, then the random and the bottom ones, each group by |estimate|."""
    if k < 0:
        raise WorkbenchError(f"the exact check needs 0 or more edges (got {k})")
    order = scores.order("abs")
    E = len(order)
    k = min(k, E)
    n_draw = k // 4
    n_top = k - 2 * n_draw
    gen = torch.Generator().manual_seed(seed)
    rest = order[n_top:]
    random = rest[torch.randperm(len(rest), generator=gen)[:n_draw]]
    taken = set(random.tolist())
    bottom_pool = torch.tensor([i for i in order[max(n_top, E // 2) :].tolist() if i not in taken], dtype=torch.long)
    bottom = bottom_pool[torch.randperm(len(bottom_pool), generator=gen)[: k - n_top - len(random)]]
    rank = torch.empty(E, dtype=torch.long)
    rank[order] = torch.arange(E)
    by_rank = lambda idx: sorted(idx.tolist(), key=lambda i: int(rank[i]))
    return ([(i, "top") for i in order[:n_top].tolist()] + [(i, "random") for i in by_rank(random)]
            + [(i, "bottom") for i in by_rank(bottom)])  # fmt: skip


@torch.no_grad()
def exact_effects(model: Model, task: Task, edges: Int[Tensor, " k"] | list[int], ablator: Ablator | None = None,
                  progress: Progress | None = None) -> Float[Tensor, " k"]:  # fmt: skip
    """m(clean) - m(clean with that one edge reading its writer's corrupted output), mean over the
    task's prompts, for each edge index: one counterfactual plan per edge through the ablation engine."""
    ab = ablator or Ablator(model, task, "counterfactual")
    if ab.ablation != "counterfactual":
        raise WorkbenchError("the exact check patches the corrupted run's outputs: it needs a counterfactual Ablator")
    E = ab.graph.n_edges
    plans = []
    for e in torch.as_tensor(edges, dtype=torch.long).tolist():
        keep = torch.ones(E, dtype=torch.bool)
        keep[e] = False
        plans.append(AblationPlan(edges=keep))
    if not plans:
        return torch.zeros(0)
    m = ab.run_many(plans, progress=progress).float().cpu()  # [edge batch]
    return ab.m_full.float().cpu().mean() - m.mean(1)


def exact_effects_reference(model: Model, task: Task, edges) -> Float[Tensor, " k"]:
    """The same numbers from interp.circuits.edges' plainly written reference (one forward per edge)."""
    from interp.circuits.edges import edge_effects_reference

    return edge_effects_reference(model, task, edges)


def _ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of x, tied values sharing their mean rank."""
    order = torch.argsort(x, stable=True)
    r = torch.empty(len(x), dtype=torch.float64)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    for v in x.unique():
        tie = x == v
        if int(tie.sum()) > 1:
            r[tie] = r[tie].mean()
    return r


def pearson(a, b) -> float:
    """Pearson's correlation (NaN with fewer than 3 pairs or a constant side)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if len(a) < 3:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = float((a.square().sum() * b.square().sum()).sqrt())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's over the ranks (ties share their mean rank)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return pearson(_ranks(a), _ranks(b))


def summary(rows: list[dict]) -> dict:
    """The agreement over the checked edges (rows with 'estimate', 'exact' and 'group'): Spearman's and
    Pearson's correlation, the edges per group and the largest gap."""
    if not rows:
        return {}
    est, ex = [r["estimate"] for r in rows], [r["exact"] for r in rows]
    worst = max(rows, key=lambda r: abs(r["estimate"] - r["exact"]))
    groups = {g: sum(r.get("group") == g for r in rows) for g in GROUPS}
    return {"n": len(rows), "spearman": spearman(est, ex), "pearson": pearson(est, ex), "groups": groups,
            "largest_gap": {k: worst[k] for k in ("src", "dst", "estimate", "exact", "group") if k in worst}}  # fmt: skip
