"""The causal check of the in-context-learning score: held-out losses with sets of heads ablated
together. If induction heads carry the in-context learning, ablating them raises the loss of
late tokens more than that of early ones, undoing the ICL score's drop at the phase change."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.models import Model
from interp.train.metrics import (
    band_losses,
    icl_bands,
    icl_score,
    per_token_loss,
    repeat_bigram_gap,
    repeated_bigram_mask,
)
from interp.types import AblationMode, Head


@torch.no_grad()
def ablated_token_losses(model: Model, tokens: Int[Tensor, "batch pos"], heads: list[Head], mode: AblationMode = "mean",
                         batch_size: int = 64) -> Float[Tensor, "batch pos_minus_1"]:
    """Per-token next-token loss over `tokens` with every head in `heads` ablated together
    (mean: each head's z replaced by its mean over these same tokens; zero: set to 0).
    An empty list gives the clean losses."""
    from interp.heads.validate import ablation_hooks, prepare_ablation

    heads = [tuple(h) for h in heads]
    tokens, means = prepare_ablation(model, tokens, [heads], mode, batch_size)
    out = []
    for chunk in tokens.split(batch_size):
        edits = ablation_hooks([heads], len(chunk), mode, means) if heads else []
        out.append(per_token_loss(model.run_with_hooks(chunk, fwd_hooks=edits), chunk).cpu())
    return torch.cat(out)


def icl_under_ablation(model: Model, text: Int[Tensor, "batch pos"], head_sets: dict[str, list[Head]],
                       mode: AblationMode = "mean", batch_size: int = 64) -> list[dict]:
    """For no ablation and for each named set of heads ablated together: the held-out loss, the
    loss of the early and late bands, the ICL score (+ standard error) and the repeated-bigram gap."""
    mask = repeated_bigram_mask(text)
    early, late = icl_bands(text.shape[1])
    rows = []
    for name, heads in {"none": [], **head_sets}.items():
        losses = ablated_token_losses(model, text, heads, mode, batch_size)
        icl, se = icl_score(losses, text.shape[1])
        rows.append({"ablated": name, "heads": [list(h) for h in heads], "loss": float(losses.mean()),
                     "loss_early": float(band_losses(losses, early).mean()),
                     "loss_late": float(band_losses(losses, late).mean()),
                     "icl_score": icl, "icl_score_se": se, "repeat_bigram_gap": repeat_bigram_gap(losses, mask)})
    return rows
