"""Copying: does a head's OV circuit, read through the unembedding, raise the logit of the
token it attends to? (An induction head is prefix matching *and* copying.) Two measures:

`copying_scores` (the direct-logit z-score, what `find_heads(validate=True)` confirms with) and
`ov_copying` (Elhage et al. 2021's eigenvalue measure of the OV circuit, the one Olsson et al.
2022 use; below).

The direct-logit z-score.

For head (layer, h) we take the real value vectors the head reads, `hook_v` of its KV head
(GQA: query head h reads KV head h // (n_heads / n_kv_heads), as TL and HF repeat-interleave
KV heads), at every non-BOS position p of the probe sequences, so the head's input is whatever
the residual stream really holds there, layer norm `ln1` included. Its output direction
o = v @ W_O[h] is read through the final norm and the unembedding the way the logits read it:
the final norm is linear in o up to a positive per-position scale (LayerNorm: centre, times
the weight; RMSNorm: times the weight; none: identity). A positive scale changes no ranking,
so we drop it, and the final norm's bias belongs to the whole residual, not to the head.
The score is how far above the average logit the head puts the token it reads, in standard
deviations of its logits over the vocabulary, averaged over positions: 0 = no copying, > 0
copying, < 0 suppressing (copy suppression). It does not depend on the vocabulary size, unlike a
top-k rate (in SmolLM2 the strongest induction heads score ~1, previous-token heads ~0, and the
late head 23.7 ~2.6 with its token in the top 50 of 49,152 logits 40% of the time).
Attention (QK) plays no part: this isolates the OV circuit. It reads the direct path only, so a
mid-layer induction head whose output is read by later layers may copy without scoring high.

The OV-circuit eigenvalue score (Elhage et al. 2021, "A Mathematical Framework", used by Olsson
et al. 2022). The head's full OV circuit maps a source token to logits: A = E W_V W_O U, a
vocab x vocab matrix (row convention: row s is what attending to token s does to every logit).
A copying head has mostly positive eigenvalues; the score is sum(lambda) / sum(|lambda|), in
[-1, 1] (1: pure copying, -1: pure anti-copying), and we also give the share of eigenvalues with a
positive real part. We restrict A to a seeded sample S of token ids (`n_tokens`, drawn from the
same pool as the repeated-token probes, interp.data.synthetic.token_pool: the extreme and
special ids are left out) and never build it: A_S = P Q with P = E_S W_V (|S| x d_head) and
Q = W_O U_S (d_head x |S|), and the nonzero eigenvalues of P Q are those of the d_head x d_head
matrix Q P (a test compares them with the dense matrix's). The cost is independent of |S| past
two thin matrix products, so the whole pool can be used (n_tokens=None).
How the norms are read: E_S is each sampled token's embedding put through the head's `ln1` as
if it were the whole residual stream (LayerNorm: centred, divided by its standard deviation,
times the weight; RMSNorm: divided by its RMS, times the weight; the norm's bias, b_V and b_O are
left out: they add the same vector for every token). U_S is the unembedding of the sampled
tokens read through the final norm's linear part (centring for LayerNorm, times the weight;
its positive per-position scale and bias depend on the whole residual, not on the head, and a
positive scale changes no eigenvalue's sign or the ratio). GQA: W_V is that of the query head's
KV head. Positional embeddings are left out (the circuit is token to token). It describes the
head reading raw token embeddings: exact for a layer-0 head or an attention-only model, only an
approximation for a head deep in a 30-layer model, whose input is far from the embedding (that is
why `find_heads` confirms with the z-score above, which reads the values the head really reads,
and reports this score beside it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.lens import direction_logits, final_norm, norm_linear
from interp.types import Head

if TYPE_CHECKING:
    from interp.models import Model


@torch.no_grad()
def copying_scores(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    heads: list[Head],
    max_positions: int = 512,
) -> list[float]:
    """Copying score of each (layer, head) on `tokens` (non-BOS positions, at most max_positions)."""
    if not heads:
        return []
    group = model.info.n_heads // model.info.n_kv_heads
    layers = sorted({layer for layer, _ in heads})
    got = hooks.capture(model, tokens, hooks.names("v", layers))
    values = {layer: got[hooks.name("v", layer)] for layer in layers}
    targets = tokens[:, 1:].reshape(-1)[:max_positions]
    scores = []
    for layer, head in heads:  # each head's vectors stay on its layer's device until the unembedding
        v = values[layer][:, 1:, head // group].reshape(-1, values[layer].shape[-1])[:max_positions]
        out = v.float() @ model.bridge.blocks[layer].attn.W_O[head].detach().float()
        logits = direction_logits(model, out)
        target_logit = logits.gather(-1, targets[:, None].to(logits.device)).squeeze(-1)
        z = (target_logit - logits.mean(-1)) / logits.std(-1).clamp_min(1e-12)
        scores.append(float(z.mean()))
    return scores


@dataclass
class OVCopying:
    """Eigenvalue copying score of one head's OV circuit on a token sample."""

    score: float  # sum(lambda) / sum(|lambda|) over the nonzero eigenvalues, in [-1, 1]
    positive_share: float  # share of those eigenvalues with a positive real part
    n_tokens: int  # size of the token sample the circuit was restricted to


