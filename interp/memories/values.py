"""Values: what each FFN neuron writes, read in the vocabulary.

The value of neuron i of layer l is row i of W_out (the bridge's `blocks[l].mlp.W_out` is
[d_mlp, d_model]: `hook_post @ W_out (+ b_out) == mlp.hook_out`, checked in the tests).

Projection formula (Geva et al. 2021 project v_i through the output embedding):

    logits_i = norm_linear(v_i) @ W_U        p_i = softmax(logits_i)

    norm_linear(v) = (v - mean(v)) * w   for LayerNorm   (the centering is linear: kept)
                   = v * w               for RMSNorm
                   = v                   without a final norm

where w is the final norm's learned weight (interp.lens.direction_logits, which the copying
score of heads reads the same way). The data-dependent 1/scale of the final norm is left out
(it depends on the whole residual stream, not on the value) and so are the final norm's bias
and b_U (constants that do not depend on the neuron).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import WorkbenchError
from interp.lens import direction_logits

if TYPE_CHECKING:
    from interp.models import Model


def value_vectors(model: Model, layer: int) -> Float[Tensor, "neuron d_model"]:
    """Rows of W_out: the value of every neuron of `layer`."""
    if model.info.attn_only or model.info.d_mlp is None:
        raise WorkbenchError(f"{model.info.name} is attention-only: it has no FFN memories")
    return model.bridge.blocks[layer].mlp.W_out.detach()


def value_logits(model: Model, layer: int, neurons: Int[Tensor, " n"] | list[int]) -> Float[Tensor, "n vocab"]:
    """logits_i = norm_linear(W_out[i]) @ W_U for the given neurons (float32)."""
    values = value_vectors(model, layer)
    return direction_logits(model, values[torch.as_tensor(neurons, device=values.device)])


@torch.no_grad()
def project_values(
    model: Model, layer: int, top_n: int = 20, chunk: int = 512
) -> tuple[Int[Tensor, "neuron top"], Float[Tensor, "neuron top"]]:
    """Every neuron's value's `top_n` tokens and their probabilities, in chunks of neurons so
    only [chunk, vocab] logits exist at once."""
    values = value_vectors(model, layer)
    ids, probs = [], []
    for lo in range(0, values.shape[0], chunk):
        logits = direction_logits(model, values[lo : lo + chunk])
        top = logits.topk(top_n, dim=-1)
        probs.append((top.values - logits.logsumexp(-1, keepdim=True)).exp().cpu())
        ids.append(top.indices.to(torch.int32).cpu())
    return torch.cat(ids), torch.cat(probs)


@torch.no_grad()
def search_values(model: Model, token_id: int, layers: list[int], top: int = 20) -> list[tuple[int, int, float, int]]:
    """Exact search over every neuron of `layers`: (layer, neuron, probability, rank) of the
    `top` neurons whose values give `token_id` the highest probability."""
    found = []
    for layer in layers:
        logits = direction_logits(model, value_vectors(model, layer))
        target = logits[:, token_id]
        p = (target - logits.logsumexp(-1)).exp()
        rank = (logits > target[:, None]).sum(-1)
        best = p.topk(min(top, p.shape[0]))
        found += [(layer, int(i), float(v), int(rank[i])) for v, i in zip(best.values, best.indices)]
    found.sort(key=lambda row: -row[2])
    return found[:top]
