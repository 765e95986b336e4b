"""Evaluating a circuit on held-out prompts (Wang et al. 2022, section 4).

F(X) is the mean logit diff when every head outside X is mean-ablated: its output (hook_z)
is replaced, at each position, by its mean over ABC prompts of the same template (templates
differ in length, so means are taken per template and position). Then
- faithfulness = F(C) / F(M), the circuit's share of the full model's logit diff;
- completeness: for subsets K of the circuit, |F(C \\ K) - F(M \\ K)| should be small;
- minimality: for each head v there is a K with |F(C \\ (K + v)) - F(C \\ K)| large.
Every F is one copy of the prompts in a batched forward pass (configurations x prompts).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.circuits.metrics import logit_diff
from interp.data.ioi import IOIDataset, make_ioi
from interp.errors import WorkbenchError
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model


@torch.no_grad()
def abc_means(
    model: Model, ds: IOIDataset, per_template: int = 4, seed: int | None = None
) -> dict[int, Float[Tensor, "batch pos head d_head"]]:
    """Per layer, each prompt's mean-ablation value of hook_z: the mean over `per_template`
    fresh ABC prompts of that prompt's template, position by position."""
    used = sorted(set(ds.template_ids.tolist()))
    ids = [t for t in used for _ in range(per_template)]
    ref = make_ioi(model, len(ids), seed=(ds.seed + 7919) if seed is None else seed, template_ids=ids,
                   templates=ds.base_templates or None)  # fmt: skip
    L = model.info.n_layers
    names = set(hooks.names("z", range(L)))
    _, cache = model.run_with_cache(ref.corrupted_tokens, names_filter=lambda n: n in names)
    ref_t, ds_t = ref.template_ids, ds.template_ids
    out = {}
    for layer in range(L):
        z = cache[hooks.name("z", layer)]
        m = z.new_zeros(len(ds), ds.tokens.shape[1], *z.shape[2:])
        for t in used:
            rows = (ref_t == t).nonzero().flatten()
            n = int(ref.lengths[rows[0]])
            mine = (ds_t == t).nonzero().flatten()
            if int(ds.lengths[mine].max()) != n or int(ds.lengths[mine].min()) != n:
                raise WorkbenchError(f"template {ds.templates[t]!r} gives prompts of different lengths; drop it")
            m[mine.to(m.device), :n] = z[rows.to(z.device), :n].mean(0)
        out[layer] = m
    return out


@torch.no_grad()
def ablated_logit_diff(
    model: Model,
    ds: IOIDataset,
    means: dict[int, Tensor],
    ablate: Bool[Tensor, "config layer head"],
    chunk: int = 8,
    progress: Progress | None = None,
) -> Float[Tensor, "config"]:
    """Mean logit diff for each configuration, mean-ablating the heads marked True in it."""
    B, T = ds.tokens.shape
    out = []
    for start in range(0, len(ablate), chunk):
        cfgs = ablate[start : start + chunk].to(ds.tokens.device)
        n = len(cfgs)
        edits = []
        for layer in range(model.info.n_layers):
            if not cfgs[:, layer].any():
                continue

            def hook(z, hook, layer=layer):
                shaped = z.view(n, B, T, *z.shape[2:])
                mask = cfgs[:, layer][:, None, None, :, None]
                return torch.where(mask, means[layer][None], shaped).view(z.shape)

            edits.append((hooks.name("z", layer), hook))
        logits = model.run_with_hooks(ds.tokens.repeat(n, 1), fwd_hooks=edits)
        out.append(logit_diff(logits, ds).view(n, B).mean(1))
        if progress:
            progress(min(start + chunk, len(ablate)), len(ablate), "evaluating the circuit")
    return torch.cat(out).cpu()


@dataclass
class Evaluation:
    """How well a circuit explains IOI on held-out prompts."""

    model_logit_diff: float  # F(M): the full model
    circuit_logit_diff: float  # F(C): every head outside the circuit mean-ablated
    faithfulness: float  # F(C) / F(M)
    n_prompts: int  # held-out prompts used
    completeness: list[dict] = field(default_factory=list)  # per K: removed, circuit F(C\K), model F(M\K), gap
    incompleteness: float = float("nan")  # max gap / |F(M)| over the K tried
    minimality: dict[str, float] = field(default_factory=dict)  # "layer.head" -> max_K |F(C\(K+v)) - F(C\K)| / |F(C)|


def _mask(model: Model, heads: list[Head]) -> Tensor:
    m = torch.zeros(model.info.n_layers, model.info.n_heads, dtype=torch.bool)
    for layer, h in heads:
        m[layer, h] = True
    return m


@torch.no_grad()
def evaluate(
    model: Model,
    ds: IOIDataset,
    classes: dict[str, list[Head]],
    checks: bool = True,
    n_random: int = 4,
    per_template: int = 4,
    seed: int = 0,
    chunk: int = 8,
    progress: Progress | None = None,
) -> Evaluation:
    """Faithfulness (and, with checks=True, completeness and minimality) of a circuit on `ds`."""
    circuit = sorted({h for hs in classes.values() for h in hs})
    if not circuit:
        raise WorkbenchError(
            "the circuit is empty: nothing to evaluate (discovery found no heads; lower the thresholds)"
        )
    means = abc_means(model, ds, per_template)
    C = _mask(model, circuit)
    outside = ~C
    none = torch.zeros_like(C)
    configs: list[tuple[str, Tensor]] = [("model", none), ("circuit", outside)]
    subsets: list[tuple[str, list[Head]]] = []
    if checks:
        rng = random.Random(seed)
        subsets = [("nothing", [])] + [(f"class {c}", hs) for c, hs in classes.items()]
        subsets += [(f"random {i}", [h for h in circuit if rng.random() < 0.5]) for i in range(n_random)]
        for name, K in subsets:
            configs += [(f"C-{name}", outside | _mask(model, K)), (f"M-{name}", _mask(model, K))]
        for c, hs in classes.items():
            for v in hs:
                K = [h for h in hs if h != v]
                configs += [(f"C-K-v {v}", outside | _mask(model, K + [v])), (f"C-K {v}", outside | _mask(model, K))]
                configs += [(f"C-v {v}", outside | _mask(model, [v]))]
    values = ablated_logit_diff(model, ds, means, torch.stack([m for _, m in configs]), chunk, progress)
    F = {name: float(v) for (name, _), v in zip(configs, values)}
    ev = Evaluation(F["model"], F["circuit"], F["circuit"] / F["model"], len(ds))
    if checks:
        for name, K in subsets:
            gap = abs(F[f"C-{name}"] - F[f"M-{name}"])
            ev.completeness.append(
                {"removed": name, "n_removed": len(K), "circuit": F[f"C-{name}"], "model": F[f"M-{name}"], "gap": gap}
            )
        ev.incompleteness = max(r["gap"] for r in ev.completeness) / abs(F["model"])
        for hs in classes.values():
            for v in hs:
                with_k = abs(F[f"C-K-v {v}"] - F[f"C-K {v}"])
                alone = abs(F[f"C-v {v}"] - F["circuit"])
                ev.minimality[f"{v[0]}.{v[1]}"] = max(with_k, alone) / abs(F["circuit"])
    return ev
