"""The runs an ablation engine replays from: the clean run (the base every plan departs from), the
replacement (what ablated writers write), and the fully ablated inputs (each input with every edge
into it ablated) with what they project to.

Under counterfactual ablation one batched forward of the corrupted and the clean prompts gives them all:
the corrupted run's head outputs, embedding and MLP outputs are the replacement, and its residual
streams are the fully ablated inputs (every writer at its replacement is the corrupted run), its q/k/v
projections and MLP outputs theirs. Under mean ablation the replacement is each writer's mean over every
real position of the scoring prompts, and the fully ablated input of a layer is the sum of the
replacements before it and the biases; its projections are computed once. Given values (the IOI
evaluation's ABC means per prompt and position) replace heads only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.circuits.ablate.plan import Replacement
from interp.circuits.replay import ACC, Keys, Replay
from interp.data.task import Task, end_logits

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class CleanRun:
    """What replays start from: the clean run's residual streams and keys per layer, its rotary tables,
    and its logits at END (at the metric's reads: `Task.reads`)."""

    cache: dict[str, Tensor]  # hook name -> [batch pos ...] (resid_pre, k or rot_k, v, cos, sin)
    end_logits: Float[Tensor, "batch vocab"]

    def resid(self, layer: int) -> Tensor:
        return self.cache[hooks.name("resid_pre", layer)]

    def keys(self, rp: Replay, layer: int) -> Keys:
        return rp.keys(self.cache, layer)


@dataclass
class Ablated:
    """Each input with every edge into it ablated, and what it becomes: per layer the attention inputs'
    stream [batch|1 pos|1 d_model] and its q/k/v projections (before rotary, stacked columns), the MLP's
    input and output; the logits' input."""

    attention: dict[int, Tensor]
    projected: dict[int, Float[Tensor, "batch|1 pos|1 column d_head"]]
    mlp_in: dict[int, Tensor]
    mlp_out: dict[int, Tensor]
    final: Tensor


def clean_names(rp: Replay) -> list[str]:
    L = range(rp.n_layers)
    names = hooks.names("resid_pre", L) + hooks.names("k", L) + hooks.names("v", L)
    if rp.rotary and rp.tables is None:  # the bridge shows its rotary tables and rotated keys
        names += hooks.names("rot_k", L) + hooks.names("cos", L) + hooks.names("sin", L)
    return names


def corrupted_names(rp: Replay) -> list[str]:
    L = range(rp.n_layers)
    names = hooks.names("z", L) + hooks.names("resid_pre", L) + hooks.names("q", L) + hooks.names("k", L) + hooks.names("v", L)
    names += hooks.names("mlp_out", L) + hooks.names("resid_mid", L) if rp.has_mlp else []
    return names + [hooks.final_resid(rp.n_layers)]


@torch.no_grad()
def collect(model: Model, task: Task, counterfactual: bool) -> tuple[CleanRun, dict[str, Tensor] | None, Tensor | None]:
    """(the clean run, the corrupted run's cache, the corrupted logits at the metric's reads): one forward of both
    prompt sets stacked under counterfactual ablation, of the clean ones otherwise."""
    rp = Replay.of(model)
    B = len(task)
    want = set(clean_names(rp)) | (set(corrupted_names(rp)) if counterfactual else set())
    tokens = torch.cat([task.clean, task.corrupted]) if counterfactual else task.clean
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in want)
    ends = end_logits(logits, task.reads)
    clean = CleanRun({n: cache[n][:B] for n in clean_names(rp)}, ends[:B])
    if not counterfactual:
        return clean, None, None
    return clean, {n: cache[n][B:] for n in corrupted_names(rp)}, ends[B:]


def from_corrupted(rp: Replay, corr: dict[str, Tensor]) -> tuple[Replacement, Ablated]:
    """Counterfactual ablation: the corrupted run's writers and inputs."""
    L = range(rp.n_layers)
    rep = Replacement({layer: corr[hooks.name("z", layer)] for layer in L}, corr[hooks.name("resid_pre", 0)],
                      {layer: corr[hooks.name("mlp_out", layer)] for layer in L} if rp.has_mlp else {}, "counterfactual")  # fmt: skip
    projected = {layer: torch.cat([corr[hooks.name(k, layer)] for k in "qkv"], dim=2) for layer in L}
    ab = Ablated({layer: corr[hooks.name("resid_pre", layer)] for layer in L}, projected,
                 {layer: corr[hooks.name("resid_mid", layer)] for layer in L} if rp.has_mlp else {},
                 dict(rep.mlp), corr[hooks.final_resid(rp.n_layers)])  # fmt: skip
    return rep, ab


@torch.no_grad()
def means(model: Model, task: Task) -> Replacement:
    """Mean ablation's replacement: each writer's output averaged over every real position (up to END)
    of `task`'s clean prompts (heads in z, whose mean times W_O is the mean output)."""
    rp = Replay.of(model)
    L = range(rp.n_layers)
    names = hooks.names("z", L) + [hooks.name("resid_pre", 0)] + (hooks.names("mlp_out", L) if rp.has_mlp else [])
    _, cache = model.run_with_cache(task.clean, names_filter=lambda n: n in set(names))
    real = torch.arange(task.clean.shape[1])[None, :] <= task.end[:, None]  # [batch pos]

    def mean(x: Tensor) -> Tensor:  # over real positions -> [1 1 ...]
        m = real.to(x.device).view(*real.shape, *([1] * (x.dim() - 2))).to(ACC)
        return ((x.to(ACC) * m).sum((0, 1)) / m.sum())[None, None].to(x.dtype)

    return Replacement({layer: mean(cache[hooks.name("z", layer)]) for layer in L}, mean(cache[hooks.name("resid_pre", 0)]),
                       {layer: mean(cache[hooks.name("mlp_out", layer)]) for layer in L} if rp.has_mlp else {}, "mean")  # fmt: skip


@torch.no_grad()
def from_means(rp: Replay, rep: Replacement) -> Ablated:
    """Mean ablation's fully ablated inputs: the replacements summed with the biases, layer by layer."""
    x = rep.embed.to(ACC)
    attention, projected, mlp_in, mlp_out = {}, {}, {}, {}
    for layer in range(rp.n_layers):
        dev = rp.device_of(layer)
        x = x.to(dev)
        attention[layer] = x
        projected[layer] = rp.project(layer, rp.ln1(layer, x))
        mid = x + attention_output(rp, layer, rep.z[layer].to(dev))
        if rp.has_mlp:
            mlp_in[layer] = mid
            mlp_out[layer] = rp.mlp(layer, mid)
            x = mid + rep.mlp[layer].to(dev, ACC)
        else:
            x = mid
    return Ablated(attention, projected, mlp_in, mlp_out, x)


def attention_output(rp: Replay, layer: int, z: Tensor) -> Tensor:
    """sum_h z_h W_O[h] + b_O in float32 (z [..., head, d_head])."""
    a = rp.attn(layer)
    out = torch.einsum("...he,hed->...d", z, a.W_O.to(z.dtype)).to(ACC)
    return out if a.b_O is None else out + a.b_O.to(ACC)
