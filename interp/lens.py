"""The logit lens: read the residual stream after every layer through the final norm and the
unembedding, and see which token each position would predict if the model stopped there
(nostalgebraist 2020).

Row 0 is the embedding (before any block), row l+1 is the residual stream after block l; the last
row is exactly the model's own next-token distribution. `project` is the pure tensor step
(residuals -> logits); `lens_residuals` runs the model once, keeping only the residual hooks (the
pass stops after the last block: the forward's own unembedding is never computed);
`final_predictions` reads the model's top next tokens from them (cheap: one row), and
`logit_lens` projects every row (the dashboard shows the predictions before the lens is ready).
`logit_lens_reference` is the slow, obviously correct per-layer loop the fast path is tested against.

Where the time goes (SmolLM2-135M, 31 rows x n positions through a 49,152-token unembedding): the
projection is one [rows, d_model] x [d_model, vocab] matmul per chunk of rows, each row projected
once (the last layer's rows give the final prediction that the ranks are measured against, so
they are projected first and not again); per row the top-k is taken on the logits (softmax is
monotone), and the probabilities are exp(top - max) / sum(exp(logits - max)) with the sum taken
in place, so no softmax of the whole vocabulary is ever written out.

Placement: the residual streams go to the unembedding's device (W_U's), not model.device, so a
model split over devices (final norm and unembedding on the last one) is read where it lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
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
    return [hooks.name("resid_pre", 0)] + hooks.names("resid_post", range(n_layers))


def project(
    resid: Float[Tensor, "layer pos d_model"], ln_final, unembed
) -> Float[Tensor, "layer pos d_vocab"]:
    """Residual streams -> logits through the model's final norm and unembedding (pure: any
    callables, so it can be checked on hand-made modules)."""
    return unembed(ln_final(resid))


def unembed_device(model: Model) -> torch.device:
    """Where the final norm and unembedding live (the last device of a split model)."""
    return model.bridge.W_U.device


@torch.no_grad()
def lens_residuals(model: Model, prompt: str | Tensor) -> tuple[Int[Tensor, "1 pos"], Float[Tensor, "layer pos d_model"]]:
    """(tokens, residual streams [embedding + one row per block, pos, d_model]) from one forward
    pass of `prompt` (text, or a [pos] / [1, pos] token tensor), keeping only the residual hooks;
    the pass stops after the last block. The rows are gathered on the unembedding's device."""
    from interp.hooks import capture

    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt.reshape(1, -1).to(model.device)
    names = residual_hook_names(model.info.n_layers)
    got = capture(model, tokens, names)
    device = unembed_device(model)
    return tokens, torch.stack([got[name][0].to(device) for name in names])


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
    """What each residual direction does to the logits: norm_linear(v) @ W_U, in float32, on
    W_U's device."""
    kind, weight = final_norm(model)
    W_U = model.bridge.W_U.detach()
    v = norm_linear(vectors.to(W_U.device).float(), kind, None if weight is None else weight.to(W_U.device).float())
    return v @ W_U.float()


def _norm_and_unembed(model: Model):
    bridge = model.bridge
    return getattr(bridge, "ln_final", None) or (lambda x: x), bridge.unembed


@torch.no_grad()
def final_predictions(model: Model, resid: Float[Tensor, "layer pos d_model"], k: int = 10) -> list[tuple[str, float]]:
    """The model's own top-k next tokens after the last position, read from the last residual row
    (which is exactly what the model's forward pass predicts)."""
    ln_final, unembed = _norm_and_unembed(model)
    probs = project(resid[-1:, -1:].to(unembed_device(model)), ln_final, unembed)[0, 0].float().softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]))
    return [(model.tokenizer.decode([int(i)]), float(p)) for i, p in zip(top.indices.tolist(), top.values.tolist())]


def _check_lens_args(k: int, last: int | None) -> None:
    if k < 1:
        raise WorkbenchError(f"k must be at least 1, got {k}")
    if last is not None and last < 1:
        raise WorkbenchError(f"the lens needs at least 1 position, got {last}")


