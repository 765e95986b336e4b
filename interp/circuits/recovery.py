"""How well an edge ranking recovers a known circuit: AUROC against the planted edges (MIB's InterpBench
track scores every method's edge ranking this way).

    auroc(scores, labels)           the chance that a planted edge outscores an edge outside the circuit,
                                    ties counting half (Mann-Whitney U / (n_pos x n_neg), from ranks with
                                    ties averaged; 1 = every planted edge above every other, 0.5 = chance)
    recovery(edge_scores, truth)    AUROC of |score| and of the signed score (positive = carries the clean
                                    behaviour), and how deep the ranking goes before it holds every planted edge
    recover(model, task, truth)     both for every registered scoring method (interp.circuits.methods)

Edges the ground truth calls silent (in the mechanism, but unchanged by the task's counterfactual, so
invisible to any patching method) count on neither side.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.circuits.types import EdgeScores
from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.circuits.planted import GroundTruth
    from interp.data.task import Task
    from interp.models import Model


def average_ranks(x: Float[Tensor, " edge"]) -> Float[Tensor, " edge"]:
    """1-based ranks of x in ascending order, tied values sharing the mean of their ranks."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    new = torch.ones(len(x), dtype=torch.bool)
    new[1:] = sorted_x[1:] != sorted_x[:-1]
    group = torch.cumsum(new.long(), 0) - 1  # tie group of each sorted value
    pos = torch.arange(1, len(x) + 1, dtype=torch.float64)
    n_groups = int(group[-1]) + 1 if len(x) else 0
    mean = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group, pos)
    mean /= torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group, torch.ones_like(pos))
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[order] = mean[group]
    return ranks


def auroc(scores: Float[Tensor, " edge"], labels: Bool[Tensor, " edge"]) -> float:
    """Area under the ROC curve of `scores` separating labels True from False (see the module docstring)."""
    scores, labels = torch.as_tensor(scores).double().flatten(), torch.as_tensor(labels).bool().flatten()
    if scores.shape != labels.shape:
        raise WorkbenchError(f"{len(scores)} scores for {len(labels)} labels: give one label per score")
    if torch.isnan(scores).any():
        raise WorkbenchError("scores hold NaN (edges left unscored); score every edge before computing AUROC")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise WorkbenchError(f"AUROC needs edges on both sides (got {n_pos} planted and {n_neg} others)")
    u = float(average_ranks(scores)[labels].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


@dataclass
class Recovery:
    """One method's recovery of a planted circuit."""

    method: str
    auroc_abs: float | None  # AUROC of |score|
    auroc_signed: float | None  # AUROC of the score itself (positive = carries the clean behaviour)
    n_planted: int  # positive edges
    n_other: int  # negative edges (silent ones excluded)
    worst_rank: int | None  # how many top edges by |score| hold every planted one (ties count against; counted edges)
    seconds: float  # scoring time
    error: str | None = None  # the method's refusal (a WorkbenchError's line), if it refused

    def to_dict(self) -> dict:
        return asdict(self)


def recovery(edge_scores: EdgeScores, truth: GroundTruth, seconds: float = 0.0) -> Recovery:
    """AUROC of one method's scores against the planted edges (silent edges dropped)."""
    positive, counted = truth.labels()
    if edge_scores.graph != truth.graph:
        raise WorkbenchError("the scores and the ground truth are on different graphs; score the planted model itself")
    s, y = edge_scores.scores[counted].float(), positive[counted]
    worst = None
    if not torch.isnan(s).any():  # auroc refuses NaN below
        worst = int((s.abs() >= s.abs()[y].min()).sum())
    return Recovery(edge_scores.method, auroc(s.abs(), y), auroc(s, y), int(y.sum()), int((~y).sum()), worst, seconds)


def recover(model: Model, task: Task, truth: GroundTruth, methods: list[str] | None = None) -> list[Recovery]:
    """`recovery` for each method (default: every registered one, in the registry's order); a method that
    refuses the model or task is kept as a row with its one-line reason and no AUROC."""
    from interp.circuits import methods as registry

    out = []
    for name in methods if methods is not None else registry.names():
        start = time.perf_counter()
        try:
            scores = registry.score_edges(model, task, name)
        except WorkbenchError as e:
            n_pos = len(truth.planted)
            out.append(
                Recovery(name, None, None, n_pos, truth.graph.n_edges - len(truth.silent) - n_pos, None, 0.0, str(e))
            )
            continue
        out.append(recovery(scores, truth, time.perf_counter() - start))
    return out
