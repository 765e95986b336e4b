"""One head's page: what its OV circuit writes for a source token, which token pairs its QK circuit
scores highest, and what ablating it does to one prompt. Each fast function has a slow, obviously
correct `*_reference` beside it that the tests compare it with.

OV circuit (Elhage et al. 2021): attending to source token s adds E[s] W_V W_O to the residual
stream, which the unembedding reads as logits: row s of W_E W_V W_O W_U says which output tokens
the head promotes when it reads s. What is folded in: the head's `ln1` weight (each embedding
normalized as if it were the whole residual stream: RMSNorm divides by its RMS, LayerNorm centres
and divides by its standard deviation, then times the weight; interp.heads.copying.normed_embeddings),
and the final norm's linear part (its weight, and centring for LayerNorm; interp.lens.norm_linear).
What is not: the final norm's per-position scale (positive, depends on the whole residual: it
changes no ranking, so values are logits up to that scale), every bias (the norms', b_V, b_O, b_U:
the same for every source token), positional embeddings, and every other layer (exact for a
layer-0 head reading raw embeddings, an approximation deeper in). GQA: W_V is that of the query
head's KV head (query head h reads KV head h // (n_heads / n_kv_heads), as TL and HF repeat KV heads).

QK circuit: the attention score of a query token q on a key token k from their embeddings alone,
(ln1(E[q]) W_Q[h]) . (ln1(E[k]) W_K[kv]) / sqrt(d_head), the norms folded as above, biases
(b_Q, b_K) left out. Positional parts are ignored: learned positional embeddings are left out, and
rotary is not applied, which is exactly the score of a query and key at the same position (the
rotation cancels at distance 0). The whole vocabulary squared is too many pairs (2.4e9 for
SmolLM2), so pairs are searched over a token set (a seeded sample of the probe pool plus the prompt's
tokens), in chunks.

Ablation on a prompt: the head's z (blocks.{l}.attn.hook_z, one vector per query head) is set to 0
(zero) or to its mean over the prompt's positions (mean), as interp.heads.validate does on repeated
tokens; we report the per-token loss (predicting token p+1 at position p) and the next-token
prediction after the last token, before and after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.heads.copying import normed_embeddings, token_sample
from interp.heads.validate import MODES
from interp.lens import direction_logits, final_norm
from interp.types import Head, check_choice

if TYPE_CHECKING:
    from interp.models import Model


def check_head(model: Model, head: Head) -> Head:
    """(layer, head) as ints, refused with a one-line message when the model has no such head."""
    layer, h = int(head[0]), int(head[1])
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    if not (0 <= layer < n_layers and 0 <= h < n_heads):
        raise WorkbenchError(f"L{layer}H{h} does not exist: pick a layer in 0..{n_layers - 1} and a head in 0..{n_heads - 1}")
    return layer, h


def kv_head(model: Model, h: int) -> int:
    """The KV head query head h reads (GQA; h itself without GQA)."""
    return h // (model.info.n_heads // model.info.n_kv_heads)


def _ids(ids) -> Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long).flatten().cpu()
    if ids.numel() == 0:
        raise WorkbenchError("no tokens to read the circuit on: give at least one token")
    return ids


def _check_vocab(model: Model, ids: Tensor) -> None:
    if int(ids.min()) < 0 or int(ids.max()) >= model.info.d_vocab:
        raise WorkbenchError(f"token ids must lie in 0..{model.info.d_vocab - 1}; got {int(ids.min())}..{int(ids.max())}")


# -- OV: source token -> the output tokens it promotes -------------------------------------------


@dataclass
class OVTokens:
    """The OV circuit's strongest outputs for each source token."""

    head: Head
    sources: Int[Tensor, " source"]  # the source token ids
    top_ids: Int[Tensor, "source k"]  # the output tokens each source promotes most, best first
    top_values: Float[Tensor, "source k"]  # their logits (up to the final norm's positive scale)
    self_rank: Int[Tensor, " source"]  # rank of the source token itself among its outputs (0 = top: copying)


@torch.no_grad()
def ov_rows(model: Model, head: Head, ids) -> Float[Tensor, "source vocab"]:
    """Rows `ids` of the head's OV circuit read through the unembedding (float32; see the module docstring)."""
    layer, h = check_head(model, head)
    ids = _ids(ids)
    _check_vocab(model, ids)
    attn = model.bridge.blocks[layer].attn
    W_V = attn.W_V.detach()[kv_head(model, h)].float()  # [d_model d_head]
    W_O = attn.W_O.detach()[h].float()  # [d_head d_model]
    return direction_logits(model, normed_embeddings(model, layer, ids) @ W_V @ W_O)


