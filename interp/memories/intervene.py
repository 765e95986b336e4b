"""Interventions on memories: switch one off (its coefficient 0) or on (a high coefficient)
during the forward pass, through a hook on `blocks.{l}.mlp.hook_post`, and compare the next-token
distribution and a short greedy generation with and without it.

A memory is one sign of a neuron (keys.py), so switching memory (l, i, "+") off zeroes the
neuron's coefficient only where it is positive and leaves its "-" memory working (and the
other way round). Switching a memory on sets the neuron's coefficient to sign · value: a neuron
has one coefficient, so its other memory is silent meanwhile. Both act at every position of the
prompt (or only the last, `last_only`), and through every later position of the generation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import WorkbenchError
from interp.memories.keys import SIGN_FACTOR, check_sign, coefficient_hook
from interp.memories.values import value_logits
from interp.types import SWITCHES, Progress, check_choice

if TYPE_CHECKING:
    from interp.models import Model

MODES = SWITCHES  # "off", "on"
MAX_FACTOR = 100.0  # "on" coefficients above this many times the neuron's scale on the prompt are refused
MIN_SCALE = 1.0  # ... where the scale is its largest |coefficient| on the prompt, but at least this


def check_prompt(prompt: str) -> str:
    """`prompt` unless it is empty or only whitespace (the same words as Model.to_tokens)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError("empty prompt: type some text (not only spaces) to run the model on")
    return prompt


def check_memory(model: Model, layer: int, neuron: int, sign: str = "+") -> None:
    """A clear error unless (layer, neuron, sign) is a memory of `model`."""
    info = model.info
    if info.attn_only or not info.d_mlp:
        raise WorkbenchError(f"{info.name} is attention-only: it has no FFN memories")
    if not 0 <= layer < info.n_layers:
        raise WorkbenchError(f"layer {layer} is out of range: {info.name} has layers 0..{info.n_layers - 1}")
    if not 0 <= neuron < info.d_mlp:
        raise WorkbenchError(f"neuron {neuron} is out of range: layers have neurons 0..{info.d_mlp - 1}")
    check_sign(sign)


def memory_hook(neuron: int, coefficient: float | None, last_only: bool = False, sign: str | None = None):
    """A hook on hook_post for one neuron. `coefficient` None: switch memory `sign` off (its
    coefficient, sign · c, goes to 0 where it is positive; the other sign's memory is kept);
    `sign` None too: the whole neuron is zeroed. A number: the neuron's coefficient becomes it.
    At every position, or only the last one."""

    def hook(activation: Float[Tensor, "batch pos neuron"], hook=None) -> Tensor:
        activation = activation.clone()
        where = activation[:, -1:, neuron] if last_only else activation[..., neuron]
        if coefficient is not None:
            where.fill_(coefficient)
        elif sign is None:
            where.zero_()
        else:
            where.masked_fill_(where * SIGN_FACTOR[sign] > 0, 0.0)
        return activation

    return hook


def off_hooks(memories: Iterable[tuple[int, int, str]], last_only: bool = False) -> list[tuple[str, object]]:
    """Forward hooks that switch every memory (layer, neuron, sign) of `memories` off."""
    return [(coefficient_hook(layer), memory_hook(neuron, None, last_only, sign)) for layer, neuron, sign in memories]


def check_finite(value: float) -> float:
    if not math.isfinite(value):
        raise WorkbenchError(
            f"coefficient {value} is not a finite number: give a positive number, at most {MAX_FACTOR:g}x the "
            "neuron's largest |coefficient| on the prompt"
        )
    return value


def check_value(value: float, scale: float) -> float:
    """An "on" coefficient must be a positive finite number at most MAX_FACTOR times the
    neuron's scale (its largest |coefficient| on the prompt, at least MIN_SCALE)."""
    limit = MAX_FACTOR * max(scale, MIN_SCALE)
    if not 0 < check_finite(value) <= limit:
        raise WorkbenchError(
            f"coefficient {value:g} is out of range: give a number in (0, {limit:.4g}] -- the memory's own "
            f"coefficient, at most {MAX_FACTOR:g}x the neuron's largest |coefficient| on this prompt "
            f"({scale:.3g}, counted as at least {MIN_SCALE:g})"
        )
    return value


@dataclass
class InterventionResult:
    prompt: str
    layer: int
    neuron: int
    mode: str  # "off" or "on"
    coefficient: float  # "on": the memory's coefficient it was set to; "off": 0
    original_coefficient: float  # sign · c at the last position without intervention (negative: the other memory is active)
    value_token: str  # the value's top token (what the memory promotes)
    value_token_prob: tuple[float, float]  # next-token probability of value_token: (before, after)
    logit_change: float  # largest |logit difference| at the last position
    kl: float  # KL(before || after) of the next-token distribution
    top_before: list[tuple[str, float]] = field(default_factory=list)
    top_after: list[tuple[str, float]] = field(default_factory=list)
    generation_before: str = ""
    generation_after: str = ""
    sign: str = "+"
    neuron_coefficient: float = 0.0  # the neuron's own coefficient c at the last position (either sign)

    @property
    def memory_coefficient(self) -> float:
        """This memory's own coefficient at the last position: sign · c where that is positive, else 0
        (the neuron's other memory is the active one there)."""
        return max(self.original_coefficient, 0.0)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def top_tokens(model: Model, probs: Tensor, top: int) -> list[tuple[str, float]]:
    best = probs.topk(min(top, probs.shape[-1]))
    return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(best.values, best.indices)]


