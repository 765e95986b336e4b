"""Which memories drive a prediction (the first view of LM-Debugger, Geva et al. 2022).

For a prompt, at its last position, the model predicts token t. Memory (l, i, s) adds
c_i · W_out[l][i] to the residual stream there (c_i = the neuron's coefficient; the memory is
the "+" one where c_i > 0 and the "-" one where c_i < 0, keys.py), so its direct effect on t's
logit, through the final norm with that position's actual scale σ, is

    contribution = c_i · (W_out[l][i] · r_t) / σ        r_t = C(w ⊙ W_U[:, t])

where w is the final norm's weight and C centres a vector (LayerNorm only; RMSNorm: C = 1;
no final norm: w = 1, σ = 1). That is the memory's coefficient times its value's logit for t
(interp.lens.direction_logits), divided by σ. Because σ is the real one, the contributions of a
layer's memories plus its b_out term add up exactly to the layer's MLP direct effect on t's
logit, and every component's direct effect plus the norm's and unembedding's biases to the
model's own logit (tests/memories/test_trace.py). The direct effect ignores what later layers
do with the memory's output; the off switch (intervene.switch_off) measures the whole effect.

Two rankings (`RANKINGS`), named on every Trace:

    direct        the direct effect on the predicted token above (the default)
    lm-debugger   LM-Debugger's: |c_i| · ‖W_out[l][i]‖, how much the memory writes whatever the token

Beside each memory: its total effect for the first `n_total` of the ranking (the predicted
token's logit and probability with that memory switched off at every position, by
intervene.switch_off: a memory whose direct effect raises the token can lower it in total, when
later layers turn its output around), and the predicted token's rank in the memory's value (its
vocabulary projection; 1 = the value's top token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.lens import direction_logits, final_norm
from interp.memories.intervene import check_prompt, switch_off
from interp.memories.keys import SIGN_FACTOR, coefficient_hook, memory_name
from interp.memories.values import value_vectors

if TYPE_CHECKING:
    from interp.memories.index import MemoryIndex, Trigger
    from interp.models import Model
    from interp.types import Progress

SCALE_HOOK = hooks.name("final_scale")
RANKINGS = {  # name -> what the ranking orders memories by
    "direct": "direct effect on the predicted token (coefficient × the value's logit for it, through the final norm)",
    "lm-debugger": "LM-Debugger's ranking: |coefficient| × the value's norm (how much the memory writes, whatever the token)",
}
N_TOTAL = 5  # memories of the ranking whose total effect is measured (one switched-off pass each)


@dataclass
class TracedMemory:
    layer: int
    neuron: int
    sign: str  # "+" where the neuron's coefficient is > 0, "-" where it is < 0
    coefficient: float  # the memory's coefficient at the last position (sign · c > 0)
    contribution: float  # its direct effect on the predicted token's logit (module doc)
    value_norm: float = 0.0  # ‖W_out[layer][neuron]‖
    token_rank: int = 0  # the predicted token's rank in the value's vocabulary projection (1 = its top token)
    total_effect: float | None = None  # logit(t) - logit(t) with the memory off (measured for the first N_TOTAL)
    prob_off: float | None = None  # p(t) with the memory off (same)
    value_tokens: list[tuple[str, float]] = field(default_factory=list)  # the value's top tokens, probabilities
    triggers: list[Trigger] = field(default_factory=list)  # its top trigger examples, when an index is given

    @property
    def lm_debugger_score(self) -> float:
        """LM-Debugger's score: |coefficient| × the value's norm."""
        return self.coefficient * self.value_norm

    @property
    def name(self) -> str:
        return memory_name(self.layer, self.neuron, self.sign)


@dataclass
class LayerTrace:
    layer: int
    mlp_effect: float  # the layer's MLP direct effect on the predicted token's logit (memories + b_out)
    memories: list[TracedMemory]  # the layer's memories that raise the predicted token's logit most


@dataclass
class Trace:
    prompt: str
    str_tokens: list[str]
    token: str  # the predicted next token (argmax)
    token_id: int
    prob: float  # its probability
    logit: float  # its logit
    scale: float  # the final norm's scale σ at the last position (1 without a final norm)
    layers: list[LayerTrace]
    top: list[TracedMemory]  # the memories ranked first by `ranking`, all layers
    against: list[TracedMemory]  # the memories whose direct effect lowers it most, all layers
    ranking: str = "direct"  # a key of RANKINGS: what `top` and each layer's memories are ordered by

    @property
    def ranking_label(self) -> str:
        return RANKINGS[self.ranking]


def reading_direction(model: Model, token_id: int) -> Float[Tensor, " d_model"]:
    """r_t with direction_logits(model, v)[:, t] == v @ r_t: C(w ⊙ W_U[:, t]) (module doc)."""
    kind, weight = final_norm(model)
    r = model.bridge.W_U.detach()[:, token_id].float()
    if weight is not None:
        r = r * weight.float()
    if kind == "LN":
        r = r - r.mean()
    return r


def _memories(model: Model, rows: list[tuple[int, int, float, float, float]], n_values: int,
              token_id: int) -> list[TracedMemory]:  # fmt: skip
    """TracedMemory for (layer, neuron, c, contribution, value norm) rows, with their values' top
    tokens and the rank of `token_id` in each value: one projection through the unembedding for
    all of them (W_U is read once)."""
    out = [TracedMemory(layer, neuron, "+" if c > 0 else "-", abs(c), contrib, norm)
           for layer, neuron, c, contrib, norm in rows]  # fmt: skip
    unique = list(dict.fromkeys((m.layer, m.neuron, m.sign) for m in out))
    if not unique:
        return out
    vectors = torch.stack([value_vectors(model, la)[n] * SIGN_FACTOR[s] for la, n, s in unique])
    logits = direction_logits(model, vectors)
    best = logits.topk(n_values, dim=-1)
    probs = (best.values - logits.logsumexp(-1, keepdim=True)).exp()
    decode = model.tokenizer.decode
    tokens = {key: [(decode([i]), p) for i, p in zip(ids, ps)]
              for key, ids, ps in zip(unique, best.indices.tolist(), probs.tolist())}  # fmt: skip
    ranks = dict(zip(unique, ((logits > logits[:, token_id : token_id + 1]).sum(-1) + 1).tolist()))
    for m in out:
        m.value_tokens = list(tokens[m.layer, m.neuron, m.sign])
        m.token_rank = int(ranks[m.layer, m.neuron, m.sign])
    return out


def _total_effects(model: Model, prompt: str, memories: list[TracedMemory], progress: Progress | None) -> None:
    """Each memory's total effect: the prediction's logit and probability with it switched off."""
    for i, m in enumerate(memories):
        off = switch_off(model, prompt, [(m.layer, m.neuron, m.sign)], top=1)
        m.total_effect, m.prob_off = off.total_effect, off.prob_after
        if progress is not None:
            progress(i + 1, len(memories), "switching memories off one by one")


def check_index_model(index: MemoryIndex, model: Model) -> None:
    """Refuse an index built for another model, naming what differs (a name, or a shape the two
    share a name on: an index of a retrained or edited model)."""
    built, info = index.model_info, model.info.to_dict()
    differ = [k for k in ("name", "n_layers", "d_mlp", "d_vocab") if built.get(k) != info.get(k)]
    if differ:
        what = ", ".join(f"{k} {built.get(k)!r} (the model: {info.get(k)!r})" for k in differ)
        raise WorkbenchError(f"this memory index does not fit {model.info.name}: it was built with {what}; "
                             "give an index built for this model")  # fmt: skip


def _attach_triggers(model: Model, index: MemoryIndex, memories: list[TracedMemory], n: int) -> None:
    check_index_model(index, model)
    for m in memories:
        if m.layer in index.layers and m.sign in index.signs:
            m.triggers = index.show(m.layer, m.neuron, m.sign, n_triggers=n).triggers


@dataclass
class Contributions:
    token_id: int  # the predicted token t (argmax at the last position)
    logits: Float[Tensor, " vocab"]  # the model's last-position logits (float32)
    scale: float  # the final norm's scale σ at the last position
    coefficients: Float[Tensor, "layer neuron"]  # every neuron's coefficient c at the last position
    contributions: Float[Tensor, "layer neuron"]  # c · (W_out[i] · r_t) / σ
    mlp_effect: Float[Tensor, " layer"]  # each MLP's direct effect on t's logit: the row sums + b_out · r_t / σ


@torch.no_grad()
def contributions(model: Model, tokens: Tensor, progress: Progress | None = None) -> Contributions:
    """Every memory's direct effect on the predicted token's logit at the last position of
    `tokens` [1, pos], from one forward pass (module doc). Only the last position's coefficients
    and scale are kept (a long prompt's every-position cache would take gigabytes), and
    `progress(done, total, message)` is called as each layer's MLP runs."""
    info = model.info
    kept: dict[str, Tensor] = {}

    def keep(key: str, layer: int | None):
        def hook(activation: Tensor, hook=None):
            kept[key] = activation[0, -1].detach().float().clone()
            if progress is not None and layer is not None:
                progress(layer + 1, info.n_layers, f"layer {layer}")

        return key, hook

    fwd = [keep(coefficient_hook(layer), layer) for layer in range(info.n_layers)] + [keep(SCALE_HOOK, None)]
    if progress is not None:
        progress(0, info.n_layers, "running the model")
    logits = model.run_with_hooks(tokens, fwd_hooks=fwd)
    last = logits[0, -1].float()
    del logits
    token_id = int(last.argmax())
    scale = float(kept[SCALE_HOOK].reshape(-1)[0]) if SCALE_HOOK in kept else 1.0
    r = reading_direction(model, token_id)
    b_out = getattr(model.bridge, "b_out", None)
    coefs = torch.stack([kept[coefficient_hook(layer)] for layer in range(info.n_layers)])
    contrib = torch.stack([value_vectors(model, layer).float() @ r for layer in range(info.n_layers)]) * coefs / scale
    bias = b_out.float() @ r / scale if b_out is not None else torch.zeros(info.n_layers, device=contrib.device)
    return Contributions(token_id, last, scale, coefs, contrib, contrib.sum(-1) + bias)


@torch.no_grad()
def trace(
    model: Model,
    prompt: str,
    top: int = 10,
    per_layer: int = 3,
    index: MemoryIndex | None = None,
    n_values: int = 8,
    n_triggers: int = 3,
    progress: Progress | None = None,
    rank: str = "direct",
    n_total: int = N_TOTAL,
) -> Trace:
    """The memories behind the model's next-token prediction for `prompt`: per layer the
    `per_layer` memories ranked first by `rank` (RANKINGS: the direct effect on the predicted
    token, or LM-Debugger's |coefficient| × value norm), over all layers the `top` first and the
    `top` whose direct effect is most negative, each with its value's `n_values` top tokens, the
    predicted token's rank in its value and, from `index`, its `n_triggers` strongest trigger
    examples; the first `n_total` of the ranking also get their total effect (switched off, one
    pass each). Only memories active at the last position (c != 0) are listed. `progress` follows
    the forward pass layer by layer (a prompt of thousands of tokens takes a while on a CPU), then
    the switched-off passes."""
    info = model.info
    if info.attn_only or not info.d_mlp:
        raise WorkbenchError(f"{info.name} is attention-only: it has no FFN memories to trace")
    if top < 1 or per_layer < 0 or n_values < 1 or n_triggers < 1 or n_total < 0:
        raise WorkbenchError(f"top, n_values and n_triggers must be at least 1 and per_layer and n_total at least 0, "
                             f"got {top}, {n_values}, {n_triggers}, {per_layer} and {n_total}")  # fmt: skip
    if rank not in RANKINGS:
        raise WorkbenchError(f"unknown ranking {rank!r}; use one of {', '.join(RANKINGS)}")
    tokens = model.to_tokens(check_prompt(prompt))
    if index is not None:
        check_index_model(index, model)  # before the pass
    got = contributions(model, tokens, progress)
    coefs, contrib, n = got.coefficients, got.contributions, info.d_mlp
    norms = torch.stack([value_vectors(model, layer).float().norm(dim=-1) for layer in range(info.n_layers)])
    norms = norms.to(coefs.device)
    score = contrib if rank == "direct" else coefs.abs() * norms
    active = coefs != 0
    count = int(active.sum())

    def rows(where: list[int]) -> list[tuple[int, int, float, float, float]]:
        cells = [divmod(i, n) for i in where]
        return [(la, ne, float(coefs[la, ne]), float(contrib[la, ne]), float(norms[la, ne])) for la, ne in cells]

    flat = contrib.flatten()
    best = score.flatten().masked_fill(~active.flatten(), float("-inf")).topk(min(top, count)).indices.tolist()
    worst = flat.masked_fill(~active.flatten(), float("inf")).topk(min(top, count), largest=False).indices.tolist()
    top_rows, against_rows = rows(best), rows([i for i in worst if flat[i] < 0])
    per_rows = []
    for layer in range(info.n_layers):
        k = min(per_layer, int(active[layer].sum()))
        ranked = score[layer].masked_fill(~active[layer], float("-inf"))
        per_rows.append(rows([layer * n + int(i) for i in ranked.topk(k).indices.tolist()]) if k else [])

    every = _memories(model, top_rows + against_rows + [r_ for group in per_rows for r_ in group], n_values,
                      got.token_id)  # fmt: skip
    if index is not None:
        _attach_triggers(model, index, every, n_triggers)
    top_m, against_m, rest = every[: len(top_rows)], every[len(top_rows) : len(top_rows) + len(against_rows)], \
        every[len(top_rows) + len(against_rows) :]  # fmt: skip
    layer_traces = []
    for layer, group in enumerate(per_rows):
        layer_traces.append(LayerTrace(layer, float(got.mlp_effect[layer]), rest[: len(group)]))
        rest = rest[len(group) :]
    _total_effects(model, prompt, top_m[:n_total], progress)
    probs = got.logits.softmax(-1)
    return Trace(
        prompt=prompt,
        str_tokens=model.to_str_tokens(tokens[0]),
        token=model.tokenizer.decode([got.token_id]),
        token_id=got.token_id,
        prob=float(probs[got.token_id]),
        logit=float(got.logits[got.token_id]),
        scale=got.scale,
        layers=layer_traces,
        top=top_m,
        against=against_m,
        ranking=rank,
    )