def _top(rows: Tensor, ids: Tensor, k: int, head: Head) -> OVTokens:
    k = min(k, rows.shape[-1])
    top = rows.topk(k, dim=-1)
    own = rows.gather(-1, ids[:, None].to(rows.device))
    rank = (rows > own).sum(-1)
    return OVTokens(head, ids, top.indices.cpu(), top.values.cpu(), rank.cpu())


def ov_top_tokens(model: Model, head: Head, ids, k: int = 5) -> OVTokens:
    """For each source token in `ids`, the k output tokens the head's OV circuit promotes most."""
    if k < 1:
        raise WorkbenchError(f"the number of top tokens must be at least 1, got {k}")
    ids = _ids(ids)
    return _top(ov_rows(model, head, ids), ids, k, check_head(model, head))


@torch.no_grad()
def ov_top_tokens_reference(model: Model, head: Head, ids, k: int = 5) -> OVTokens:
    """`ov_top_tokens` the slow way: one source token at a time, every step written out."""
    layer, h = check_head(model, head)
    ids = _ids(ids)
    attn, cfg = model.bridge.blocks[layer].attn, model.bridge.cfg
    kv = h * model.info.n_kv_heads // model.info.n_heads
    final_kind, final_w = final_norm(model)
    rows = []
    for t in ids.tolist():
        x = model.bridge.W_E.detach()[t].float()
        if model.info.normalization is not None:  # ln1 as if x were the whole residual, bias left out
            if model.info.normalization.startswith("LN"):
                x = x - x.mean()
            x = x / torch.sqrt((x * x).mean() + float(getattr(cfg, "eps", 1e-5)))
            x = x * _weight(model.bridge.blocks[layer].ln1)
        v = x @ attn.W_V.detach()[kv].float()
        out = v @ attn.W_O.detach()[h].float()
        if final_kind == "LN":
            out = out - out.mean()
        if final_w is not None:
            out = out * final_w.float()
        rows.append(out @ model.bridge.W_U.detach().float())
    return _top(torch.stack(rows), ids, min(k, model.info.d_vocab), (layer, h))


def _weight(norm) -> Tensor:
    w = getattr(norm, "w", None)
    if w is None:
        w = getattr(norm, "weight", None)
    return torch.ones(()) if w is None else w.detach().float()


# -- QK: the (query token, key token) pairs it scores highest -------------------------------------


@dataclass
class QKPairs:
    """The QK circuit's highest-scoring (query token, key token) pairs over a token set."""

    head: Head
    query_ids: Int[Tensor, " k"]
    key_ids: Int[Tensor, " k"]
    scores: Float[Tensor, " k"]  # attention scores (before softmax, divided by sqrt(d_head)), best first
    n_tokens: int  # size of the token set the pairs were searched in (queries and keys alike)


@torch.no_grad()
def qk_factors(model: Model, head: Head, ids) -> tuple[Float[Tensor, "n d_head"], Float[Tensor, "n d_head"]]:
    """(queries, keys) of tokens `ids` from their normed embeddings: score(q, k) = Q[q] . K[k] / sqrt(d_head)."""
    layer, h = check_head(model, head)
    ids = _ids(ids)
    _check_vocab(model, ids)
    attn = model.bridge.blocks[layer].attn
    x = normed_embeddings(model, layer, ids)
    return x @ attn.W_Q.detach()[h].float(), x @ attn.W_K.detach()[kv_head(model, h)].float()


