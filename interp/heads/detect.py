"""Head detection: pattern scores of every head for every kind from one batched forward pass.

`head_scores` hooks each layer's `hook_pattern`, contracts it at once with the expected
patterns (interp.heads.scores, nothing is cached), and stops the forward pass right after the
last layer's pattern (the rest of the model is not needed). GQA models are scored per query
head: `hook_pattern` has one pattern per query head. Scores pool over the batches: a score over
many sequences is the same whatever the batch size.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.heads.patterns import PATTERNS, expected_patterns
from interp.heads.scores import Scorer, canonical_measure
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

KINDS = ("previous-token", "duplicate-token", "induction")


def check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    if not kinds:
        raise WorkbenchError(f"no head kind given; choose from {', '.join(PATTERNS)}")
    for k in kinds:
        if k not in PATTERNS:
            raise WorkbenchError(f"unknown head kind {k!r}; choose from {', '.join(PATTERNS)}")
    return kinds


def check_tokens(model: Model, tokens: Tensor) -> Tensor:
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise WorkbenchError(f"need token ids [batch, pos] with at least 2 positions, got shape {tuple(tokens.shape)}")
    if tokens.shape[1] > model.info.n_ctx:
        raise WorkbenchError(f"{tokens.shape[1]} tokens exceed the model's context of {model.info.n_ctx}; shorten the input")
    return tokens.long()


def check_measure(measure: str) -> str:
    """The measure's canonical name (interp.heads.scores.MEASURES; TL's "mul" / "abs" accepted)."""
    try:
        return canonical_measure(measure)
    except ValueError as e:
        raise WorkbenchError(str(e)) from None


@torch.no_grad()
def scores_and_rows(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    kinds=KINDS,
    *,
    measure: str = "target",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[dict[str, Float[Tensor, "layer head"]], dict[str, int]]:
    """`head_scores` and, per kind, how many rows (destination positions) had a target."""
    kinds = check_kinds(kinds)
    measure = check_measure(measure)
    tokens = check_tokens(model, tokens)
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    num = torch.zeros(len(kinds), n_layers, n_heads, dtype=torch.float64)
    den = torch.zeros(len(kinds), n_layers, n_heads, dtype=torch.float64)
    rows = torch.zeros(len(kinds), dtype=torch.float64)
    chunks = tokens.split(batch_size)
    for i, chunk in enumerate(chunks):
        chunk = chunk.to(model.device)
        scorer = Scorer(expected_patterns(chunk, kinds), measure, exclude_bos, exclude_current_token)
        rows += scorer.target_rows.sum(0).double().cpu()

        def score(pattern: Tensor, hook, layer: int, scorer=scorer) -> None:
            n, d = scorer(pattern)
            num[:, layer] += n.sum(0).double().cpu()
            den[:, layer] += d.sum(0).double().cpu()

        scorers = [(hooks.name("pattern", layer), partial(score, layer=layer)) for layer in range(n_layers)]
        hooks.run_until(model, chunk, scorers, last=hooks.name("pattern", n_layers - 1))
        if progress is not None:
            progress(i + 1, len(chunks), "pattern scores")
    mean = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)).float()
    return {k: mean[i] for i, k in enumerate(kinds)}, {k: int(rows[i]) for i, k in enumerate(kinds)}


def head_scores(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    kinds=KINDS,
    *,
    measure: str = "target",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> dict[str, Float[Tensor, "layer head"]]:
    """Score of every (layer, query head) for every kind over the sequences.

    `measure` (see interp.heads.scores): "target" (default), Olsson et al.'s prefix-matching
    score for every kind -- the mean attention on the target over the rows that have one, 1 for
    a perfect head of any kind; "tl-mul" / "tl-abs" ("mul" / "abs") are TL `detect_head`'s measures (per sequence,
    averaged over sequences), with its exclude_bos / exclude_current_token options."""
    return scores_and_rows(model, tokens, kinds, measure=measure, exclude_bos=exclude_bos,
                           exclude_current_token=exclude_current_token, batch_size=batch_size, progress=progress)[0]


def top_heads(scores: Float[Tensor, "layer head"], top: int) -> list[tuple[int, int, float]]:  # (layer, head, score)
    """The `top` highest-scoring heads as (layer, head, score), best first."""
    n_heads = scores.shape[1]
    flat = scores.flatten()
    values, idx = flat.topk(min(top, flat.numel()))
    return [(int(i) // n_heads, int(i) % n_heads, float(v)) for v, i in zip(values, idx)]
