"""Agreement and shallowness measures on hand-made tensors; the permutation test and the
intervals against slow references and known values."""

from __future__ import annotations

import math

import pytest
import torch

from interp.memories.agreement import (
    layer_agreement,
    majority_share,
    mean_interval,
    next_token,
    permutations,
    token_at,
    wilson,
)

# two windows of 4 (BOS=0 first); window 1 is cut short (-1 padding) and continues with 9 after it
WINDOWS = torch.tensor([[0, 5, 6, 7], [0, 8, -1, -1]])
NEXT_AFTER = torch.tensor([8, 9])


def test_token_lookups():
    refs = torch.tensor([1, 3, 5, -1])  # (w0, p1), (w0, p3), (w1, p1), empty
    assert token_at(WINDOWS, refs).tolist() == [5, 7, 8, -1]
    assert token_at(WINDOWS, refs, -1).tolist() == [0, 6, 0, -1]
    assert next_token(WINDOWS, NEXT_AFTER, refs).tolist() == [6, 8, 9, -1]


def test_majority_share():
    tokens = torch.tensor([[1, 1, 2, 1], [3, 4, 5, 6], [7, 7, 0, 0]])
    valid = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]])
    assert majority_share(tokens, valid).tolist() == [0.75, 0.25, 1.0]


def test_intervals_match_known_values():
    lo, hi = wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)  # the textbook Wilson interval
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert wilson(0, 0) == (0.0, 1.0)
    mean, lo, hi = mean_interval(torch.tensor([0.0, 1.0] * 50))
    assert mean == 0.5 and math.isclose(hi - mean, 1.959964 * 0.502519 / 10, rel_tol=1e-4)


def _planted(n: int = 40):
    # 40 windows "0 t t+1 ..." ; memory m's triggers all sit on token m, followed by token m+1
    windows = torch.stack([torch.tensor([0, i, i + 1, i + 2]) for i in range(n)])
    refs = torch.tensor([[i * 4 + 1] * 3 for i in range(n)])  # position 1 of window i, 3 times
    values = torch.stack([torch.tensor([i + 1, 999]) for i in range(n)])  # value promotes the next token
    return windows, refs, values


def test_layer_agreement_counts_matches_and_breaks_them_by_permutation():
    windows, refs, values = _planted()
    row = layer_agreement(windows, torch.full((40,), -1), refs, values, has_bos=True, n_permutations=200)
    assert row["n_memories"] == 40 and row["n_permutations"] == 200
    assert row["agreement"] == 1.0 and row["agreement_any"] == 1.0 and row["hit_rate"] == 1.0
    assert row["agreement_lo"] > 0.9 and row["agreement_hi"] == 1.0
    assert row["agreement_baseline"] < 0.1 and row["hit_rate_baseline"] < 0.1
    assert row["agreement_p"] == pytest.approx(1 / 201)  # no permutation reaches 40 of 40
    assert row["same_last"] == 1.0 and row["same_last_baseline"] < 1.0
    assert row["same_last_lo"] == row["same_last_hi"] == 1.0
    values[:, 0] = 999  # values that promote something else: no agreement, p = 1
    row = layer_agreement(windows, torch.full((40,), -1), refs, values, n_permutations=50)
    assert row["agreement"] == 0.0 and row["agreement_p"] == 1.0


def test_memories_without_triggers_are_left_out():
    windows, refs, values = _planted()
    refs[:10] = -1  # ten memories never active
    row = layer_agreement(windows, torch.full((40,), -1), refs, values, n_permutations=20)
    assert row["n_memories"] == 30 and row["agreement"] == 1.0 and row["n_shallow"] == 30


def test_permutation_test_equals_a_slow_loop():
    """Baseline and p-value equal a plain loop over the same permutations; on a 4-memory layer
    where all 4 agree, p estimates P(a random permutation fixes all 4) = 1/24."""
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(1, 6, (30, 8), generator=gen)
    windows[:, 0] = 0
    refs = torch.randint(0, 30 * 8, (25, 4), generator=gen)
    refs = refs[refs[:, 0] % 8 < 7]  # every top-1 trigger has a next token inside its window
    values = torch.randint(1, 6, (len(refs), 3), generator=gen)
    nexts = next_token(windows, torch.full((30,), -1), refs)
    row = layer_agreement(windows, torch.full((30,), -1), refs, values, n_permutations=300, seed=7)
    slow = []
    for perm in torch.cat(list(permutations(len(refs), 300, torch.Generator().manual_seed(7)))):
        slow.append(sum(int(nexts[perm[m], 0] == values[m, 0]) for m in range(len(refs))))
    observed = sum(int(nexts[m, 0] == values[m, 0]) for m in range(len(refs)))
    assert row["agreement"] == observed / len(refs)
    assert row["agreement_baseline"] == pytest.approx(sum(slow) / 300 / len(refs))
    assert row["agreement_p"] == pytest.approx((1 + sum(s >= observed for s in slow)) / 301)

    windows, refs, values = _planted(4)
    row = layer_agreement(windows, torch.full((4,), -1), refs, values, n_permutations=3000)
    assert row["agreement"] == 1.0 and abs(row["agreement_p"] - 1 / 24) < 0.012