def _lens_inputs(model: Model, prompt, residuals, last):
    tokens, resid = residuals if residuals is not None else lens_residuals(model, prompt)
    if last is not None:
        tokens, resid = tokens[:, -last:], resid[:, -last:]
    return tokens, resid.to(unembed_device(model))


def _result(model: Model, tokens: Tensor, top_ids: Tensor, top_probs: Tensor, final_rank: Tensor) -> LensResult:
    ids = top_ids.tolist()
    decode = model.tokenizer.decode
    vocab = {i: decode([i]) for i in top_ids.unique().tolist()}
    return LensResult(
        str_tokens=model.to_str_tokens(tokens[0]),
        layer_names=["embed"] + [f"L{layer}" for layer in range(model.info.n_layers)],
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=[[[vocab[i] for i in pos] for pos in layer] for layer in ids],
        final_rank=final_rank,
    )


def _read_rows(logits: Float[Tensor, "row vocab"], target: Int[Tensor, " row"], k: int):
    """(top-k ids, their probabilities, the rank of `target`) per row of float32 logits; the
    logits are overwritten (exp(logits - max) is summed in place)."""
    top = logits.topk(k, dim=-1)
    rank = (logits > logits.gather(-1, target[:, None])).sum(-1, dtype=torch.int32)
    peak = top.values[:, :1]
    total = logits.sub_(peak).exp_().sum(-1, keepdim=True)
    return top.indices, (top.values - peak).exp() / total, rank.long()


@torch.no_grad()
def logit_lens(model: Model, prompt: str | Tensor, k: int = 1, chunk: int = 256,
               residuals: tuple[Tensor, Tensor] | None = None, last: int | None = None) -> LensResult:
    """The top-k tokens and probabilities at every layer and position of `prompt` (text, or a
    [pos] / [1, pos] token tensor), or only at its `last` positions. The (layer, position) rows
    are projected `chunk` at a time (one matmul each) to bound memory. `residuals` =
    lens_residuals(model, prompt), when the caller already ran the forward pass."""
    _check_lens_args(k, last)
    tokens, resid = _lens_inputs(model, prompt, residuals, last)
    ln_final, unembed = _norm_and_unembed(model)
    n_rows, n_pos, d_model = resid.shape
    # the last layer first: its argmax is the final prediction every row's rank is measured against
    final_logits = project(resid[-1][None], ln_final, unembed)[0].float()  # [pos, vocab]
    k = min(k, final_logits.shape[-1])
    final_pred = final_logits.argmax(-1)
    last_ids, last_probs, last_rank = _read_rows(final_logits, final_pred, k)
    del final_logits
    rows = resid[:-1].reshape(-1, d_model)  # (layer, pos) pairs of the earlier layers
    targets = final_pred.repeat(n_rows - 1)
    ids, probs, ranks = [], [], []
    for start in range(0, rows.shape[0], chunk):
        logits = project(rows[None, start : start + chunk], ln_final, unembed)[0].float()
        got = _read_rows(logits, targets[start : start + chunk], k)
        for out, x in zip((ids, probs, ranks), got):
            out.append(x)
    for out, x in zip((ids, probs, ranks), (last_ids, last_probs, last_rank)):
        out.append(x)
    top_ids = torch.cat(ids).reshape(n_rows, n_pos, k).cpu()
    top_probs = torch.cat(probs).reshape(n_rows, n_pos, k).cpu()
    final_rank = torch.cat(ranks).reshape(n_rows, n_pos).cpu()
    return _result(model, tokens, top_ids, top_probs, final_rank)


@torch.no_grad()
def logit_lens_reference(model: Model, prompt: str | Tensor, k: int = 1,
                         residuals: tuple[Tensor, Tensor] | None = None, last: int | None = None) -> LensResult:
    """The logit lens the slow, obvious way (what `logit_lens` is tested against): every layer
    projected on its own, softmax over the whole vocabulary, top-k of the probabilities, and the
    rank of the final prediction counted on that layer's logits."""
    _check_lens_args(k, last)
    tokens, resid = _lens_inputs(model, prompt, residuals, last)
    ln_final, unembed = _norm_and_unembed(model)
    logits = [project(resid[layer][None], ln_final, unembed)[0].float() for layer in range(resid.shape[0])]
    final_pred = logits[-1].argmax(-1)
    ids, probs, ranks = [], [], []
    for row in logits:
        top = row.softmax(-1).topk(min(k, row.shape[-1]), dim=-1)
        ids.append(top.indices)
        probs.append(top.values)
        ranks.append((row > row.gather(-1, final_pred[:, None])).sum(-1))
    return _result(model, tokens, torch.stack(ids).cpu(), torch.stack(probs).cpu(), torch.stack(ranks).cpu())


