"""Intervals over prompts: the percentile bootstrap, vectorised (pure tensor math).

Every figure we quote from a set of prompts (or probe sequences) is a statistic of per-prompt
values; its 95% interval comes from resampling the prompts with replacement `n_boot` times,
recomputing the statistic on each resample and taking the 2.5% and 97.5% quantiles. A ratio of
means (faithfulness F(C)/F(M)) is resampled as a ratio: both means come from the same resampled
prompts. The resampling is seeded, so an interval reproduces exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

N_BOOT = 1000  # bootstrap resamples
LEVEL = 0.95  # interval coverage


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    value: float  # the statistic on all prompts
    lo: float  # lower end of the interval
    hi: float  # upper end of the interval

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}

    def __iter__(self):  # value, lo, hi = interval
        return iter((self.value, self.lo, self.hi))

    def __getitem__(self, i: int) -> float:
        return (self.value, self.lo, self.hi)[i]

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"


def resample_indices(n: int, n_boot: int = N_BOOT, seed: int = 0) -> Int[Tensor, "boot n"]:
    """n_boot resamples of range(n) with replacement."""
    if n < 1:
        raise ValueError("cannot resample an empty set")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_boot, n), generator=gen)


def resampled_means(values: Float[Tensor, "... n"], idx: Int[Tensor, "boot n"]) -> Float[Tensor, "... boot"]:
    """The mean over the last axis of `values` on each resample."""
    v = values.double().cpu()
    return v[..., idx].mean(-1)


def quantiles(samples: Float[Tensor, "... boot"], level: float = LEVEL) -> tuple[Tensor, Tensor]:
    """The (1-level)/2 and (1+level)/2 quantiles over the last axis (NaN resamples ignored)."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    out = torch.nanquantile(samples.double(), q, dim=-1)
    return out[0], out[1]


def interval(value: float | Tensor, samples: Float[Tensor, " boot"], level: float = LEVEL) -> Interval:
    lo, hi = quantiles(samples, level)
    return Interval(float(value), float(lo), float(hi))


def mean_interval(values: Float[Tensor, " n"], n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Interval:
    """The mean of per-prompt values with its bootstrap interval."""
    values = values.flatten().double().cpu()
    idx = resample_indices(len(values), n_boot, seed)
    return interval(values.mean(), resampled_means(values, idx), level)


def mean_intervals(values: Float[Tensor, "k n"], n_boot: int = N_BOOT, seed: int = 0,
                   level: float = LEVEL) -> list[Interval]:
    """`mean_interval` of each row (the same resamples for every row)."""
    values = values.double().cpu()
    idx = resample_indices(values.shape[-1], n_boot, seed)
    boot = resampled_means(values, idx)
    lo, hi = quantiles(boot, level)
    return [Interval(float(m), float(a), float(b)) for m, a, b in zip(values.mean(-1), lo, hi)]
