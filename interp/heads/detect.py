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


def to_host(per_layer: dict[int, Tensor], n_layers: int) -> Tensor:
    """The per-layer tensors stacked on the CPU [layer ...]: one copy per device they live on."""
    by_device: dict[torch.device, list[int]] = {}
    for layer in range(n_layers):
        by_device.setdefault(per_layer[layer].device, []).append(layer)
    host: dict[int, Tensor] = {}
    for layers in by_device.values():
        host.update(zip(layers, torch.stack([per_layer[layer] for layer in layers]).cpu()))
    return torch.stack([host[layer] for layer in range(n_layers)])


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
    n_layers = model.info.n_layers
    # running sums per layer on that layer's device (float64), read back once at the end: no
    # host sync inside the forward pass, which would stall the device once per layer
    num: dict[int, Tensor] = {}
    den: dict[int, Tensor] = {}
    rows: Tensor | None = None
    chunks = tokens.split(batch_size)
    for i, chunk in enumerate(chunks):
        chunk = chunk.to(model.device)  # the input goes where the embedding is
        scorer = Scorer(expected_patterns(chunk, kinds), measure, exclude_bos, exclude_current_token)
        got = scorer.target_rows.sum(0).double()
        rows = got if rows is None else rows + got

        def score(pattern: Tensor, hook, layer: int, scorer=scorer) -> None:
            n, d = (x.sum(0).double() for x in scorer(pattern))
            num[layer] = n if layer not in num else num[layer] + n
            den[layer] = d if layer not in den else den[layer] + d

        scorers = [(hooks.name("pattern", layer), partial(score, layer=layer)) for layer in range(n_layers)]
        hooks.run_until(model, chunk, scorers, last=hooks.name("pattern", n_layers - 1))
        if progress is not None:
            progress(i + 1, len(chunks), "pattern scores")
    total = to_host(num, n_layers).transpose(0, 1)  # [kind layer head]
    count = to_host(den, n_layers).transpose(0, 1)
    mean = torch.where(count > 0, total / count.clamp_min(1e-30), torch.zeros_like(total)).float()
    rows = rows.cpu()
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