# -- following chosen tokens across the layers -------------------------------------------------------


@dataclass
class TokenTrace:
    """Chosen tokens followed across the layers at one position: the logit lens read for them alone.
    Two tokens make a logit difference (the first minus the second)."""

    layer_names: list[str]  # one per row: "embed", "L0", "L1", ... (row l+1 = after block l)
    position: int  # the position read, counted from 0 (BOS included when prepended)
    input_token: str  # the prompt's token at that position (the prediction is of the next one)
    tokens: list[str]  # the tokens followed
    logits: Float[Tensor, "layer n"]  # each token's logit after each layer (final norm, unembedding)
    probs: Float[Tensor, "layer n"]  # its probability (softmax over the whole vocabulary)
    ranks: Int[Tensor, "layer n"]  # how many tokens score strictly higher there (0: the top token)

    @property
    def logit_diff(self) -> Float[Tensor, " layer"] | None:
        """logit(first) - logit(second) per layer, with two tokens; None with one."""
        return self.logits[:, 0] - self.logits[:, 1] if self.logits.shape[1] == 2 else None


def read_tokens(
    logits: Float[Tensor, "row vocab"], ids: Int[Tensor, " n"]
) -> tuple[Float[Tensor, "row n"], Float[Tensor, "row n"], Int[Tensor, "row n"]]:
    """(logit, probability, rank) of each token id on each row of logits, in float32 (pure): the
    probability is the softmax over the whole row, the rank counts the tokens scoring strictly higher."""
    logits = logits.float()
    picked = logits[:, ids]
    probs = (picked - logits.logsumexp(-1, keepdim=True)).exp()
    ranks = (logits[:, None, :] > picked[:, :, None]).sum(-1)
    return picked, probs, ranks


@torch.no_grad()
def follow_tokens(model: Model, prompt: str | Tensor, tokens: list[str | int], position: int = -1,
                  residuals: tuple[Tensor, Tensor] | None = None) -> TokenTrace:  # fmt: skip
    """One token (or two: a logit difference) followed across the layers at `position` of `prompt`
    (negative counts from the end): its logit, probability and rank after the embedding and after
    every block, read as the logit lens reads them. `tokens` are strings that are one token each
    (e.g. ' Paris') or token ids; `residuals` = lens_residuals(model, prompt) when already run."""
    if not 1 <= len(tokens) <= 2:
        raise WorkbenchError(f"follow one token or two (a logit difference), not {len(tokens)}")
    ids = [t if isinstance(t, int) else model.token_id(t) for t in tokens]
    if any(not 0 <= i < model.info.d_vocab for i in ids):
        raise WorkbenchError(f"token ids must lie in 0..{model.info.d_vocab - 1} (got {ids})")
    tok, resid = residuals if residuals is not None else lens_residuals(model, prompt)
    n_pos = resid.shape[1]
    if not -n_pos <= position < n_pos:
        raise WorkbenchError(f"position {position} is outside the prompt's {n_pos} tokens")
    position %= n_pos
    ln_final, unembed = _norm_and_unembed(model)
    device = unembed_device(model)
    logits = project(resid[:, position : position + 1].to(device), ln_final, unembed)[:, 0]  # [layer, vocab]
    picked, probs, ranks = read_tokens(logits, torch.tensor(ids, device=logits.device))
    decode = model.tokenizer.decode
    return TokenTrace(
        layer_names=["embed"] + [f"L{layer}" for layer in range(model.info.n_layers)],
        position=position,
        input_token=decode([int(tok.flatten()[position])]),
        tokens=[decode([i]) for i in ids],
        logits=picked.cpu(),
        probs=probs.cpu(),
        ranks=ranks.cpu(),
    )
