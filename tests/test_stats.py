"""Bootstrap intervals: reproducible, exact on constant data, the textbook width on normal data."""

from __future__ import annotations

import math

import pytest
import torch

from interp.stats import Interval, mean_interval, mean_intervals, resample_indices


def test_constant_values_have_a_point_interval():
    assert mean_interval(torch.full((7,), 2.5)) == Interval(2.5, 2.5, 2.5)


def test_interval_width_matches_the_normal_theory():
    x = torch.randn(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = mean_interval(x, n_boot=4000)
    half = 1.96 * float(x.std()) / math.sqrt(len(x))
    assert got.lo < got.value < got.hi
    assert (got.hi - got.lo) / 2 == pytest.approx(half, rel=0.1)
    assert got.value == pytest.approx(float(x.mean()))


def test_seeded_and_shared_across_rows():
    x = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
    assert mean_intervals(x, seed=4) == mean_intervals(x, seed=4) != mean_intervals(x, seed=5)
    assert mean_intervals(x, seed=4)[1] == mean_interval(x[1], seed=4)  # the same resamples per row
    assert resample_indices(5, 10).shape == (10, 5)
    assert f"{Interval(0.5, 0.25, 0.75):.2f}" == "0.50 [0.25, 0.75]"
