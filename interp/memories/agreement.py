"""Agreement between keys and values, and how shallow each layer's keys are (pure tensor math).

Inputs come from an index: `windows` [window, seq] token ids (-1 = padding), `next_after`
[window] the token after each window (-1 = none), trigger refs [neuron, k] (global position
window * seq + pos, -1 = empty) and each value's top token ids [neuron, top].

Per layer:
  agreement      fraction of neurons whose value's top token is the next token after the key's
                 top-1 trigger example (Geva et al. 2021, sec. 4)
  agreement_any  ... after any of the key's top-k trigger examples
  hit_rate       fraction of (neuron, trigger) pairs whose next token is among the value's top-n
  *_baseline     the same with trigger examples handed to a random other neuron of the same
                 layer (a permutation, averaged over several): same tokens, broken pairing
  same_last      how often a neuron's trigger examples end in the same token (share of the most
                 common last token), vs `same_last_baseline` for random corpus positions;
                 `same_bigram` likewise for the last two tokens. High = shallow (lexical) keys.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int
from torch import Tensor


def token_at(windows: Int[Tensor, "window seq"], refs: Int[Tensor, "*shape"], shift: int = 0) -> Int[Tensor, "*shape"]:
    """Token at global position ref + shift within the same window (-1 outside it or for ref -1)."""
    seq = windows.shape[1]
    w, p = refs.div(seq, rounding_mode="floor"), refs % seq + shift
    ok = (refs >= 0) & (p >= 0) & (p < seq)
    out = windows[w.clamp(min=0), p.clamp(0, seq - 1)].long()
    return torch.where(ok, out, torch.full_like(out, -1))


def next_token(
    windows: Int[Tensor, "window seq"], next_after: Int[Tensor, " window"], refs: Int[Tensor, "*shape"]
) -> Int[Tensor, "*shape"]:
    """The token that follows each trigger position in the corpus (-1 when unknown): the next
    token of the window, or the window's `next_after` at its last real token."""
    inside = token_at(windows, refs, 1)
    at_end = (refs >= 0) & (inside < 0)
    after = next_after[refs.div(windows.shape[1], rounding_mode="floor").clamp(min=0)].long()
    return torch.where(at_end, after, inside)


def majority_share(tokens: Int[Tensor, "neuron k"], valid: Bool[Tensor, "neuron k"]) -> Tensor:
    """Per neuron: the share of valid entries equal to the most common valid entry (0 if none)."""
    same = (tokens[:, :, None] == tokens[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    count = valid.sum(-1).clamp(min=1)
    return same.sum(-1).max(-1).values.float() / count


def _agreements(top_value: Tensor, nexts: Tensor, value_top_n: Tensor) -> tuple[float, float, float]:
    valid = nexts >= 0
    first = (nexts[:, 0] == top_value) & valid[:, 0]
    any_ = ((nexts == top_value[:, None]) & valid).any(-1)
    hits = ((nexts[:, :, None] == value_top_n[:, None, :]).any(-1) & valid).sum()
    return float(first.float().mean()), float(any_.float().mean()), float(hits) / max(int(valid.sum()), 1)


def layer_agreement(
    windows: Int[Tensor, "window seq"],
    next_after: Int[Tensor, " window"],
    refs: Int[Tensor, "neuron k"],
    value_ids: Int[Tensor, "neuron top"],
    has_bos: bool = True,
    n_permutations: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """The agreement and shallowness numbers of one layer (see the module doc); `has_bos`:
    position 0 of every window is BOS, never a trigger (left out of the random baseline)."""
    gen = torch.Generator().manual_seed(seed)
    value_ids = value_ids.long()
    nexts = next_token(windows, next_after, refs)
    top = value_ids[:, 0]
    agree, agree_any, hit = _agreements(top, nexts, value_ids)
    base = torch.tensor([0.0, 0.0, 0.0])
    for _ in range(n_permutations):
        perm = torch.randperm(refs.shape[0], generator=gen)
        base += torch.tensor(_agreements(top, nexts[perm], value_ids))
    base /= max(n_permutations, 1)

    valid = refs >= 0
    last = token_at(windows, refs)
    prev = token_at(windows, refs, -1)
    bigram = last * (1 << 31) + prev.clamp(min=0)
    same_last = majority_share(last, valid & (last >= 0))
    same_bigram = majority_share(bigram, valid & (prev >= 0))
    # baseline: the same measure for random valid corpus positions, k per neuron
    seq = windows.shape[1]
    flat = torch.nonzero((windows >= 0).flatten()).squeeze(-1)
    if has_bos:
        flat = flat[flat % seq != 0]
    rand = flat[torch.randint(len(flat), refs.shape, generator=gen)] if len(flat) else refs
    r_last, r_prev = token_at(windows, rand), token_at(windows, rand, -1)
    r_bigram = r_last * (1 << 31) + r_prev.clamp(min=0)
    return {
        "agreement": agree,
        "agreement_baseline": float(base[0]),
        "agreement_any": agree_any,
        "agreement_any_baseline": float(base[1]),
        "hit_rate": hit,
        "hit_rate_baseline": float(base[2]),
        "same_last": float(same_last.mean()),
        "same_last_baseline": float(majority_share(r_last, r_last >= 0).mean()),
        "same_bigram": float(same_bigram.mean()),
        "same_bigram_baseline": float(majority_share(r_bigram, r_prev >= 0).mean()),
    }
