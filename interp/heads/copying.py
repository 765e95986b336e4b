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

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.heads.detect import as_bridge


class _Stop(Exception):
    pass


def final_norm_weight(bridge) -> Tensor | None:
    """The final norm's elementwise weight, or None (no norm or no weight)."""
    ln = getattr(bridge, "ln_final", None)
    if ln is None:
        return None
    for name, p in ln.named_parameters():
        if name.endswith("weight") and p.ndim == 1:
            return p.detach()
    return None


def read_through_unembedding(bridge, out: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
    """Logits of residual directions `out`, through the final norm's linear part and W_U."""
    norm = (bridge.cfg.normalization_type or "").upper()
    out = out.float()
    if norm.startswith("LN"):
        out = out - out.mean(-1, keepdim=True)
    weight = final_norm_weight(bridge) if norm else None
    if weight is not None:
        out = out * weight.float()
    return out @ bridge.W_U.detach().float()


@torch.no_grad()
def copying_scores(
    model,
    tokens: Int[Tensor, "batch pos"],
    heads: list[tuple[int, int]],
    max_positions: int = 512,
) -> list[float]:
    """Copying score of each (layer, head) on `tokens` (non-BOS positions, at most max_positions)."""
    if not heads:
        return []
    bridge = as_bridge(model)
    group = bridge.cfg.n_heads // (getattr(bridge.cfg, "n_key_value_heads", None) or bridge.cfg.n_heads)
    layers = sorted({layer for layer, _ in heads})
    values: dict[int, Tensor] = {}

    def keep(v: Tensor, hook, layer: int) -> None:
        values[layer] = v.detach()
        if layer == layers[-1]:
            raise _Stop

    device = next(bridge.parameters()).device
    hooks = [(f"blocks.{layer}.attn.hook_v", lambda v, hook, layer=layer: keep(v, hook, layer)) for layer in layers]
    try:
        bridge.run_with_hooks(tokens.to(device), fwd_hooks=hooks)
    except _Stop:
        pass
    targets = tokens[:, 1:].reshape(-1).to(device)[:max_positions]
    scores = []
    for layer, head in heads:
        v = values[layer][:, 1:, head // group].reshape(-1, values[layer].shape[-1])[:max_positions]
        out = v.float() @ bridge.blocks[layer].attn.W_O[head].detach().float()
        logits = read_through_unembedding(bridge, out)
        target_logit = logits.gather(-1, targets[:, None]).squeeze(-1)
        z = (target_logit - logits.mean(-1)) / logits.std(-1).clamp_min(1e-12)
        scores.append(float(z.mean()))
    return scores
