"""An attention layer's weights as the circuit engines read them, looked up in one place.

TransformerLens's bridge shows them in its classic layout: W_Q [head, d_model, d_head] per query
head, W_K / W_V [kv head, d_model, d_head] per key/value head (GQA models keep them ungrouped), W_O
[head, d_head, d_model], biases [head, d_head] or None. `stacked_qkv` puts a layer's q, k and v
heads one after the other ([n_heads + 2 n_kv, d_model, d_head]: the column order of a layer's
inputs in interp.circuits.types.Graph), so every q/k/v projection of a layer is one batched matmul.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

KINDS = ("q", "k", "v")


def projection(attn, kind: str) -> tuple[Float[Tensor, "head d_model d_head"], Float[Tensor, "head d_head"] | None]:
    """(W, b) of one kind of projection ('q', 'k' or 'v') of an attention bridge."""
    if kind == "q":
        return attn.W_Q, attn.b_Q
    if kind == "k":
        return attn.W_K, attn.b_K
    if kind == "v":
        return attn.W_V, attn.b_V
    raise ValueError(f"no projection {kind!r}; choose q, k or v")


def stacked_qkv(attn) -> tuple[Float[Tensor, "column d_model d_head"], Float[Tensor, "column d_head"] | None]:
    """(W, b) of every q, k and v head of a layer, stacked (q heads, then k heads, then v heads);
    b is None when the layer has no biases at all (a missing one is zeros)."""
    pairs = [projection(attn, k) for k in KINDS]
    W = torch.cat([w for w, _ in pairs], 0)
    if all(b is None for _, b in pairs):
        return W, None
    zeros = lambda w: torch.zeros(w.shape[0], w.shape[2], dtype=w.dtype, device=w.device)  # noqa: E731
    return W, torch.cat([b if b is not None else zeros(w) for w, b in pairs], 0)


def columns(n_heads: int, n_kv: int) -> dict[str, slice]:
    """Where each kind's heads sit among a layer's stacked columns."""
    return {"q": slice(0, n_heads), "k": slice(n_heads, n_heads + n_kv), "v": slice(n_heads + n_kv, n_heads + 2 * n_kv)}
