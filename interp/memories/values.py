"""Values: what each FFN neuron writes, read in the vocabulary.

The value of neuron i of layer l is row i of W_out (the bridge's `blocks[l].mlp.W_out` is
[d_mlp, d_model]: `hook_post @ W_out (+ b_out) == mlp.hook_out`, checked in the tests).

Projection formula (Geva et al. 2021 project v_i through the output embedding):

    logits_i = norm_linear(v_i) @ W_U        p_i = softmax(logits_i)

    norm_linear(v) = (v - mean(v)) * w   for LayerNorm   (the centering is linear: kept)
                   = v * w               for RMSNorm
                   = v                   without a final norm

where w is the final norm's learned weight. The data-dependent 1/scale of the final norm is
left out (it depends on the whole residual stream, not on the value) and so are the final
norm's bias and b_U (constants that do not depend on the neuron).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import WorkbenchError


def final_norm(model) -> tuple[str | None, Tensor | None]:
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
    values: Float[Tensor, "neuron d_model"], kind: str | None, weight: Float[Tensor, " d_model"] | None
) -> Float[Tensor, "neuron d_model"]:
    """The data-independent part of the final norm applied to value vectors (see module doc)."""
    if kind == "LN":
        values = values - values.mean(-1, keepdim=True)
    if weight is not None:
        values = values * weight
    return values


def value_vectors(model, layer: int) -> Float[Tensor, "neuron d_model"]:
    """Rows of W_out: the value of every neuron of `layer`."""
    if model.info.attn_only or model.info.d_mlp is None:
        raise WorkbenchError(f"{model.info.name} is attention-only: it has no FFN memories")
    return model.bridge.blocks[layer].mlp.W_out.detach()


def value_logits(model, layer: int, neurons: Int[Tensor, " n"] | list[int]) -> Float[Tensor, "n vocab"]:
    """logits_i = norm_linear(W_out[i]) @ W_U for the given neurons (float32)."""
    kind, weight = final_norm(model)
    v = value_vectors(model, layer)[torch.as_tensor(neurons, device=model.bridge.blocks[layer].mlp.W_out.device)]
    w_u = model.bridge.W_U.detach()
    v = norm_linear(v.float(), kind, None if weight is None else weight.float())
    return v @ w_u.float()


@torch.no_grad()
def project_values(
    model, layer: int, top_n: int = 20, chunk: int = 512
) -> tuple[Int[Tensor, "neuron top"], Float[Tensor, "neuron top"]]:
    """Every neuron's value's `top_n` tokens and their probabilities, in chunks of neurons so
    only [chunk, vocab] logits exist at once."""
    d_mlp = value_vectors(model, layer).shape[0]
    kind, weight = final_norm(model)
    w_u = model.bridge.W_U.detach().float()
    weight = None if weight is None else weight.float()
    ids, probs = [], []
    for lo in range(0, d_mlp, chunk):
        v = value_vectors(model, layer)[lo : lo + chunk].float()
        logits = norm_linear(v, kind, weight) @ w_u
        top = logits.topk(top_n, dim=-1)
        probs.append((top.values - logits.logsumexp(-1, keepdim=True)).exp().cpu())
        ids.append(top.indices.to(torch.int32).cpu())
    return torch.cat(ids), torch.cat(probs)


@torch.no_grad()
def search_values(model, token_id: int, layers: list[int], top: int = 20) -> list[tuple[int, int, float, int]]:
    """Exact search over every neuron of `layers`: (layer, neuron, probability, rank) of the
    `top` neurons whose values give `token_id` the highest probability."""
    kind, weight = final_norm(model)
    w_u = model.bridge.W_U.detach().float()
    weight = None if weight is None else weight.float()
    found = []
    for layer in layers:
        logits = norm_linear(value_vectors(model, layer).float(), kind, weight) @ w_u
        target = logits[:, token_id]
        p = (target - logits.logsumexp(-1)).exp()
        rank = (logits > target[:, None]).sum(-1)
        best = p.topk(min(top, p.shape[0]))
        found += [(layer, int(i), float(v), int(rank[i])) for v, i in zip(best.values, best.indices)]
    found.sort(key=lambda row: -row[2])
    return found[:top]