@torch.no_grad()
def _greedy(model: Model, tokens: Tensor, n: int, hooks, tick=None) -> str:
    out = []
    for _ in range(n):
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1]
        nxt = int(logits.argmax())
        out.append(nxt)
        if tick is not None:
            tick()
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
    sign: str = "+",
    progress: Progress | None = None,
) -> InterventionResult:
    """Run `prompt` with memory (layer, neuron, sign) switched off (its coefficient 0 where it is
    active) or on (the neuron's coefficient set to sign · `value`; default 10x the largest
    |coefficient| the neuron reaches on the prompt, at least 10). `progress(done, total,
    "running the model")` is called after each forward pass (2 + 2 x `generate`)."""
    check_memory(model, layer, neuron, sign)
    check_choice(mode, MODES, "mode")
    check_prompt(prompt)
    if value is not None:
        check_finite(value)  # before any work; the range needs the prompt's coefficients
    if top < 1 or generate < 0:
        raise WorkbenchError(f"top must be at least 1 and generate at least 0, got {top} and {generate}")
    tokens = model.to_tokens(prompt)  # refuses a prompt longer than the context, before any forward pass
    total = 2 + 2 * generate
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total, "running the model")

    name = coefficient_hook(layer)
    seen: dict[str, Tensor] = {}

    def grab(act: Tensor, hook=None) -> Tensor:
        seen["coef"] = act[0, :, neuron].detach().float().cpu()
        return act

    factor = SIGN_FACTOR[sign]
    before = model.run_with_hooks(tokens, fwd_hooks=[(name, grab)])[0, -1].float()
    tick()
    coefs = seen["coef"]
    scale = float(coefs.abs().max())
    if mode == "off":
        coefficient = 0.0
        hooks = [(name, memory_hook(neuron, None, last_only, sign))]
    else:
        coefficient = check_value(float(value), scale) if value is not None else max(10.0, 10 * scale)
        hooks = [(name, memory_hook(neuron, factor * coefficient, last_only))]
    after = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float()
    tick()

    value_id = int(value_logits(model, layer, [neuron], sign)[0].argmax())
    p_before, p_after = before.softmax(-1), after.softmax(-1)
    kl = float((p_before * (before.log_softmax(-1) - after.log_softmax(-1))).sum())
    return InterventionResult(
        prompt=prompt,
        layer=layer,
        neuron=neuron,
        mode=mode,
        coefficient=coefficient,
        original_coefficient=factor * float(coefs[-1]),
        value_token=model.tokenizer.decode([value_id]),
        value_token_prob=(float(p_before[value_id]), float(p_after[value_id])),
        logit_change=float((after - before).abs().max()),
        kl=kl,
        top_before=top_tokens(model, p_before, top),
        top_after=top_tokens(model, p_after, top),
        generation_before=_greedy(model, tokens, generate, [], tick) if generate else "",
        generation_after=_greedy(model, tokens, generate, hooks, tick) if generate else "",
        sign=sign,
        neuron_coefficient=float(coefs[-1]),
    )


@dataclass
class SwitchOff:
    prompt: str
    memories: list[tuple[int, int, str]]  # the memories switched off together, (layer, neuron, sign)
    token: str  # the prediction with every memory on
    prob_before: float  # its probability with every memory on
    prob_after: float  # ... and with `memories` off
    top_before: list[tuple[str, float]]
    top_after: list[tuple[str, float]]  # the new prediction first
    logit_before: float = float("nan")  # the prediction's logit with every memory on
    logit_after: float = float("nan")  # ... and with `memories` off

    @property
    def total_effect(self) -> float:
        """How much `memories` together raise the prediction's logit: logit_before - logit_after."""
        return self.logit_before - self.logit_after

    @property
    def new_token(self) -> str:
        return self.top_after[0][0]


@torch.no_grad()
def switch_off(
    model: Model, prompt: str, memories: list[tuple[int, int, str]], top: int = 5, last_only: bool = False
) -> SwitchOff:
    """The next-token prediction of `prompt` before and with every memory of `memories`
    switched off (at every position, or only the last): two forward passes."""
    check_prompt(prompt)
    if not memories:
        raise WorkbenchError("no memory to switch off: name at least one (layer, neuron, sign)")
    for layer, neuron, sign in memories:
        check_memory(model, layer, neuron, sign)
    tokens = model.to_tokens(prompt)
    logits_before = model(tokens)[0, -1].float()
    logits_after = model.run_with_hooks(tokens, fwd_hooks=off_hooks(memories, last_only))[0, -1].float()
    before, after = logits_before.softmax(-1), logits_after.softmax(-1)
    token_id = int(before.argmax())
    return SwitchOff(
        prompt=prompt,
        memories=[(int(la), int(n), s) for la, n, s in memories],
        token=model.tokenizer.decode([token_id]),
        prob_before=float(before[token_id]),
        prob_after=float(after[token_id]),
        top_before=top_tokens(model, before, top),
        top_after=top_tokens(model, after, top),
        logit_before=float(logits_before[token_id]),
        logit_after=float(logits_after[token_id]),
    )
