"""Interventions on one memory: switch it off (coefficient 0) or on (a high coefficient) during
the forward pass, through a hook on `blocks.{l}.mlp.hook_post`, and compare the next-token
distribution and a short greedy generation with and without it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import WorkbenchError
from interp.memories.keys import coefficient_hook
from interp.memories.values import value_logits

if TYPE_CHECKING:
    from interp.models import Model

MODES = ("off", "on")


def memory_hook(neuron: int, coefficient: float, last_only: bool = False):
    """A hook that sets the neuron's coefficient (at every position, or only the last one)."""

    def hook(activation: Float[Tensor, "batch pos neuron"], hook=None) -> Tensor:
        activation = activation.clone()
        if last_only:
            activation[:, -1, neuron] = coefficient
        else:
            activation[..., neuron] = coefficient
        return activation

    return hook


@dataclass
class InterventionResult:
    prompt: str
    layer: int
    neuron: int
    mode: str  # "off" or "on"
    coefficient: float  # the coefficient the neuron was set to
    original_coefficient: float  # its coefficient at the last position without intervention
    value_token: str  # the value's top token (what the memory promotes)
    value_token_prob: tuple[float, float]  # next-token probability of value_token: (before, after)
    logit_change: float  # largest |logit difference| at the last position
    kl: float  # KL(before || after) of the next-token distribution
    top_before: list[tuple[str, float]] = field(default_factory=list)
    top_after: list[tuple[str, float]] = field(default_factory=list)
    generation_before: str = ""
    generation_after: str = ""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@torch.no_grad()
def _greedy(model: Model, tokens: Tensor, n: int, hooks) -> str:
    out = []
    for _ in range(n):
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1]
        nxt = int(logits.argmax())
        out.append(nxt)
        tokens = torch.cat([tokens, torch.tensor([[nxt]], device=tokens.device)], dim=1)
        if tokens.shape[1] >= model.info.n_ctx:
            break
    return model.tokenizer.decode(out)


@torch.no_grad()
def intervene(
    model: Model,
    prompt: str,
    layer: int,
    neuron: int,
    mode: str = "off",
    value: float | None = None,
    top: int = 10,
    generate: int = 8,
    last_only: bool = False,
) -> InterventionResult:
    """Run `prompt` with memory (layer, neuron) switched off (coefficient 0) or on (coefficient
    `value`; default: 10x the largest |coefficient| the neuron reaches on the prompt, at least 10)."""
    info = model.info
    if info.attn_only or info.d_mlp is None:
        raise WorkbenchError(f"{info.name} is attention-only: it has no FFN memories")
    if not 0 <= layer < info.n_layers:
        raise WorkbenchError(f"layer {layer} is out of range: {info.name} has layers 0..{info.n_layers - 1}")
    if not 0 <= neuron < info.d_mlp:
        raise WorkbenchError(f"neuron {neuron} is out of range: layers have neurons 0..{info.d_mlp - 1}")
    if mode not in MODES:
        raise WorkbenchError(f"unknown mode {mode!r}: use 'off' or 'on'")
    tokens = model.to_tokens(prompt)
    name = coefficient_hook(layer)
    seen: dict[str, Tensor] = {}

    def grab(act: Tensor, hook=None) -> Tensor:
        seen["coef"] = act[0, :, neuron].detach().float().cpu()
        return act

    before = model.run_with_hooks(tokens, fwd_hooks=[(name, grab)])[0, -1].float()
    coefs = seen["coef"]
    if mode == "off":
        coefficient = 0.0
    else:
        coefficient = float(value) if value is not None else max(10.0, 10 * float(coefs.abs().max()))
    hooks = [(name, memory_hook(neuron, coefficient, last_only))]
    after = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float()

    value_id = int(value_logits(model, layer, [neuron])[0].argmax())
    p_before, p_after = before.softmax(-1), after.softmax(-1)
    kl = float((p_before * (before.log_softmax(-1) - after.log_softmax(-1))).sum())

    def listing(p: Tensor) -> list[tuple[str, float]]:
        best = p.topk(top)
        return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(best.values, best.indices)]

    return InterventionResult(
        prompt=prompt,
        layer=layer,
        neuron=neuron,
        mode=mode,
        coefficient=coefficient,
        original_coefficient=float(coefs[-1]),
        value_token=model.tokenizer.decode([value_id]),
        value_token_prob=(float(p_before[value_id]), float(p_after[value_id])),
        logit_change=float((after - before).abs().max()),
        kl=kl,
        top_before=listing(p_before),
        top_after=listing(p_after),
        generation_before=_greedy(model, tokens, generate, []) if generate else "",
        generation_after=_greedy(model, tokens, generate, hooks) if generate else "",
    )
