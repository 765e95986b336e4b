"""Pattern scores: how well each head's attention matches an expected pattern (pure tensor math).

Three measures (`MEASURES`; "mul" and "abs" are accepted for TL's two):

- "target" (the default): Olsson et al. 2022's prefix-matching score, for every kind. Over the
  rows (destination positions) that have a target -- a cell the kind's pattern marks -- the mean
  attention the row puts on its target cells. On BOS + segment + segment an induction head's rows
  with a target are the repeated half (the first half has no earlier copy); a previous-token
  head's are all rows but BOS's. A perfect head of any kind scores 1, attention that never lands
  on a target 0, so one threshold means the same for every kind: "on average over the rows
  where it could, the head puts this share of its attention on the target". Rows are pooled
  over all sequences (each row counts once). With exclude_bos / exclude_current_token the
  excluded cells are removed from both the target and the row (the share of the row's
  remaining attention that is on target; a target lying only on excluded cells leaves the row
  without one). A set of sequences where no row has a target scores 0 (`target_rows` says so).
- "tl-mul": TransformerLens `detect_head`'s "mul" measure, sum(A * D) / sum(A) per sequence after zeroing
  the excluded BOS column / diagonal of A, then averaged over sequences (as TL does for a list
  of prompts). It divides by every row, including the rows with no target, so its ceiling is
  the share of rows with one: ~0.5 for induction and duplicate-token heads on repeated tokens,
  ~1 for previous-token heads. Kept for parity with TL.
- "tl-abs": TL's "abs", 1 - sum|A - D| / pos over the kept cells (TL rounds it to 3 decimals, we do not);
  1 is a perfect match, -1 a perfect mismatch. Kept for parity with TL.

`reference_scores` is the slow, obvious version (loops over sequences, heads and rows);
`Scorer` is what the detector runs inside the forward pass: it returns per-sequence sums
(numerator, denominator) that pool over batches. For 0/1 patterns "mul" and "abs" are linear
in A (sum|A - D| * M = sum A*M - 2 sum A*M*D + sum M*D for A in [0, 1]), and "target" needs
each row's mass on its targets: one batched contraction of the pattern with the kinds' patterns.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from torch import Tensor

MEASURES = ("target", "tl-mul", "tl-abs")
ALIASES = {"mul": "tl-mul", "abs": "tl-abs"}  # TL's own names for its two measures


def canonical_measure(measure: str) -> str:
    """The measure's name in `MEASURES` (TL's "mul" / "abs" accepted); ValueError if unknown."""
    measure = ALIASES.get(measure, measure)
    if measure not in MEASURES:
        raise ValueError(f"unknown score measure {measure!r}; choose one of {', '.join(MEASURES)}")
    return measure


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
    measure: str = "target",
) -> Float[Tensor, " head"]:
    """Slow and obvious: loop over sequences and heads (and rows, for "target"), no rounding."""
    measure = canonical_measure(measure)
    batch, n_heads, pos, _ = pattern.shape
    mask = keep_mask(pos, exclude_bos, exclude_current_token, pattern.device).double()
    if measure == "target":
        total = torch.zeros(n_heads, dtype=torch.float64)
        rows = 0
        for b in range(batch):
            for i in range(pos):
                target = expected[b, i].double() * mask[i]
                if target.sum() == 0:
                    continue  # nothing to attend to in this row
                rows += 1
                for h in range(n_heads):
                    a = pattern[b, h, i].double() * mask[i]
                    total[h] += (a * target).sum() / a.sum() if a.sum() > 0 else 0.0
        return total / rows if rows else total
    out = torch.zeros(batch, n_heads, dtype=torch.float64)
    for b in range(batch):
        for h in range(n_heads):
            a, d = pattern[b, h].double(), expected[b].double()
            if measure == "tl-mul":
                a = a * mask
                out[b, h] = (a * d).sum() / a.sum()
            else:
                out[b, h] = 1 - ((a - d).abs() * mask).sum() / pos
    return out.mean(0)


class Scorer:
    """Scores of every head of a layer against the expected patterns of one batch of sequences.

    Built once per batch (the expected patterns depend only on the tokens); called on each
    layer's pattern inside the forward pass. Returns (numerator, denominator) per sequence:
    the score over any set of sequences is sum(numerator) / sum(denominator).

    Device-following: the expected patterns are copied once to each device a layer's pattern
    lives on (a model split over devices), never the pattern to them. Everything a call returns
    lives on the pattern's device, and nothing in a call waits for the device (no host sync)."""

    def __init__(self, expected: Float[Tensor, "batch kind dest src"], measure: str = "target",
                 exclude_bos: bool = False, exclude_current_token: bool = False):
        batch, n_kinds, pos, _ = expected.shape
        self.measure = measure = canonical_measure(measure)
        self.excluding = exclude_bos or exclude_current_token
        mask = keep_mask(pos, exclude_bos, exclude_current_token, expected.device)
        targets = (expected * mask).float()  # [batch kind dest src]
        self.has_target = targets.sum(-1) > 0  # [batch kind dest]
        parts: dict[str, Tensor] = {"has_target": self.has_target}
        if measure == "target":
            # laid out once for the per-layer contraction: [batch * dest, src, kind]
            parts["targets"] = einops.rearrange(targets, "batch kind dest src -> (batch dest) src kind").contiguous()
            parts["row_has_target"] = einops.rearrange(self.has_target, "batch kind dest -> batch dest 1 kind").float()
            if self.excluding:
                parts["mask"] = mask[:, None, :]  # [dest 1 src]
        else:
            both = torch.cat([targets, mask.expand(batch, 1, pos, pos)], dim=1)
            parts["weights"] = einops.rearrange(both, "batch part dest src -> batch (dest src) part").contiguous()
            parts["target_cells"] = einops.reduce(targets, "batch kind dest src -> batch 1 kind", "sum")
        self._parts = {expected.device: parts}

    @property
    def target_rows(self) -> Float[Tensor, "batch kind"]:
        """Rows with at least one kept target cell, per sequence and kind."""
        return self.has_target.sum(-1).float()

    def parts(self, device: torch.device) -> dict[str, Tensor]:
        """The expected patterns' tensors on `device` (copied there on first use)."""
        if device not in self._parts:
            first = next(iter(self._parts.values()))
            self._parts[device] = {k: v.to(device) for k, v in first.items()}
        return self._parts[device]

    def __call__(self, pattern: Float[Tensor, "batch head dest src"]) -> tuple[Tensor, Tensor]:
        batch, n_heads, pos, _ = pattern.shape
        p = self.parts(pattern.device)
        if self.measure == "target":
            # one copy that converts to float32 and lays rows out for a batched contraction
            a = torch.empty(batch, pos, n_heads, pos, dtype=torch.float32, device=pattern.device)
            a.copy_(pattern.permute(0, 2, 1, 3))  # [batch dest head src]
            on_target = torch.bmm(a.view(batch * pos, n_heads, pos), p["targets"]).view(batch, pos, n_heads, -1)
            kept = (a * p["mask"]).sum(-1) if self.excluding else a.sum(-1)  # [batch dest head]
            share = on_target / kept[..., None].clamp_min(1e-30)  # [batch dest head kind]
            num = einops.rearrange((share * p["row_has_target"]).sum(1), "batch head kind -> batch kind head")
            den = einops.repeat(p["has_target"].sum(-1).float(), "batch kind -> batch kind head", head=n_heads)
            return num, den
        flat = einops.rearrange(pattern, "batch head dest src -> batch head (dest src)").float()
        sums = torch.bmm(flat, p["weights"])  # [batch head part]: sum A*M*D_k for each kind, then sum A*M
        a_md, a_m = sums[..., :-1], sums[..., -1:]
        if self.measure == "tl-mul":
            s = a_md / a_m
        else:
            s = 1 - (a_m - 2 * a_md + p["target_cells"]) / pos
        num = einops.rearrange(s, "batch head kind -> batch kind head")
        return num, torch.ones_like(num)


def pooled(num: Float[Tensor, "batch kind head"], den: Float[Tensor, "batch kind head"]) -> Float[Tensor, "kind head"]:
    """sum(num) / sum(den) over the batch; 0 where no sequence had a target row."""
    n, d = num.sum(0), den.sum(0)
    return torch.where(d > 0, n / d.clamp_min(1e-30), torch.zeros_like(n))


def fast_scores(
    pattern: Float[Tensor, "batch head dest src"],
    expected: Float[Tensor, "batch kind dest src"],
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    measure: str = "target",
) -> Float[Tensor, "kind head"]:
    """Scores of every head for every kind over the whole batch (0/1 expected patterns only)."""
    return pooled(*Scorer(expected, measure, exclude_bos, exclude_current_token)(pattern))