def block_norm(model: Model, layer: int) -> tuple[str | None, Tensor | None]:
    """(kind, weight) of layer's ln1: "LN", "RMS" or None, and its learned weight."""
    kind = model.info.normalization
    if kind is None:
        return None, None
    ln = model.bridge.blocks[layer].ln1
    w = getattr(ln, "w", None)
    if w is None:
        w = getattr(ln, "weight", None)
    return ("LN" if kind.startswith("LN") else "RMS"), (None if w is None else w.detach().float())


def normed_embeddings(model: Model, layer: int, ids: Int[Tensor, " n"]) -> Float[Tensor, "n d_model"]:
    """Each token's embedding through layer's ln1, as if it were the whole residual (no bias)."""
    e = model.bridge.W_E.detach()[ids.to(model.bridge.W_E.device)].float()
    kind, weight = block_norm(model, layer)
    e = e.to(model.bridge.blocks[layer].attn.W_V.device)  # a few token rows, to the layer's device
    if kind is None:
        return e
    eps = float(getattr(model.bridge.cfg, "eps", 1e-5))
    if kind == "LN":
        e = e - e.mean(-1, keepdim=True)
    e = e / (e.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return e if weight is None else e * weight


def ov_factors(model: Model, head: Head, ids: Int[Tensor, " n"]) -> tuple[Tensor, Tensor]:
    """(P, Q) with the head's OV circuit on tokens `ids` equal to P @ Q: P = E W_V [n d_head],
    Q = W_O U [d_head n] (see the module docstring for the norms)."""
    layer, h = head
    attn = model.bridge.blocks[layer].attn
    group = model.info.n_heads // model.info.n_kv_heads
    W_V = attn.W_V.detach()[h // group].float()  # [d_model d_head] of the query head's KV head
    W_O = attn.W_O.detach()[h].float()  # [d_head d_model]
    kind, weight = final_norm(model)
    U = model.bridge.W_U.detach()[:, ids.to(model.bridge.W_U.device)].float()  # [d_model n]
    U = norm_linear(U.T, kind, None if weight is None else weight.float()).T  # the linear part, per column
    return normed_embeddings(model, layer, ids) @ W_V, W_O @ U.to(W_O.device)  # (|S| columns: small)


def eigen_copying(eigenvalues: Tensor, n_tokens: int) -> OVCopying:
    """The copying summary of a circuit's (complex) eigenvalues."""
    lam = eigenvalues.to(torch.complex128)
    total = float(lam.abs().sum())
    if total <= 1e-12:  # the head writes nothing the unembedding reads
        return OVCopying(0.0, 0.0, n_tokens)
    nonzero = lam.abs() > 1e-9 * float(lam.abs().max())
    return OVCopying(float(lam.real.sum()) / total, float((lam.real[nonzero] > 0).float().mean()), n_tokens)


def token_sample(model: Model, n_tokens: int | None, seed: int = 0) -> Int[Tensor, " n"]:
    """A seeded sample of `n_tokens` distinct ids from the probe pool (all of it for None)."""
    from interp.data.synthetic import token_pool

    pool = token_pool(model)
    if n_tokens is None or n_tokens >= len(pool):
        return pool
    gen = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(len(pool), generator=gen)[:n_tokens]].sort().values


@torch.no_grad()
def ov_copying(model: Model, heads: list[Head], n_tokens: int | None = 2048, seed: int = 0) -> list[OVCopying]:
    """The eigenvalue copying score of each head's OV circuit on a sample of `n_tokens` tokens
    (the same sample for every head; None: the whole probe pool)."""
    if not heads:
        return []
    ids = token_sample(model, n_tokens, seed)
    out = []
    for head in heads:
        P, Q = ov_factors(model, head, ids)
        out.append(eigen_copying(torch.linalg.eigvals((Q @ P).double()), len(ids)))
    return out
