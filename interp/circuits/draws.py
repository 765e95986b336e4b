"""Intervals that carry the scoring prompts' variance as well as the held-out prompts'.

A circuit's faithfulness depends on two samples: the scoring prompts its edges were ranked on and the
held-out prompts it is judged on. Resampling only the held-out prompts (interp.circuits.faithfulness)
misses the first: with 32 scoring prompts IOI under ABC gave f = 0.441 [0.291, 0.586] at 5% of the
edges, with 256 it gave 0.622 [0.574, 0.669], two intervals that do not overlap.

Here the scoring prompts are resampled too, the way a bootstrap treats any sample: `scoring_resamples`
draws D - 1 bootstrap resamples of the scoring prompts (the first draw is the sample itself), each is
scored again by the same method and ranked into circuits of the same sizes, and each draw's circuits
are run on the same held-out prompts. `pooled` then draws, for every bootstrap replicate, one scoring
draw at random and one resample of the held-out prompts, and reads f off that pair: the interval holds
both sources of variance. The point value is the mean of the draws' f. With D = 1 it is the ordinary
held-out bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.circuits.types import normalized_faithfulness
from interp.data.task import Task
from interp.errors import WorkbenchError
from interp.stats import quantiles, resample_indices


def check_draws(n: int) -> int:
    if n < 1:
        raise WorkbenchError(f"--scoring-draws must be at least 1 (1: the scoring prompts as drawn; got {n})")
    return n


def scoring_resamples(task: Task, n_draws: int, seed: int = 0) -> list[Task]:
    """The scoring prompts as drawn, then n_draws - 1 bootstrap resamples of them (with replacement)."""
    check_draws(n_draws)
    g = torch.Generator().manual_seed(10_007 + seed)
    return [task] + [task.subset(torch.randint(len(task), (len(task),), generator=g)) for _ in range(n_draws - 1)]


@dataclass
class Pooled:
    """f per circuit size over D scoring draws and the held-out prompts, with intervals over both."""

    faithfulness: list[float]  # mean over the draws of f per size
    lo: list[float]  # 2.5 % of the pooled bootstrap per size
    hi: list[float]
    per_draw: list[list[float]]  # [draw][size] f of each scoring draw on all held-out prompts
    n_draws: int
    n_boot: int

    def at(self, i: int) -> tuple[float, float, float]:
        return self.faithfulness[i], self.lo[i], self.hi[i]

    def to_dict(self) -> dict:
        return {"faithfulness": self.faithfulness, "lo": self.lo, "hi": self.hi, "per_draw": self.per_draw,
                "n_draws": self.n_draws, "n_boot": self.n_boot,
                "resampled": "scoring prompts (bootstrap draws, each rescored) and held-out prompts"}  # fmt: skip


def pooled(
    per_prompt: list[Float[Tensor, "size batch"]],
    full: Float[Tensor, " batch"],
    empty: Float[Tensor, " batch"],
    n_boot: int = 1000,
    seed: int = 0,
) -> Pooled:
    """`per_prompt[d]`: the metric of draw d's circuit at each size on each held-out prompt; `full` and
    `empty` the held-out prompts' m(full) and m(empty). See the module docstring."""
    if not per_prompt:
        raise WorkbenchError("no scoring draws to pool")
    P = torch.stack([p.float().cpu() for p in per_prompt])  # [draw size batch]
    full, empty = full.float().cpu(), empty.float().cpu()
    D, S, B = P.shape
    per_draw = normalized_faithfulness(P.mean(2), empty.mean(), full.mean())  # [draw size]
    idx = resample_indices(B, n_boot, seed)  # [boot batch]
    which = torch.randint(D, (n_boot,), generator=torch.Generator().manual_seed(7 + seed))
    rows = P[which]  # [boot size batch]
    picked = torch.gather(rows, 2, idx[:, None, :].expand(-1, S, -1)).mean(2)  # [boot size]
    fb = normalized_faithfulness(picked, empty[idx].mean(1)[:, None], full[idx].mean(1)[:, None])
    lo, hi = quantiles(fb.T)
    return Pooled(per_draw.mean(0).tolist(), lo.tolist(), hi.tolist(), per_draw.tolist(), D, n_boot)
