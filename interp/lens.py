"""The logit lens: read the residual stream after every layer through the final norm and the
unembedding, and see which token each position would predict if the model stopped there
(nostalgebraist 2020).

Row 0 is the embedding (before any block), row l+1 is the residual stream after block l; the last
row is exactly the model's own next-token distribution. `project` is the pure tensor step
(residuals -> logits); `lens_residuals` runs the model once, keeping only the residual hooks;
`final_predictions` reads the model's top next tokens from them (cheap: one row), and
`logit_lens` projects every row (the dashboard shows the predictions before the lens is ready).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class LensResult:
    str_tokens: list[str]  # the prompt's tokens as strings (BOS included when prepended)
    layer_names: list[str]  # one per row: "embed", "L0", "L1", ... (row l+1 = after block l)
    top_ids: Int[Tensor, "layer pos k"]  # the k most likely next tokens per layer and position
    top_probs: Float[Tensor, "layer pos k"]  # their probabilities (softmax over the vocabulary)
    top_tokens: list[list[list[str]]]  # top_ids decoded: [layer][pos][k]
    final_rank: Int[Tensor, "layer pos"]  # rank, at each layer, of the token the model finally predicts


def residual_hook_names(n_layers: int) -> list[str]:
    """The hooks whose values the lens reads: the embedding stream, then each block's output."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]


def project(
    resid: Float[Tensor, "layer pos d_model"], ln_final, unembed
) -> Float[Tensor, "layer pos d_vocab"]:
    """Residual streams -> logits through the model's final norm and unembedding (pure: any
    callables, so it can be checked on hand-made modules)."""
    return unembed(ln_final(resid))


@torch.no_grad()
def lens_residuals(model: Model, prompt: str | Tensor) -> tuple[Int[Tensor, "1 pos"], Float[Tensor, "layer pos d_model"]]:
    """(tokens, residual streams [embedding + one row per block, pos, d_model]) from one forward
    pass of `prompt` (text, or a [pos] / [1, pos] token tensor), keeping only the residual hooks."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt.reshape(1, -1).to(model.device)
    names = residual_hook_names(model.info.n_layers)
    keep = set(names)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in keep)
    return tokens, torch.stack([cache[name][0] for name in names])


# -- reading a residual direction (not a whole residual stream) through the unembedding ----------


def final_norm(model: Model) -> tuple[str | None, Tensor | None]:
    """(kind, weight): the final norm's type ("LN", "RMS" or None) and its learned weight."""
    kind = model.info.normalization
    if kind is None:
        return None, None
    ln = model.bridge.ln_final
    w = getattr(ln, "w", None)
    if w is None:
        w = getattr(ln, "weight", None)
    return ("LN" if kind.startswith("LN") else "RMS"), (None if w is None else w.detach())


def norm_linear(
    vectors: Float[Tensor, "n d_model"], kind: str | None, weight: Float[Tensor, " d_model"] | None
) -> Float[Tensor, "n d_model"]:
    """The data-independent part of the final norm applied to directions in the residual stream:
    (v - mean(v)) * w for LayerNorm (the centring is linear: kept), v * w for RMSNorm, v without
    a final norm. The norm's 1/scale depends on the whole residual stream, not on the direction,
    and is positive, so it is left out; so are the norm's bias and b_U (the same for every v)."""
    if kind == "LN":
        vectors = vectors - vectors.mean(-1, keepdim=True)
    if weight is not None:
        vectors = vectors * weight
    return vectors


def direction_logits(model: Model, vectors: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
    """What each residual direction does to the logits: norm_linear(v) @ W_U, in float32."""
    kind, weight = final_norm(model)
    v = norm_linear(vectors.float(), kind, None if weight is None else weight.float())
    return v @ model.bridge.W_U.detach().float()


def _norm_and_unembed(model: Model):
    bridge = model.bridge
    return getattr(bridge, "ln_final", None) or (lambda x: x), bridge.unembed


@torch.no_grad()
def final_predictions(model: Model, resid: Float[Tensor, "layer pos d_model"], k: int = 10) -> list[tuple[str, float]]:
    """The model's own top-k next tokens after the last position, read from the last residual row
    (which is exactly what the model's forward pass predicts)."""
    ln_final, unembed = _norm_and_unembed(model)
    probs = project(resid[-1:, -1:], ln_final, unembed)[0, 0].float().softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]))
    return [(model.tokenizer.decode([int(i)]), float(p)) for i, p in zip(top.indices, top.values)]


@torch.no_grad()
def logit_lens(model: Model, prompt: str | Tensor, k: int = 1, chunk: int = 8,
               residuals: tuple[Tensor, Tensor] | None = None, last: int | None = None) -> LensResult:
    """The top-k tokens and probabilities at every layer and position of `prompt` (text, or a
    [pos] / [1, pos] token tensor), or only at its `last` positions. Layers are projected `chunk`
    at a time to bound memory. `residuals` = lens_residuals(model, prompt), when the caller
    already ran the forward pass."""
    if k < 1:
        raise WorkbenchError(f"k must be at least 1, got {k}")
    if last is not None and last < 1:
        raise WorkbenchError(f"the lens needs at least 1 position, got {last}")
    tokens, resid = residuals if residuals is not None else lens_residuals(model, prompt)
    if last is not None:
        tokens, resid = tokens[:, -last:], resid[:, -last:]
    resid = resid.to(model.device)
    ln_final, unembed = _norm_and_unembed(model)
    ids, probs, ranks = [], [], []
    final_pred = project(resid[-1:], ln_final, unembed)[0].argmax(-1)  # [pos]
    for start in range(0, resid.shape[0], chunk):
        logits = project(resid[start : start + chunk], ln_final, unembed).float()
        p = logits.softmax(-1)
        top = p.topk(min(k, p.shape[-1]), dim=-1)
        ids.append(top.indices)
        probs.append(top.values)
        target = logits.gather(-1, final_pred.expand(logits.shape[0], -1).unsqueeze(-1))
        ranks.append((logits > target).sum(-1))
    top_ids = torch.cat(ids).cpu()
    decode = model.tokenizer.decode
    vocab = {int(i): decode([int(i)]) for i in top_ids.unique()}
    return LensResult(
        str_tokens=model.to_str_tokens(tokens[0]),
        layer_names=["embed"] + [f"L{layer}" for layer in range(model.info.n_layers)],
        top_ids=top_ids,
        top_probs=torch.cat(probs).cpu(),
        top_tokens=[[[vocab[int(i)] for i in pos] for pos in layer] for layer in top_ids],
        final_rank=torch.cat(ranks).cpu(),
    )
