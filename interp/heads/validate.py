"""Causal checks: ablate a head and measure the loss it should matter for.

Ablation goes through `blocks.{l}.attn.hook_z` [batch pos head d_head], which holds one
vector per *query* head (GQA included) before W_O, so one query head is removed without
touching the others that share its KV head. Zero-ablation sets the head's z to 0;
mean-ablation to its mean over all sequences and positions of the same probe data.

The loss is the repeated-half loss of repeated-token probes (BOS + segment + segment): the
mean cross-entropy of predicting tokens seg_len+2 .. 2*seg_len, the ones only induction can
predict (the first token of the second half cannot be). It is the task all three kinds serve:
induction heads do it, previous-token heads feed their keys, duplicate-token heads mark repeats.

Previous-token heads are also checked downstream: ablating one should lower the induction
scores of the induction heads in later layers, whose keys it feeds (`ablated_pattern_scores`).

Every effect is a mean over probe sequences of the per-sequence loss change, with a 95%
bootstrap interval over the sequences (`Effect`, interp.stats). The control for "these heads
matter more than any heads would" is `layer_matched_heads`: as many random heads from the same
layers (ablating heads late in the model moves the loss differently from early ones, so an
unmatched draw would compare layers, not heads).

To run many ablations at once the batch is replicated, one block of rows per ablated head,
and each layer's hook edits only its heads' rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.heads.patterns import expected_patterns
from interp.heads.scores import Scorer
from interp.stats import Interval, mean_intervals
from interp.types import ABLATION_MODES, Head, Progress, check_choice

if TYPE_CHECKING:
    from interp.models import Model

MODES = ABLATION_MODES


def repeated_half_loss(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
    """Mean next-token loss on the second half of BOS + segment + segment, its first token excluded."""
    seg_len = (tokens.shape[1] - 1) // 2
    if seg_len < 2 or tokens.shape[1] != 1 + 2 * seg_len:
        raise WorkbenchError(f"repeated-half loss needs BOS + 2 x segment (segment >= 2), got {tokens.shape[1]} tokens")
    logp = logits[:, seg_len + 1 : -1].float().log_softmax(-1)
    target = tokens[:, seg_len + 2 :].to(logp.device)
    return -logp.gather(-1, target[..., None]).squeeze(-1).mean(-1)


@torch.no_grad()
def head_means(model: Model, tokens: Int[Tensor, "batch pos"], layers: list[int],
               batch_size: int = 64) -> dict[int, Float[Tensor, "head d_head"]]:
    """Each head's z averaged over sequences and positions, for the given layers (in chunks of
    batch_size sequences, so long probe sets fit in memory; each pass stops after the last layer)."""
    names = [hooks.name("z", layer) for layer in sorted(layers)]
    sums: dict[int, Tensor] = {}
    for chunk in tokens.split(batch_size):
        cache = hooks.capture(model, chunk, names)
        for layer in layers:
            z = cache[hooks.name("z", layer)].float().sum((0, 1))
            sums[layer] = z if layer not in sums else sums[layer] + z
    count = tokens.shape[0] * tokens.shape[1]
    return {layer: total / count for layer, total in sums.items()}


def ablation_hooks(groups: list[list[Head]], n_rows: int, mode: str, means) -> list:
    """Hooks for a batch of len(groups) blocks of n_rows rows; block j ablates every head in groups[j]."""
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for j, group in enumerate(groups):
        for layer, head in group:
            by_layer.setdefault(layer, []).append((j, head))

    def hook(z: Tensor, hook, layer: int) -> Tensor:
        for j, head in by_layer[layer]:
            rows = slice(j * n_rows, (j + 1) * n_rows)
            z[rows, :, head] = 0.0 if mode == "zero" else means[layer][head].to(z.dtype)
        return z

    return [(hooks.name("z", layer), partial(hook, layer=layer)) for layer in by_layer]


def prepare_ablation(model: Model, tokens: Int[Tensor, "batch pos"], groups: list[list[Head]], mode: str,
                     batch_size: int = 64) -> tuple[Tensor, dict[int, Tensor]]:
    """(tokens on the model's device, per-head means of the ablated layers when mode is "mean").
    Unknown modes and heads the model does not have are refused with a one-line message."""
    check_choice(mode, MODES, "ablation")
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    bad = [tuple(h) for g in groups for h in g if len(h) != 2 or not (0 <= h[0] < n_layers and 0 <= h[1] < n_heads)]
    if bad:
        raise WorkbenchError(f"heads {bad} do not exist: the model has layers 0..{n_layers - 1} and heads 0..{n_heads - 1}")
    tokens = tokens.to(model.device)
    layers = sorted({layer for g in groups for layer, _ in g})
    means = head_means(model, tokens, layers, batch_size) if mode == "mean" and layers else {}
    return tokens, means


@torch.no_grad()
def ablated_sequence_losses(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    groups: list[list[Head]],
    mode: str = "mean",
    max_rows: int = 64,
    progress: Progress | None = None,
) -> Float[Tensor, "group batch"]:
    """Repeated-half loss of each sequence with each group of heads ablated together."""
    tokens, means = prepare_ablation(model, tokens, groups, mode)
    n = tokens.shape[0]
    per_call = max(1, max_rows // n)
    out = []
    for start in range(0, len(groups), per_call):
        chunk = groups[start : start + per_call]
        batch = tokens.repeat(len(chunk), 1)
        logits = model.run_with_hooks(batch, fwd_hooks=ablation_hooks(chunk, n, mode, means))
        out.append(repeated_half_loss(logits, batch).view(len(chunk), n).float().cpu())
        if progress is not None:
            progress(min(start + per_call, len(groups)), len(groups), f"{mode}-ablation")
    return torch.cat(out)


def ablated_losses(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    groups: list[list[Head]],
    mode: str = "mean",
    max_rows: int = 64,
    progress: Progress | None = None,
) -> Float[Tensor, " group"]:
    """Repeated-half loss (mean over sequences) with each group of heads ablated together."""
    return ablated_sequence_losses(model, tokens, groups, mode, max_rows, progress).mean(1)


@torch.no_grad()
def sequence_losses(model: Model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
    tokens = tokens.to(model.device)
    return repeated_half_loss(model(tokens), tokens).float().cpu()


def clean_loss(model: Model, tokens: Int[Tensor, "batch pos"]) -> float:
    return float(sequence_losses(model, tokens).mean())


@dataclass
class Effect:
    """Loss increases of one ablation: per sequence, and their mean with its interval."""

    per_sequence: Float[Tensor, " batch"]  # nats, ablated minus clean loss of each sequence
    interval: Interval  # mean over sequences with its 95% bootstrap interval

    @property
    def mean(self) -> float:
        return self.interval.value


def group_effects(model: Model, tokens: Int[Tensor, "batch pos"], groups: list[list[Head]], mode: str = "mean",
                  seed: int = 0, progress: Progress | None = None) -> list[Effect]:
    """Repeated-half loss increase of each group of heads ablated together, with intervals."""
    base = sequence_losses(model, tokens)
    diffs = ablated_sequence_losses(model, tokens, groups, mode, progress=progress) - base
    return [Effect(d, i) for d, i in zip(diffs, mean_intervals(diffs, seed=seed))]


def ablation_effects(
    model: Model, tokens: Int[Tensor, "batch pos"], heads: list[Head], modes=MODES, progress=None, seed: int = 0
) -> dict[str, list[Effect]]:
    """Loss increase (nats) on the repeated half when each head alone is ablated, per mode:
    one `Effect` per head (per-sequence changes, mean and 95% interval over the sequences)."""
    return {m: group_effects(model, tokens, [[h] for h in heads], m, seed, progress) for m in modes}


@torch.no_grad()
def ablated_pattern_scores(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    groups: list[list[Head]],
    watch: list[Head],
    kind: str = "induction",
    mode: str = "mean",
    max_rows: int = 64,
    measure: str = "target",
) -> Float[Tensor, "group watch"]:
    """The `kind` pattern score (`measure`, see interp.heads.scores) of each watched head with
    each group of heads ablated (an empty group gives the clean scores). The forward pass stops
    after the last watched layer."""
    check_choice(mode, MODES, "ablation")
    if not watch:
        return torch.zeros(len(groups), 0)
    tokens, means = prepare_ablation(model, tokens, groups, mode)
    n = tokens.shape[0]
    watch_layers = sorted({layer for layer, _ in watch})
    out = []
    for start in range(0, len(groups), max(1, max_rows // n)):
        chunk = groups[start : start + max(1, max_rows // n)]
        batch = tokens.repeat(len(chunk), 1)
        scorer = Scorer(expected_patterns(batch, (kind,)), measure)
        got = torch.zeros(len(chunk), len(watch))

        def score(pattern: Tensor, hook, layer: int, scorer=scorer, got=got) -> None:
            num, den = (x[:, 0].reshape(got.shape[0], n, -1).sum(1) for x in scorer(pattern))  # [group head]
            per_group = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)).cpu()
            for w, (wl, wh) in enumerate(watch):
                if wl == layer:
                    got[:, w] = per_group[:, wh]

        scorers = [(hooks.name("pattern", layer), partial(score, layer=layer)) for layer in watch_layers]
        hooks.run_until(model, batch, ablation_hooks(chunk, n, mode, means) + scorers,
                        last=hooks.name("pattern", watch_layers[-1]))
        out.append(got)
    return torch.cat(out)


def random_heads(n_layers: int, n_heads: int, count: int, seed: int = 0, exclude=()) -> list[Head]:
    """`count` distinct random heads from any layer, none of them in `exclude` (unmatched: see
    `layer_matched_heads` for the control the checks use)."""
    excluded = set(map(tuple, exclude))
    pool = [(layer, head) for layer in range(n_layers) for head in range(n_heads) if (layer, head) not in excluded]
    return random.Random(seed).sample(pool, min(count, len(pool)))


def layer_matched_heads(like: list[Head], n_heads: int, seed: int = 0, exclude=()) -> list[Head]:
    """Random heads matched by layer to `like`: as many from each layer as `like` has there,
    none of them in `like` or `exclude`. Refuses a layer without enough other heads."""
    excluded = set(map(tuple, exclude)) | set(map(tuple, like))
    per_layer: dict[int, int] = {}
    for layer, _ in like:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    rng = random.Random(seed)
    out: list[Head] = []
    for layer, count in sorted(per_layer.items()):
        pool = [(layer, h) for h in range(n_heads) if (layer, h) not in excluded]
        if len(pool) < count:
            raise WorkbenchError(f"layer {layer} has {len(pool)} heads outside the ones compared, "
                                 f"{count} needed for a layer-matched control")
        out += rng.sample(pool, count)
    return sorted(out)
