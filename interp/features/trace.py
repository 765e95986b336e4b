"""The memory trace in feature space: which transcoder features drive a prediction, and what the
model predicts with some of them switched off.

At the prompt's last position the model predicts token t. Layer l's transcoder reads the MLP's
input x there and writes y_hat = sum_f a_f W_dec[f] + b_dec (+ W_skip x); the MLP's real output
is y = y_hat + e, e the transcoder's error. Through the final norm with that position's scale σ
(interp.memories.trace.reading_direction gives r_t), the direct effect on t's logit splits exactly:

    y · r_t / σ = sum_f a_f (W_dec[f] · r_t) / σ  +  (b_dec + W_skip x) · r_t / σ  +  e · r_t / σ
                  ---- feature contributions ----   ------- bias and skip -------   -- error --

so the features' contributions plus the bias/skip and error terms add up to the MLP's direct effect
(tests/features/test_trace.py). Switching features off (`switch_off`) subtracts a_f W_dec[f] from
the MLP's output at the last position and keeps the error term: the rest of the model runs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from interp.errors import WorkbenchError
from interp.features.dictionary import Dictionary
from interp.features.formats import check_for_model
from interp.lens import direction_logits
from interp.memories.intervene import check_prompt
from interp.memories.trace import SCALE_HOOK, reading_direction

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class TracedFeature:
    layer: int
    feature: int
    activation: float  # a_f at the last position
    contribution: float  # a_f (W_dec[f] · r_t) / σ
    value_tokens: list[tuple[str, float]] = field(default_factory=list)  # the decoder row's top tokens

    @property
    def name(self) -> str:
        return f"{self.layer}:{self.feature}"


@dataclass
class LayerFeatures:
    layer: int
    mlp_effect: float  # the MLP's direct effect on t's logit
    feature_effect: float  # the sum of every active feature's contribution
    bias_effect: float  # b_dec (+ skip) part
    error_effect: float  # the transcoder's error part
    features: list[TracedFeature]  # the layer's features that raise t's logit most


@dataclass
class FeatureTrace:
    prompt: str
    token: str
    token_id: int
    prob: float
    layers: list[LayerFeatures]
    top: list[TracedFeature]  # largest contributions over all layers
    against: list[TracedFeature]  # most negative contributions


def _check(model: Model, d: Dictionary) -> None:
    check_for_model(d, model)
    if not d.site.is_transcoder:
        raise WorkbenchError("the trace in feature space needs a transcoder (site 'mlp'), not an SAE")


@torch.no_grad()
def feature_trace(model: Model, d: Dictionary, prompt: str, top: int = 10, per_layer: int = 3, n_values: int = 8) -> FeatureTrace:
    """The features behind the next-token prediction for `prompt` (module doc)."""
    _check(model, d)
    if top < 1 or per_layer < 0 or n_values < 1:
        raise WorkbenchError(f"top and n_values must be at least 1 and per_layer at least 0, got {top}, {n_values}, {per_layer}")
    tokens = model.to_tokens(check_prompt(prompt))
    site = d.site
    names = {site.input_hook(la) for la in d.layers} | {site.output_hook(la) for la in d.layers} | {SCALE_HOOK}
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    last = logits[0, -1].float()
    t = int(last.argmax())
    sigma = float(cache[SCALE_HOOK][0, -1].reshape(-1)[0]) if SCALE_HOOK in cache else 1.0
    r = reading_direction(model, t)
    rows, layers = [], []
    for layer in d.layers:
        x = cache[site.input_hook(layer)][0, -1].float()
        y = cache[site.output_hook(layer)][0, -1].float()
        i = d.index(layer)
        acts = d.encode(x, layer)
        w = d.W_dec[i].float().to(r.device)
        contrib = acts.to(r.device) * (w @ r) / sigma
        recon = d.reconstruct(x, layer).float().to(r.device)
        bias = float((recon - acts.to(r.device) @ w) @ r) / sigma
        active = (acts > 0).nonzero().squeeze(-1).tolist()
        mine = sorted(((layer, f, float(acts[f]), float(contrib[f])) for f in active), key=lambda z: -z[3])
        rows += mine
        layers.append((layer, float(y.to(r.device) @ r) / sigma, float(contrib.sum()), bias,
                       float((y.to(r.device) - recon) @ r) / sigma, mine[:per_layer]))  # fmt: skip
    named = _features(model, d, rows, n_values)
    best = sorted(named, key=lambda f: -f.contribution)
    probs = last.softmax(-1)
    lookup = {(f.layer, f.feature): f for f in named}
    return FeatureTrace(prompt, model.tokenizer.decode([t]), t, float(probs[t]),
                        [LayerFeatures(la, mlp, fe, b, e, [lookup[(la, f)] for la, f, _, _ in mine])
                         for la, mlp, fe, b, e, mine in layers],
                        best[:top], [f for f in best[::-1][:top] if f.contribution < 0])  # fmt: skip


def _features(model: Model, d: Dictionary, rows: list, n_values: int) -> list[TracedFeature]:
    out = [TracedFeature(la, f, a, c) for la, f, a, c in rows]
    if not out:
        return out
    vectors = torch.stack([d.W_dec[d.index(f.layer)][f.feature] for f in out])
    logits = direction_logits(model, vectors)
    best = logits.topk(n_values, dim=-1)
    probs = (best.values - logits.logsumexp(-1, keepdim=True)).exp()
    for f, ids, ps in zip(out, best.indices.tolist(), probs.tolist()):
        f.value_tokens = [(model.tokenizer.decode([i]), p) for i, p in zip(ids, ps)]
    return out


def parse_feature(text: str) -> tuple[int, int]:
    """'LAYER:FEATURE' -> (layer, feature)."""
    try:
        layer, feature = (int(p) for p in text.split(":"))
    except ValueError:
        raise WorkbenchError(f"bad feature {text!r}: write LAYER:FEATURE, e.g. 12:345") from None
    return layer, feature


@torch.no_grad()
def switch_off(model: Model, d: Dictionary, prompt: str, features: list[tuple[int, int]], top: int = 5) -> dict:
    """The prediction before and after removing `features`' writes at the last position."""
    _check(model, d)
    for layer, f in features:
        d.index(layer)
        if not 0 <= f < d.cfg.d_sae:
            raise WorkbenchError(f"feature {f} is out of range: layers have features 0..{d.cfg.d_sae - 1}")
    tokens = model.to_tokens(check_prompt(prompt))
    site, inputs, fwd = d.site, {}, []
    for layer in sorted({la for la, _ in features}):
        mine = [f for la, f in features if la == layer]

        def grab(act, hook=None, layer=layer):
            inputs[layer] = act[0, -1]
            return act

        def put(act, hook=None, layer=layer, mine=mine):
            acts = d.encode(inputs[layer].float(), layer)
            w = d.W_dec[d.index(layer)]
            out = act.clone()
            out[0, -1] -= (acts[mine, None] * w[mine]).sum(0).to(act.dtype)
            return out

        fwd += [(site.input_hook(layer), grab), (site.output_hook(layer), put)]
    before = model(tokens)[0, -1].float().softmax(-1)
    after = model.run_with_hooks(tokens, fwd_hooks=fwd)[0, -1].float().softmax(-1)

    def tops(p):
        v = p.topk(top)
        return [(model.tokenizer.decode([i]), float(q)) for i, q in zip(v.indices.tolist(), v.values.tolist())]

    return {"before": tops(before), "after": tops(after), "off": [f"{la}:{f}" for la, f in features]}
