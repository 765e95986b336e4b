"""Agreement between keys and values, and how shallow a layer's keys are (pure tensor math).

Inputs come from an index: `windows` [window, seq] token ids (-1 = padding), `next_after`
[window] the token after each window (-1 = none), trigger refs [memory, k] (global position
window * seq + pos, strongest first, -1 = empty) and each memory's value's top token ids
[memory, top]. A layer's memories are its neurons' "+" memories, then (for a gated MLP) their
"-" memories: one row each.

The population of a layer is its memories whose top-1 trigger has a known next token (n).

Agreement (Geva et al. 2021, sec. 4, as they measure it):
  agreement      share of the n memories whose value's top token is the token that followed
                 the key's top-1 trigger example; 95% Wilson interval over the n memories
  agreement_any  ... that followed any of the key's top-k trigger examples
  hit_rate       share of (memory, trigger) pairs whose next token is among the value's top-n
  *_baseline     the same with the trigger examples handed to random other memories of the same
                 layer (a permutation of the memories: same tokens, broken pairing), the mean
                 over `n_permutations` permutations (hit_rate: over the first 20)
  *_p            permutation test: p = (1 + #permutations with agreement >= observed) /
                 (1 + n_permutations), one-sided (do values agree with their own keys more
                 than with others'?)

Shallowness (a lexical measure; it does not measure whether a key is "semantic"):
  same_last      per memory, the share of its trigger examples (filled slots, >= 2) whose last
                 token is the memory's most common last token; the layer's value is the mean
                 over its memories, with a 95% normal interval (mean ± 1.96 sd / sqrt(n))
  same_bigram    the same for the last two tokens (previous token, trigger token)
  *_baseline     the same measures on random corpus positions (uniform over non-padding,
                 non-BOS positions), as many per memory as it has trigger examples
High = shallow keys: a memory fires on one token (or bigram) whatever came before it.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Int
from torch import Tensor

Z95 = 1.959963984540054  # the two-sided 95% normal quantile
HIT_PERMUTATIONS = 20  # permutations averaged for the hit-rate baseline (each is [memory, k, top] work)


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


def majority_share(tokens: Int[Tensor, "memory k"], valid: Bool[Tensor, "memory k"]) -> Tensor:
    """Per memory: the share of valid entries equal to the most common valid entry (0 if none)."""
    same = (tokens[:, :, None] == tokens[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    count = valid.sum(-1).clamp(min=1)
    return same.sum(-1).max(-1).values.float() / count


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (0, 1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Tensor, z: float = Z95) -> tuple[float, float, float]:
    """(mean, lower, upper): the mean of `values` with a normal interval mean ± z sd / sqrt(n)."""
    n = values.numel()
    if n == 0:
        return 0.0, 0.0, 0.0
    mean = float(values.float().mean())
    half = z * float(values.float().std()) / math.sqrt(n) if n > 1 else 0.0
    return mean, mean - half, mean + half


def permutations(n: int, count: int, generator: torch.Generator, chunk: int = 100):
    """`count` random permutations of range(n), `chunk` at a time ([c, n] each)."""
    for lo in range(0, count, chunk):
        yield torch.stack([torch.randperm(n, generator=generator) for _ in range(min(chunk, count - lo))])


def any_matrix(top_value: Int[Tensor, " memory"], nexts: Int[Tensor, "memory k"]) -> Bool[Tensor, "memory memory"]:
    """A[m, m2]: memory m's value's top token followed one of memory m2's trigger examples. Built
    by a join on the token (memories sorted by top token, each trigger's next token looked up),
    so the work is the number of matching pairs, not memories² x k."""
    n = len(top_value)
    order = top_value.argsort()
    ranked = top_value[order]
    ok = nexts >= 0
    owner = torch.arange(n)[:, None].expand_as(nexts)[ok]
    token = nexts[ok]
    lo, hi = torch.searchsorted(ranked, token), torch.searchsorted(ranked, token, right=True)
    count = hi - lo
    start = (lo - (count.cumsum(0) - count)).repeat_interleave(count)  # per pair: lo minus its offset
    rows = order[start + torch.arange(int(count.sum()))]
    out = torch.zeros(n, n, dtype=torch.bool)
    out[rows, owner.repeat_interleave(count)] = True
    return out


def _matches(top_value: Tensor, nexts: Tensor) -> tuple[Tensor, Tensor]:
    """Per memory (leading dims kept): top-1 trigger's next token == value's top token, and any
    of the top-k triggers' next tokens is."""
    first = nexts[..., 0] == top_value
    any_ = ((nexts == top_value[..., None]) & (nexts >= 0)).any(-1)
    return first, any_


def _hits(nexts: Tensor, value_ids: Tensor) -> Tensor:
    """(memory, trigger) pairs whose next token is among the memory's value's top tokens (count)."""
    return ((nexts[..., None] == value_ids[..., None, :]).any(-1) & (nexts >= 0)).sum((-1, -2))


def shallowness(windows: Tensor, refs: Tensor, has_bos: bool, generator: torch.Generator) -> dict[str, float]:
    """same_last / same_bigram with intervals and their random-position baselines (module doc)."""
    valid = refs >= 0
    keep = valid.sum(-1) >= 2
    refs, valid = refs[keep], valid[keep]
    seq = windows.shape[1]
    flat = torch.nonzero((windows >= 0).flatten()).squeeze(-1)
    if has_bos:
        flat = flat[flat % seq != 0]
    rand = flat[torch.randint(len(flat), refs.shape, generator=generator)] if len(flat) else refs
    rand = torch.where(valid, rand, torch.full_like(rand, -1))
    out: dict[str, float] = {"n_shallow": int(keep.sum())}
    for name, positions in (("", refs), ("_baseline", rand)):
        last, prev = token_at(windows, positions), token_at(windows, positions, -1)
        ok = valid & (last >= 0)
        bigram = last * (1 << 31) + prev.clamp(min=0)
        for measure, tokens, mask in (("same_last", last, ok), ("same_bigram", bigram, ok & (prev >= 0))):
            mean, lo, hi = mean_interval(majority_share(tokens, mask))
            out[measure + name], out[measure + name + "_lo"], out[measure + name + "_hi"] = mean, lo, hi
    return out


def layer_agreement(
    windows: Int[Tensor, "window seq"],
    next_after: Int[Tensor, " window"],
    refs: Int[Tensor, "memory k"],
    value_ids: Int[Tensor, "memory top"],
    has_bos: bool = True,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """The agreement and shallowness numbers of one layer's memories (see the module doc);
    `has_bos`: position 0 of every window is BOS, never a trigger (left out of the random
    positions)."""
    gen = torch.Generator().manual_seed(seed)
    value_ids = value_ids.long()
    nexts = next_token(windows, next_after, refs.long())
    pop = nexts[:, 0] >= 0
    nexts, top, value_ids = nexts[pop], value_ids[pop, 0], value_ids[pop]
    n = int(pop.sum())
    first, any_ = _matches(top, nexts)
    agree, agree_any = int(first.sum()), int(any_.sum())
    hits, pairs = int(_hits(nexts, value_ids)), max(int((nexts >= 0).sum()), 1)

    base_first = base_any = ge_first = ge_any = base_hits = done = 0
    first, flat, rows = nexts[:, 0], any_matrix(top, nexts).flatten() if n else None, torch.arange(n) * n
    for perm in permutations(n, n_permutations if n else 0, gen):  # memory m gets the triggers of perm[m]
        f = (first.take(perm) == top).sum(-1)
        a = flat.take(rows + perm).sum(-1)
        base_first, base_any = base_first + int(f.sum()), base_any + int(a.sum())
        ge_first, ge_any = ge_first + int((f >= agree).sum()), ge_any + int((a >= agree_any).sum())
        if done < HIT_PERMUTATIONS:
            base_hits += int(_hits(nexts[perm[: HIT_PERMUTATIONS - done]], value_ids).sum())
        done += len(perm)
    n_hit_perms = min(done, HIT_PERMUTATIONS)
    denom = max(n, 1) * max(done, 1)
    lo, hi = wilson(agree, n)
    lo_any, hi_any = wilson(agree_any, n)
    return {
        "n_memories": n,
        "agreement": agree / max(n, 1),
        "agreement_lo": lo,
        "agreement_hi": hi,
        "agreement_baseline": base_first / denom,
        "agreement_p": (1 + ge_first) / (1 + done),
        "agreement_any": agree_any / max(n, 1),
        "agreement_any_lo": lo_any,
        "agreement_any_hi": hi_any,
        "agreement_any_baseline": base_any / denom,
        "agreement_any_p": (1 + ge_any) / (1 + done),
        "hit_rate": hits / pairs,
        "hit_rate_baseline": base_hits / (pairs * max(n_hit_perms, 1)),
        "n_permutations": done,
        **shallowness(windows, refs, has_bos, gen),
    }
