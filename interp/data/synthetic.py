"""Synthetic probe sequences: BOS + a random segment + the same segment again.

On such a sequence a previous-token head attends to i-1, a duplicate-token head (second half)
to the earlier copy of its own token, and an induction head to the token *after* that copy,
the one it should predict. The loss on the second half is low only if the model does induction.

Which ids are drawn. `exclude_extremes=True` keeps the middle of the vocabulary: BPE
vocabularies are ordered by merge rank, so the lowest ids are bytes and the earliest (commonest)
merges and the highest ids the latest (rarest, sometimes barely trained) merges. We drop the
lowest 2% and the highest 10% of ids (for SmolLM2's 49,152: ids 983..44,236), and always the
tokenizer's special ids and the BOS id. Small in-house vocabularies keep at least half of their
ids (the cut shrinks). Within a segment ids are drawn without replacement when the pool is large
enough, so every token of the repeated half has exactly one earlier copy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model

LOW_FRACTION = 0.02  # commonest ids dropped: the first 2% of the vocabulary
HIGH_FRACTION = 0.10  # rarest ids dropped: the last 10% of the vocabulary


def bos_id(model: Model) -> int:
    """The BOS id of `model`; 0 for tokenizer-free models (tokens are then bare ids)."""
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    return int(bos) if bos is not None else 0


def token_pool(model: Model, exclude_extremes: bool = True) -> Tensor:
    """The ids repeated_tokens draws from (see the module docstring)."""
    tokenizer = model.tokenizer
    d_vocab = model.info.d_vocab
    lo, hi = 0, d_vocab
    if exclude_extremes:
        lo, hi = math.ceil(d_vocab * LOW_FRACTION), math.floor(d_vocab * (1 - HIGH_FRACTION))
        if hi - lo < d_vocab // 2:  # tiny vocabularies: keep the middle half at least
            lo, hi = d_vocab // 4, d_vocab // 4 + max(d_vocab // 2, 1)
    keep = torch.zeros(d_vocab, dtype=torch.bool)
    keep[lo:hi] = True
    special = set(getattr(tokenizer, "all_special_ids", None) or []) | {bos_id(model)}
    for i in special:
        if 0 <= i < d_vocab:
            keep[i] = False
    pool = keep.nonzero().flatten()
    if len(pool) < 2:
        raise WorkbenchError(f"the vocabulary ({d_vocab} ids) is too small for repeated-token probes")
    return pool


def repeated_tokens(
    model: Model, n_seqs: int, seg_len: int, seed: int = 0, exclude_extremes: bool = True
) -> Int[Tensor, "batch pos"]:
    """`n_seqs` sequences of BOS + a random segment of `seg_len` ids + the same segment
    (pos = 1 + 2 * seg_len), on the model's device (BOS is the tokenizer's, or id 0 for a
    tokenizer-free model)."""
    if n_seqs < 1 or seg_len < 1:
        raise WorkbenchError(f"need at least one sequence and a segment of at least one token, got {n_seqs} x {seg_len}")
    n_ctx = model.info.n_ctx
    if 1 + 2 * seg_len > n_ctx:
        raise WorkbenchError(
            f"1 + 2 x {seg_len} tokens exceed the model's context of {n_ctx}; use a segment of at most {(n_ctx - 1) // 2}"
        )
    pool = token_pool(model, exclude_extremes)
    gen = torch.Generator().manual_seed(seed)
    if len(pool) >= seg_len:
        idx = torch.stack([torch.randperm(len(pool), generator=gen)[:seg_len] for _ in range(n_seqs)])
    else:
        idx = torch.randint(len(pool), (n_seqs, seg_len), generator=gen)
    segment = pool[idx]
    bos = torch.full((n_seqs, 1), bos_id(model), dtype=torch.long)
    tokens = torch.cat([bos, segment, segment], dim=1)
    return tokens.to(model.device)
