"""Pattern scores: how well each head's attention matches an expected pattern (pure tensor math).

Both measures follow TransformerLens's `detect_head`, per sequence, then averaged over
sequences (as TL does for a list of prompts):

- "mul": the fraction of attention on the expected cells, sum(A * D) / sum(A), after zeroing
  the BOS column (exclude_bos) and the diagonal (exclude_current_token) of A.
- "abs": 1 - sum|A - D| / pos over the kept cells (TL's `1 - mean|A - D| * pos`; TL rounds it
  to 3 decimals, we do not). 1 is a perfect match, -1 a perfect mismatch.

`reference_scores` is the slow, obvious version (per sequence, per head); `fast_scores` is the
one the detector uses inside the forward pass: for 0/1 patterns both measures are linear in A,
sum|A - D| * M = sum A*M - 2 sum A*M*D + sum M*D (A in [0, 1]), so one batched matmul of the
pattern against [M*D for each kind, M] gives every score of a layer.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from torch import Tensor

ERROR_MEASURES = ("mul", "abs")


def keep_mask(pos: int, exclude_bos: bool, exclude_current_token: bool, device=None) -> Float[Tensor, "dest src"]:
    """1 on the cells that are compared, 0 on the excluded BOS column / diagonal."""
    mask = torch.ones(pos, pos, device=device)
    if exclude_bos:
        mask[:, 0] = 0
    if exclude_current_token:
        mask.fill_diagonal_(0)
    return mask


def reference_scores(
    pattern: Float[Tensor, "batch head dest src"],
    expected: Float[Tensor, "batch dest src"],
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
) -> Float[Tensor, " head"]:
    """Slow and obvious: loop over sequences and heads, TL's formulas without rounding."""
    batch, n_heads, pos, _ = pattern.shape
    mask = keep_mask(pos, exclude_bos, exclude_current_token, pattern.device)
    out = torch.zeros(batch, n_heads, dtype=torch.float64)
    for b in range(batch):
        for h in range(n_heads):
            a, d = pattern[b, h].double(), expected[b].double()
            if error_measure == "mul":
                a = a * mask
                out[b, h] = (a * d).sum() / a.sum()
            else:
                out[b, h] = 1 - ((a - d).abs() * mask).sum() / pos
    return out.mean(0)


def fast_score_parts(
    pattern: Float[Tensor, "batch head dest src"],
    weights: Float[Tensor, "batch part dest src"],
) -> Float[Tensor, "batch head part"]:
    """sum over (dest, src) of pattern * weights for every head and part, as one bmm."""
    a = einops.rearrange(pattern.float(), "batch head dest src -> batch head (dest src)")
    w = einops.rearrange(weights.float(), "batch part dest src -> batch (dest src) part")
    return torch.bmm(a, w)


def score_weights(
    expected: Float[Tensor, "batch kind dest src"], exclude_bos: bool, exclude_current_token: bool
) -> Float[Tensor, "batch part dest src"]:
    """[M * D_k for each kind k, M]: what fast_score_parts contracts the pattern with."""
    batch, _, pos, _ = expected.shape
    mask = keep_mask(pos, exclude_bos, exclude_current_token, expected.device)
    return torch.cat([expected * mask, mask.expand(batch, 1, pos, pos)], dim=1)


def scores_from_parts(
    parts: Float[Tensor, "batch head part"],
    expected: Float[Tensor, "batch kind dest src"],
    weights: Float[Tensor, "batch part dest src"],
    error_measure: str,
) -> Float[Tensor, "batch kind head"]:
    """Per-sequence scores from the contracted parts (the last part is sum A*M)."""
    a_md, a_m = parts[..., :-1], parts[..., -1:]
    if error_measure == "mul":
        s = a_md / a_m
    else:
        pos = expected.shape[-1]
        md = einops.reduce(weights[:, :-1], "batch kind dest src -> batch 1 kind", "sum")
        s = 1 - (a_m - 2 * a_md + md) / pos
    return einops.rearrange(s, "batch head kind -> batch kind head")


def fast_scores(
    pattern: Float[Tensor, "batch head dest src"],
    expected: Float[Tensor, "batch kind dest src"],
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
) -> Float[Tensor, "batch kind head"]:
    """Per-sequence scores of every head for every kind (0/1 expected patterns only)."""
    weights = score_weights(expected, exclude_bos, exclude_current_token)
    return scores_from_parts(fast_score_parts(pattern, weights), expected, weights, error_measure)
