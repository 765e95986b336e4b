"""Head detection: pattern scores of every head for every kind from one batched forward pass.

`head_scores` hooks each layer's `hook_pattern`, contracts it at once with the expected
patterns (interp.heads.scores, nothing is cached), and stops the forward pass right after the
last layer's pattern (the rest of the model is not needed). GQA models are scored per query
head: `hook_pattern` has one pattern per query head.
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
from interp.heads.scores import ERROR_MEASURES, fast_score_parts, score_weights, scores_from_parts
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


@torch.no_grad()
def head_scores(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    kinds=KINDS,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
    batch_size: int = 32,
    progress: Progress | None = None,
) -> dict[str, Float[Tensor, "layer head"]]:
    """Score of every (layer, query head) for every kind, averaged over the sequences.

    Options and measures as in TL's `detect_head` (see interp.heads.scores)."""
    kinds = check_kinds(kinds)
    if error_measure not in ERROR_MEASURES:
        raise WorkbenchError(f"unknown error measure {error_measure!r}; choose 'mul' or 'abs'")
    tokens = check_tokens(model, tokens)
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    total = torch.zeros(len(kinds), n_layers, n_heads, dtype=torch.float64)
    chunks = tokens.split(batch_size)
    for i, chunk in enumerate(chunks):
        chunk = chunk.to(model.device)
        expected = expected_patterns(chunk, kinds)
        weights = score_weights(expected, exclude_bos, exclude_current_token)

        def score(pattern: Tensor, hook, layer: int, expected=expected, weights=weights) -> None:
            per_seq = scores_from_parts(fast_score_parts(pattern, weights), expected, weights, error_measure)
            total[:, layer] += per_seq.sum(0).double().cpu()

        scorers = [(hooks.name("pattern", layer), partial(score, layer=layer)) for layer in range(n_layers)]
        hooks.run_until(model, chunk, scorers, last=hooks.name("pattern", n_layers - 1))
        if progress is not None:
            progress(i + 1, len(chunks), "pattern scores")
    mean = (total / tokens.shape[0]).float()
    return {k: mean[i] for i, k in enumerate(kinds)}


def top_heads(scores: Float[Tensor, "layer head"], top: int) -> list[tuple[int, int, float]]:  # (layer, head, score)
    """The `top` highest-scoring heads as (layer, head, score), best first."""
    n_heads = scores.shape[1]
    flat = scores.flatten()
    values, idx = flat.topk(min(top, flat.numel()))
    return [(int(i) // n_heads, int(i) % n_heads, float(v)) for v, i in zip(values, idx)]
