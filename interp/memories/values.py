"""Values: what each FFN memory writes, read in the vocabulary.

The value of neuron i of layer l is row i of W_out (the bridge's `blocks[l].mlp.W_out` is
[d_mlp, d_model]: `hook_post @ W_out (+ b_out) == mlp.hook_out`, checked in the tests). The
memory of sign "-" writes the same row negated (keys.py): its value is -W_out[i], and its
projection reads the negated logits (its top tokens are the bottom tokens of the "+" value).

Projection formula (Geva et al. 2021 project v_i through the output embedding):

    logits_i = norm_linear(v_i) @ W_U        p_i = softmax(logits_i)

    norm_linear(v) = (v - mean(v)) * w   for LayerNorm   (the centering is linear: kept)
                   = v * w               for RMSNorm
                   = v                   without a final norm

where w is the final norm's learned weight (interp.lens.direction_logits, which the copying
score of heads reads the same way). The data-dependent 1/scale of the final norm is left out
(it depends on the whole residual stream, not on the value, and is positive, so it changes no
ranking) and so are the final norm's bias and b_U (constants that do not depend on the neuron).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import WorkbenchError
from interp.lens import direction_logits
from interp.memories.keys import SIGN_FACTOR, check_sign

if TYPE_CHECKING:
    from interp.models import Model


def value_vectors(model: Model, layer: int) -> Float[Tensor, "neuron d_model"]:
    """Rows of W_out: the value of every neuron's "+" memory of `layer`."""
    if model.info.attn_only or model.info.d_mlp is None:
        raise WorkbenchError(f"{model.info.name} is attention-only: it has no FFN memories")
    return model.bridge.blocks[layer].mlp.W_out.detach()


def value_logits(
    model: Model, layer: int, neurons: Int[Tensor, " n"] | list[int], sign: str = "+"
) -> Float[Tensor, "n vocab"]:
    """logits = sign * norm_linear(W_out[i]) @ W_U for the given neurons (float32)."""
    values = value_vectors(model, layer)
    logits = direction_logits(model, values[torch.as_tensor(neurons, device=values.device)])
    return logits if check_sign(sign) == "+" else -logits


@torch.no_grad()
def project_values(
    model: Model, layer: int, top_n: int = 20, chunk: int = 512, signs: tuple[str, ...] = ("+",)
) -> tuple[Int[Tensor, "sign neuron top"], Float[Tensor, "sign neuron top"]]:
    """Every neuron's value's `top_n` tokens and their probabilities, for each of `signs` (one
    projection serves both: the "-" value's logits are the negated ones), in chunks of neurons so
    only [chunk, vocab] logits exist at once."""
    values = value_vectors(model, layer)
    ids, probs = [[] for _ in signs], [[] for _ in signs]
    for lo in range(0, values.shape[0], chunk):
        logits = direction_logits(model, values[lo : lo + chunk])
        for j, sign in enumerate(signs):
            signed = logits * SIGN_FACTOR[check_sign(sign)]
            top = signed.topk(top_n, dim=-1)
            probs[j].append((top.values - signed.logsumexp(-1, keepdim=True)).exp().cpu())
            ids[j].append(top.indices.to(torch.int32).cpu())
    return torch.stack([torch.cat(i) for i in ids]), torch.stack([torch.cat(p) for p in probs])


@torch.no_grad()
def search_values(
    model: Model, token_id: int, layers: list[int], top: int = 20, signs: tuple[str, ...] = ("+", "-")
) -> list[tuple[int, int, str, float, int]]:
    """Exact search over every memory of `layers`: (layer, neuron, sign, probability, rank) of
    the `top` memories whose values give `token_id` the highest probability."""
    if top < 1:
        raise WorkbenchError(f"top must be at least 1, got {top}")
    found = []
    for layer in layers:
        base = direction_logits(model, value_vectors(model, layer))
        for sign in signs:
            logits = base * SIGN_FACTOR[check_sign(sign)]
            target = logits[:, token_id]
            p = (target - logits.logsumexp(-1)).exp()
            rank = (logits > target[:, None]).sum(-1)
            best = p.topk(min(top, p.shape[0]))
            found += [(layer, int(i), sign, float(v), int(rank[i])) for v, i in zip(best.values, best.indices)]
    found.sort(key=lambda row: -row[3])
    return found[:top]
