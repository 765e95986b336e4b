"""Agreement and shallowness measures on hand-made tensors."""

from __future__ import annotations

import torch

from interp.memories.agreement import layer_agreement, majority_share, next_token, token_at

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


def test_layer_agreement_counts_matches_and_breaks_them_by_permutation():
    # 40 windows "0 t t+1 ..." ; neuron n's triggers all sit on token n, followed by token n+1
    n = 40
    windows = torch.stack([torch.tensor([0, i, i + 1, i + 2]) for i in range(n)])
    refs = torch.tensor([[i * 4 + 1] * 3 for i in range(n)])  # position 1 of window i, 3 times
    values = torch.stack([torch.tensor([i + 1, 999]) for i in range(n)])  # value promotes the next token
    row = layer_agreement(windows, torch.full((n,), -1), refs, values, has_bos=True)
    assert row["agreement"] == 1.0 and row["agreement_any"] == 1.0 and row["hit_rate"] == 1.0
    assert row["agreement_baseline"] < 0.1 and row["hit_rate_baseline"] < 0.1
    assert row["same_last"] == 1.0 and row["same_last_baseline"] < 1.0
    values[:, 0] = 999  # values that promote something else: no agreement
    assert layer_agreement(windows, torch.full((n,), -1), refs, values)["agreement"] == 0.0
