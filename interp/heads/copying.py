"""Copying score: does a head's OV circuit, read through the unembedding, raise the logit of
the token it attends to? (An induction head is prefix matching *and* copying.)

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from interp import hooks
from interp.lens import direction_logits
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
    targets = tokens[:, 1:].reshape(-1).to(model.device)[:max_positions]
    scores = []
    for layer, head in heads:
        v = values[layer][:, 1:, head // group].reshape(-1, values[layer].shape[-1])[:max_positions]
        out = v.float() @ model.bridge.blocks[layer].attn.W_O[head].detach().float()
        logits = direction_logits(model, out)
        target_logit = logits.gather(-1, targets[:, None]).squeeze(-1)
        z = (target_logit - logits.mean(-1)) / logits.std(-1).clamp_min(1e-12)
        scores.append(float(z.mean()))
    return scores
