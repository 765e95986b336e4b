"""How faithful a circuit is: the model with every edge outside it ablated, as MIB measures it.

A circuit C is a set of edges. m(C) is the mean metric on held-out prompts when every edge
outside C is ablated: its input reads the writer's *replacement* instead of the writer's current
output,

    x_v  ->  x_v - sum_{u -> v not in C} (a(u) - r(u)),

with r(u) the writer's output on the corrupted prompt of the same pair (counterfactual, the
default, MIB's "patching") or its mean over every real position of the scoring prompts (mean
ablation; the scoring prompts, so nothing of the held-out set leaks into it). Everything else is
recomputed. Then

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))      (interp.circuits.types.normalized_faithfulness)

with m(full) the clean run (no edge ablated) and m(empty) every edge ablated (the corrupted run,
under counterfactual ablation). The *curve* is f over circuits of MIB's sizes, {0.1, 0.2, 0.5, 1,
2, 5, 10, 20, 50, 100} % of the graph's edges, each circuit the top-n edges by score (n =
int(fraction x edges), as MIB's `evaluate_area_under_curve`), pruned to the edges on a path from
the embedding to the logits (as MIB does; `pruned=False` keeps the raw top-n). CPR is the area
under f and CMD the area under |1 - f|, both by the trapezoid rule over the fractions (x from
0.001 to 1, MIB's default linear x-axis). MIB ranks edges by signed score for CPR and by |score|
for CMD; `ranking` picks one (the CLI computes both). Intervals come from a bootstrap over the
held-out prompts (interp.stats: the whole curve recomputed per resample from the same per-prompt
metrics).

Beside every curve, MIB's "Random" row: `random_baseline` scores random circuits of the same sizes
(uniform random edge rankings, several seeded draws, pruned the same way) with the same engine on the
same held-out prompts, with f, CPR and CMD per draw and their spread across draws.

The ablated runs are the one ablation engine's (interp.circuits.ablate: `Ablator.run_many`, on an
accelerator every size in one pass, stacked along the variant axis; on the CPU one pass per size); the
plainly written `ablated_reference` there is what tests hold the engine to.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.circuits.ablate import Ablator
from interp.circuits.types import Curve, EdgeScores, Graph, normalized_faithfulness, prune
from interp.data.task import Task
from interp.errors import WorkbenchError
from interp.stats import Interval, quantiles, resample_indices
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

MIB_PERCENTS: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def areas(percents, f) -> tuple[float, float]:
    """(CPR, CMD): trapezoid areas under f and under |1 - f| over the fractions percents / 100."""
    x = [p / 100 for p in percents]
    cpr = sum(((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(len(x) - 1)), 0.0)
    cmd = sum(((x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2 for i in range(len(x) - 1)), 0.0)
    return cpr, cmd


def _areas_batched(percents, f: Tensor) -> Tensor:
    """`areas` of many curves at once: f [size curve] -> [curve 2] (CPR, CMD)."""
    x = [p / 100 for p in percents]
    dx = torch.tensor([x[i + 1] - x[i] for i in range(len(x) - 1)], dtype=f.dtype)[:, None]
    cpr = (dx * (f[:-1] + f[1:]) / 2).sum(0)
    cmd = (dx * ((1 - f[:-1]).abs() + (1 - f[1:]).abs()) / 2).sum(0)
    return torch.stack([cpr, cmd], 1)


def _check_percents(percents) -> list[float]:
    percents = [float(p) for p in percents]
    if not percents or any(not 0 <= p <= 100 for p in percents) or percents != sorted(percents):
        raise WorkbenchError("circuit sizes must be increasing percentages in 0..100")
    return percents


def heldout_ends(ab: Ablator, graph: Graph) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """m(full) and m(empty) per held-out prompt, on the CPU; refused when they coincide (f undefined)."""
    full = ab.m_full.float().cpu()
    empty = ab.m_corrupted if ab.m_corrupted is not None else ab.run(torch.zeros(graph.n_edges, dtype=torch.bool))
    empty = empty.float().cpu()
    if abs(float(full.mean() - empty.mean())) < 1e-9 * max(1.0, float(full.abs().mean())):
        raise WorkbenchError("the clean and fully ablated runs give the same metric on the held-out prompts; "
                             "faithfulness is undefined (the task does not separate them on this model)")  # fmt: skip
    return full, empty


def circuits_at(scores: EdgeScores, percents=MIB_PERCENTS, ranking: str = "abs", pruned: bool = True):
    """(requested n, circuit mask) for each size."""
    E = scores.graph.n_edges
    order = scores.order(ranking)  # ranked once for every size
    out = []
    for p in percents:
        n = int(p / 100 * E)
        keep = torch.zeros(E, dtype=torch.bool)
        keep[order[:n]] = True
        out.append((n, prune(scores.graph, keep) if pruned else keep))
    return out


def faithfulness_curve(
    model: Model,
    scores: EdgeScores,
    heldout: Task,
    percents=MIB_PERCENTS,
    ranking: str = "abs",
    pruned: bool = True,
    ablation: str = "counterfactual",
    mean_task: Task | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ablator: Ablator | None = None,
    progress: Progress | None = None,
    stacked: bool | None = None,
    max_rows: int | None = None,
) -> Curve:
    """f at each size (see the module docstring), with bootstrap intervals over held-out prompts.
    `stacked` and `max_rows` choose how the sizes run (`Ablator.run_many`: by default every size in
    one forward on an accelerator, one forward per size on the CPU)."""
    percents = _check_percents(percents)
    ab = ablator or Ablator(model, heldout, ablation, mean_task, scores.graph)
    sizes = circuits_at(scores, percents, ranking, pruned)
    per_t = ab.run_many([k for _, k in sizes], stacked, max_rows, progress).float().cpu()  # [size batch]
    full, empty = heldout_ends(ab, scores.graph)
    f = normalized_faithfulness(per_t.mean(1), empty.mean(), full.mean()).tolist()
    cpr, cmd = areas(percents, f)
    B = per_t.shape[1]
    idx = resample_indices(B, n_boot, seed)
    pb, fb, eb = per_t[:, idx].mean(2), full[idx].mean(1), empty[idx].mean(1)  # [size boot], [boot]
    fboot = normalized_faithfulness(pb, eb, fb)
    lo, hi = (x.tolist() for x in quantiles(fboot))
    areas_b = _areas_batched(percents, fboot.double())
    q = lambda x: tuple(float(v) for v in quantiles(x))  # noqa: E731
    return Curve(percents, [n for n, _ in sizes], [int(k.sum()) for _, k in sizes], f, lo, hi, cpr, cmd,
                 q(areas_b[:, 0]), q(areas_b[:, 1]), float(full.mean()), float(empty.mean()),
                 per_t.mean(1).tolist(), ranking, pruned, ablation, B, per_t)  # fmt: skip


def faithfulness(model: Model, keep: Bool[Tensor, "edge"], heldout: Task, ablation: str = "counterfactual",
                 mean_task: Task | None = None) -> float:  # fmt: skip
    """f of one circuit on the held-out prompts."""
    ab = Ablator(model, heldout, ablation, mean_task)
    full = float(ab.m_full.mean())
    empty = float(ab.m_corrupted.mean()) if ab.m_corrupted is not None else float(
        ab.run(torch.zeros_like(keep)).mean())
    m = float(ab.run(keep).mean())
    return normalized_faithfulness(m, empty, full) if not math.isclose(full, empty) else float("nan")


# -- the random baseline (MIB's "Random" row) -------------------------------------------------------


@dataclass
class RandomBaseline:
    """Faithfulness of random circuits of the curve's sizes: each draw ranks the edges by a uniform
    random score, takes the top-n of every size and prunes it as the curve does, and the same engine
    scores it on the same held-out prompts (MIB reports this row beside every method). Uniform scores
    rank the same by |score| and by score, so one curve per draw gives both its CPR and its CMD. The
    spread is across draws (min to max); each draw's own curve is kept."""

    percents: list[float]
    seeds: list[int]  # one per draw
    n_edges: list[list[int]]  # [draw][size] edges left after pruning
    faithfulness: list[list[float]]  # [draw][size]
    cpr: list[float]  # per draw
    cmd: list[float]  # per draw
    m_full: float
    m_empty: float
    pruned: bool
    ablation: str
    n_heldout: int

    @property
    def draws(self) -> int:
        return len(self.seeds)

    def mean(self) -> list[float]:
        """f per size, the mean over draws."""
        return [sum(col) / len(col) for col in zip(*self.faithfulness)]

    def band(self) -> tuple[list[float], list[float]]:
        """(min, max) over draws, per size."""
        return [min(col) for col in zip(*self.faithfulness)], [max(col) for col in zip(*self.faithfulness)]

    def at(self, percent: float) -> Interval:
        """f at one size: the mean over draws and their range (unpacks as f, lo, hi)."""
        col = [f[self.percents.index(percent)] for f in self.faithfulness]
        return Interval(sum(col) / len(col), min(col), max(col))

    def area(self, which: str) -> Interval:
        """CPR or CMD: the mean over draws and their range."""
        v = self.cpr if which == "cpr" else self.cmd
        return Interval(sum(v) / len(v), min(v), max(v))

    def to_json(self) -> dict:
        d = asdict(self)
        d["draws"] = self.draws
        d["mean"] = self.mean()
        d["lo"], d["hi"] = self.band()
        d["spread"] = "min to max over draws"
        for k in ("cpr", "cmd"):
            d[f"{k}_mean"], d[f"{k}_lo"], d[f"{k}_hi"] = self.area(k)
        return d

    @classmethod
    def from_json(cls, d: dict) -> RandomBaseline:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def random_scores(graph: Graph, seed: int) -> EdgeScores:
    """Uniform random edge scores (one draw of the baseline), reproducible from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    return EdgeScores(graph, torch.rand(graph.n_edges, generator=gen), "random", "", "", 0, 0.0, 0.0)


def random_baseline(
    model: Model,
    graph: Graph,
    heldout: Task,
    draws: int = 3,
    percents=MIB_PERCENTS,
    pruned: bool = True,
    ablation: str = "counterfactual",
    mean_task: Task | None = None,
    seed: int = 0,
    ablator: Ablator | None = None,
    progress: Progress | None = None,
    stacked: bool | None = None,
    max_rows: int | None = None,
) -> RandomBaseline:
    """`draws` random circuits per size (see `RandomBaseline`), every one through one `run_many` of the
    engine `faithfulness_curve` uses (empty and full circuits cost nothing; equal ones run once). Draw
    d is seeded with 1000 * seed + d."""
    if draws < 1:
        raise WorkbenchError(f"the random baseline needs at least 1 draw (got {draws})")
    percents = _check_percents(percents)
    ab = ablator or Ablator(model, heldout, ablation, mean_task, graph)
    seeds = [1000 * seed + d for d in range(draws)]
    sizes = [circuits_at(random_scores(graph, s), percents, "abs", pruned) for s in seeds]
    per = ab.run_many([k for draw in sizes for _, k in draw], stacked, max_rows, progress).float().cpu()
    full, empty = heldout_ends(ab, graph)
    f = normalized_faithfulness(per.mean(1).view(draws, len(percents)), empty.mean(), full.mean())  # [draw size]
    cpr_cmd = [areas(percents, row) for row in f.tolist()]
    return RandomBaseline(percents, seeds, [[int(k.sum()) for _, k in draw] for draw in sizes], f.tolist(),
                          [a for a, _ in cpr_cmd], [b for _, b in cpr_cmd], float(full.mean()), float(empty.mean()),
                          pruned, ab.ablation, len(heldout))  # fmt: skip
