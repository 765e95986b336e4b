"""Pooled intervals over scoring draws and held-out prompts (interp.circuits.draws), on hand-made rows."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task

from interp.circuits.draws import check_draws, pooled, scoring_resamples
from interp.circuits.types import normalized_faithfulness
from interp.errors import WorkbenchError
from interp.stats import quantiles, resample_indices


def _rows(seed: int, shift: float = 0.0, sizes: int = 3, n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(sizes, n, generator=g) + torch.linspace(0, 1, sizes)[:, None] + shift


def test_one_draw_is_the_held_out_bootstrap():
    per, full, empty = _rows(0), torch.full((40,), 2.0) + 0.1 * torch.rand(40), torch.zeros(40)
    got = pooled([per], full, empty, n_boot=500, seed=3)
    idx = resample_indices(40, 500, 3)
    fb = normalized_faithfulness(per[:, idx].mean(2), empty[idx].mean(1), full[idx].mean(1))
    lo, hi = quantiles(fb)
    torch.testing.assert_close(torch.tensor(got.lo), lo.float())
    torch.testing.assert_close(torch.tensor(got.hi), hi.float())
    want = normalized_faithfulness(per.mean(1), empty.mean(), full.mean())
    torch.testing.assert_close(torch.tensor(got.faithfulness), want)


def test_scoring_draws_that_disagree_widen_the_interval_to_cover_both():
    full, empty = torch.full((40,), 2.0), torch.zeros(40)
    a, b = _rows(1), _rows(1, shift=0.6)  # the same held-out noise, circuits 0.3 apart in f
    alone = pooled([a], full, empty, n_boot=800)
    both = pooled([a, b], full, empty, n_boot=800)
    for i in range(3):
        fa, fb_ = both.per_draw[0][i], both.per_draw[1][i]
        assert abs(fb_ - fa - 0.3) < 1e-5
        assert both.faithfulness[i] == pytest.approx((fa + fb_) / 2, abs=1e-6)
        assert both.lo[i] <= fa and both.hi[i] >= fb_  # each draw's value lies inside the pooled interval
        assert both.hi[i] - both.lo[i] > alone.hi[i] - alone.lo[i] + 0.2


def test_scoring_resamples_keep_the_sample_first_and_draw_from_it(tiny_llama):
    task = scrambled_task(tiny_llama, 6, seed=1)
    draws = scoring_resamples(task, 4, seed=0)
    assert len(draws) == 4 and draws[0] is task
    rows = {tuple(r.tolist()) for r in task.clean}
    for d in draws[1:]:
        assert len(d) == len(task) and {tuple(r.tolist()) for r in d.clean} <= rows
    assert any(not torch.equal(d.clean, task.clean) for d in draws[1:])
    with pytest.raises(WorkbenchError, match="at least 1"):
        check_draws(0)