def _pairs(head: Head, ids: Tensor, flat: Tensor, scores: Tensor, n: int) -> QKPairs:
    flat = flat.cpu()
    return QKPairs(head, ids[flat // n], ids[flat % n], scores.cpu(), n)


def qk_top_pairs(model: Model, head: Head, ids, k: int = 20, chunk: int = 1024) -> QKPairs:
    """The k highest-scoring (query, key) pairs with both tokens in `ids` (distinct ids; chunks of
    `chunk` queries at a time, so the |ids|^2 grid is never held whole)."""
    if k < 1:
        raise WorkbenchError(f"the number of top pairs must be at least 1, got {k}")
    ids = _ids(ids).unique()
    layer, h = check_head(model, head)
    Q, K = qk_factors(model, (layer, h), ids)
    scale, n = math.sqrt(model.info.d_head), len(ids)
    best_s, best_i = torch.empty(0, device=Q.device), torch.empty(0, dtype=torch.long, device=Q.device)
    for start in range(0, n, chunk):
        block = (Q[start : start + chunk] @ K.T / scale).flatten()
        top = block.topk(min(k, block.numel()))
        best_s = torch.cat([best_s, top.values])
        best_i = torch.cat([best_i, top.indices + start * n])
        keep = best_s.topk(min(k, best_s.numel()))
        best_s, best_i = keep.values, best_i[keep.indices]
    return _pairs((layer, h), ids, best_i, best_s, n)


@torch.no_grad()
def qk_top_pairs_reference(model: Model, head: Head, ids, k: int = 20) -> QKPairs:
    """`qk_top_pairs` the slow way: every pair's score from its own query and key vector."""
    layer, h = check_head(model, head)
    ids = _ids(ids).unique()
    attn = model.bridge.blocks[layer].attn
    kv = h * model.info.n_kv_heads // model.info.n_heads
    x = {t: normed_embeddings(model, layer, torch.tensor([t]))[0] for t in ids.tolist()}
    scores = []
    for qi, q in enumerate(ids.tolist()):
        query = x[q] @ attn.W_Q.detach()[h].float()
        for ki, key_tok in enumerate(ids.tolist()):
            key = x[key_tok] @ attn.W_K.detach()[kv].float()
            scores.append((float(torch.dot(query, key)) / math.sqrt(model.info.d_head), qi * len(ids) + ki))
    scores.sort(key=lambda s: -s[0])
    top = scores[:k]
    return _pairs((layer, h), ids, torch.tensor([i for _, i in top]), torch.tensor([s for s, _ in top]), len(ids))


def qk_token_set(model: Model, n_tokens: int | None = 2048, seed: int = 0, extra=None) -> Int[Tensor, " n"]:
    """The tokens QK pairs are searched in: a seeded sample of the probe pool (interp.heads.copying.token_sample)
    plus `extra` (e.g. the prompt's tokens), distinct and sorted."""
    ids = token_sample(model, n_tokens, seed)
    if extra is not None:
        ids = torch.cat([ids, torch.as_tensor(extra, dtype=torch.long).flatten().cpu()])
    return ids.unique()


# -- ablation on one prompt ----------------------------------------------------------------------


@dataclass
class PromptAblation:
    """One head ablated on one prompt: per-token loss and the next-token prediction, before and after."""

    head: Head
    mode: str  # "mean" (its mean z over the prompt's positions) | "zero"
    clean_loss: Float[Tensor, " pos"]  # nats; entry p: loss of predicting token p+1 at position p
    ablated_loss: Float[Tensor, " pos"]
    clean_probs: Float[Tensor, " vocab"]  # next-token distribution after the last token
    ablated_probs: Float[Tensor, " vocab"]

    @property
    def delta_loss(self) -> Float[Tensor, " pos"]:
        return self.ablated_loss - self.clean_loss

    @property
    def mean_delta(self) -> float:
        """Change of the prompt's mean per-token loss (nats)."""
        return float(self.delta_loss.mean())

    def top(self, ablated: bool = False) -> tuple[int, float]:
        """(token id, probability) of the top next-token prediction, before (or after) ablation."""
        p = self.ablated_probs if ablated else self.clean_probs
        i = int(p.argmax())
        return i, float(p[i])

    @property
    def kl(self) -> float:
        """KL(clean || ablated) of the next-token distribution (nats)."""
        p, q = self.clean_probs.double(), self.ablated_probs.double()
        return float((p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log())).sum())


def _prompt_tokens(model: Model, tokens) -> Int[Tensor, "1 pos"]:
    tokens = model.to_tokens(tokens) if isinstance(tokens, str) else torch.as_tensor(tokens).reshape(1, -1)
    if tokens.shape[1] < 2:
        raise WorkbenchError("the prompt is one token: per-token loss needs at least 2; type a longer prompt")
    return tokens.to(model.device)


def token_losses(logits: Float[Tensor, "pos vocab"], tokens: Int[Tensor, " pos"]) -> Float[Tensor, " pos_1"]:
    """Next-token loss at each position but the last (float32)."""
    logp = logits[:-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[1:, None].to(logp.device)).squeeze(-1)


@torch.no_grad()
def prompt_ablation(model: Model, tokens, head: Head, modes=MODES) -> dict[str, PromptAblation]:
    """Ablate the head alone on one prompt (text or token ids), per mode: two forward passes, the
    clean one (which also gives the head's mean z) and one with a row per mode."""
    layer, h = check_head(model, head)
    modes = [check_choice(mode, MODES, "ablation") for mode in modes]
    tokens = _prompt_tokens(model, tokens)
    z_name = hooks.name("z", layer)
    clean, cache = model.run_with_cache(tokens, names_filter=lambda name: name == z_name)
    clean = clean[0].float()
    mean = cache[z_name][0, :, h].float().mean(0)  # [d_head], over the prompt's positions

    def ablate(z: Tensor, hook) -> Tensor:
        for row, mode in enumerate(modes):
            z[row, :, h] = 0.0 if mode == "zero" else mean.to(z.dtype)
        return z

    logits = model.run_with_hooks(tokens.repeat(len(modes), 1), fwd_hooks=[(z_name, ablate)]).float()
    clean_loss, clean_probs = token_losses(clean, tokens[0]).cpu(), clean[-1].softmax(-1).cpu()
    return {mode: PromptAblation((layer, h), mode, clean_loss, token_losses(logits[row], tokens[0]).cpu(), clean_probs,
                                 logits[row, -1].softmax(-1).cpu()) for row, mode in enumerate(modes)}  # fmt: skip


@torch.no_grad()
def prompt_ablation_reference(model: Model, tokens, head: Head, modes=MODES) -> dict[str, PromptAblation]:
    """`prompt_ablation` another way: capture the head's z, then replace its term z @ W_O[h] in the
    attention output (hook_attn_out) by mean(z) @ W_O[h] or nothing; losses position by position."""
    layer, h = check_head(model, head)
    tokens = _prompt_tokens(model, tokens)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name == hooks.name("z", layer))
    z = cache[hooks.name("z", layer)][0, :, h].float()  # [pos d_head]
    W_O = model.bridge.blocks[layer].attn.W_O.detach()[h].float()

    def losses(logits: Tensor) -> Tensor:
        ids = tokens[0].tolist()
        return torch.tensor([float(-logits[p].float().log_softmax(-1)[ids[p + 1]]) for p in range(len(ids) - 1)])

    clean = model(tokens)[0].float()
    out = {}
    for mode in modes:
        check_choice(mode, MODES, "ablation")
        replacement = z.mean(0, keepdim=True).expand_as(z) if mode == "mean" else torch.zeros_like(z)
        shift = (replacement - z) @ W_O  # [pos d_model]

        def edit(attn_out: Tensor, hook, shift=shift) -> Tensor:
            return attn_out + shift.to(attn_out.dtype)[None]

        logits = model.run_with_hooks(tokens, fwd_hooks=[(hooks.name("attn_out", layer), edit)])[0].float()
        out[mode] = PromptAblation((layer, h), mode, losses(clean), losses(logits), clean[-1].softmax(-1).cpu(),
                                   logits[-1].softmax(-1).cpu())
    return out


# -- what a page shows: the prompt's source tokens, and rows for tables ----------------------------


def prompt_sources(model: Model, tokens, limit: int = 24) -> Int[Tensor, " n"]:
    """The prompt's distinct tokens in order of appearance, BOS left out, at most `limit`."""
    ids = _prompt_tokens(model, tokens)[0].tolist()
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    seen = list(dict.fromkeys(i for p, i in enumerate(ids) if not (p == 0 and i == bos)))
    return torch.tensor(seen[:limit], dtype=torch.long)


def decode(model: Model, i: int) -> str:
    """One token as the page shows it: its text quoted (spaces visible), or #id without a tokenizer."""
    if model.tokenizer is None:
        return f"#{int(i)}"
    return repr(model.tokenizer.decode([int(i)]))


def ov_table(model: Model, ov: OVTokens) -> list[dict]:
    """One row per source token: the outputs it promotes most (with their logits) and its own rank."""
    return [{"source": decode(model, s), "promotes most (logit)": ", ".join(
                f"{decode(model, i)} {v:+.2f}" for i, v in zip(ids.tolist(), vals.tolist())),
             "rank of the source itself": int(rank)}
            for s, ids, vals, rank in zip(ov.sources.tolist(), ov.top_ids, ov.top_values, ov.self_rank)]  # fmt: skip


def qk_table(model: Model, pairs: QKPairs) -> list[dict]:
    """One row per (query, key) pair, best first."""
    return [{"query token": decode(model, q), "key token": decode(model, k), "score": round(float(s), 4)}
            for q, k, s in zip(pairs.query_ids.tolist(), pairs.key_ids.tolist(), pairs.scores.tolist())]


def ablation_table(model: Model, ablations: dict[str, PromptAblation]) -> list[dict]:
    """One row per mode: the top next-token prediction before and after, the clean top token's
    probability after, KL, and the change of the prompt's per-token loss (mean and last token)."""
    rows = []
    for mode, a in ablations.items():
        (before, p0), (after, p1) = a.top(), a.top(ablated=True)
        rows.append({"ablation": mode, "top before": decode(model, before), "p before": _sig(p0),
                     "top after": decode(model, after), "p after": _sig(p1),
                     "p of the top before, after": _sig(float(a.ablated_probs[before])), "KL (nats)": _sig(a.kl),
                     "Δ mean loss (nats)": _sig(a.mean_delta), "Δ loss, last token (nats)": _sig(float(a.delta_loss[-1]))})  # fmt: skip
    return rows


def _sig(x: float) -> float:
    """x to 4 significant digits (a tiny probability stays readable, not 0)."""
    return float(f"{x:.4g}")
