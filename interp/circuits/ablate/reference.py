"""The ablation engine written plainly, for tests to hold it to: one hooked bridge forward per plan,
writers replaced at their sites where the plan says, and every ablated edge subtracted on its own, in a
Python loop over edges, from its input's own residual copy (interp.bridge.split_inputs), with the
writers' outputs captured in the same forward."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.bridge import split_inputs
from interp.circuits.ablate import runs
from interp.circuits.ablate.plan import AblationPlan, Replacement
from interp.circuits.capture import check_inputs, head_out, layer_inputs, writer_hooks
from interp.circuits.types import Graph
from interp.data.task import Task, end_logits, metric_fn

if TYPE_CHECKING:
    from interp.models import Model


def _source_hooks(graph: Graph, plan: AblationPlan, rep: Replacement) -> list:
    """Hooks replacing writers at their sites where the plan says (before anything reads them)."""
    if not plan.replaces_writers:
        return []
    w = plan.writers

    def put(mask: Tensor, value: Tensor):
        def hook(x, hook=None):
            T = x.shape[1]
            m = mask[:, :, :T].to(x.device).permute(1, 2, 0)  # [batch pos n]
            v = value.to(x.device, x.dtype)
            v = v[:, :T] if v.shape[1] != 1 else v
            if x.dim() == 4:  # z [batch pos head d_head]
                return torch.where(m[..., None], v, x)
            return torch.where(m, v, x)

        return hook

    out = [(hooks.name("resid_pre", 0), put(w[:1], rep.embed))] if bool(w[0].any()) else []
    for layer in range(graph.n_layers):
        lo = graph.first_head(layer)
        if bool(w[lo : lo + graph.n_heads].any()):
            out.append((hooks.name("z", layer), put(w[lo : lo + graph.n_heads], rep.z[layer])))
        if graph.has_mlp and bool(w[graph.mlp_writer(layer)].any()):
            m = graph.mlp_writer(layer)
            out.append((hooks.name("mlp_out", layer), put(w[m : m + 1], rep.mlp[layer])))
    return out


def replaced_outputs(model: Model, graph: Graph, rep: Replacement) -> dict[int, Tensor]:
    """Each writer's replacement output [batch|1 pos|1 d_model] (a head's: its z times W_O[head])."""
    out = {0: rep.embed}
    for layer in range(graph.n_layers):
        per = head_out(model, layer, rep.z[layer])
        for h in range(graph.n_heads):
            out[graph.first_head(layer) + h] = per[:, :, h]
        if graph.has_mlp:
            out[graph.mlp_writer(layer)] = rep.mlp[layer]
    return out


@torch.no_grad()
def plan_reference(model: Model, task: Task, plan: AblationPlan, rep: Replacement) -> Float[Tensor, "batch"]:
    """The metric per prompt of one plan (see the module docstring)."""
    graph = Graph.of(model)
    fwd = _source_hooks(graph, plan, rep)
    if plan.ablates_edges:
        check_inputs(model)
        fwd += _edge_hooks(model, graph, plan.edges, replaced_outputs(model, graph, rep))
    with split_inputs(model) if plan.ablates_edges else nullcontext():
        logits = model.run_with_hooks(task.clean, fwd_hooks=fwd)
    clean_end = end_logits(model(task.clean), task.reads)
    return metric_fn(task, clean_end)(end_logits(logits, task.reads))


def _edge_hooks(model: Model, graph: Graph, keep: Tensor, replaced: dict[int, Tensor]) -> list:
    """Capture every writer's output, and subtract each ablated edge's a(u) - r(u) from its input's copy."""
    sink: dict[int, Tensor] = {}
    excluded: dict[int, list[int]] = {}
    for e in (~keep).nonzero().flatten().tolist():
        excluded.setdefault(int(graph.dst[e]), []).append(int(graph.src[e]))

    def live(w: int) -> Tensor:
        first = max(k for k in sink if k <= w)
        return sink[first][:, :, w - first]

    fwd = list(writer_hooks(model, graph, sink.__setitem__))
    for reader, idx in layer_inputs(graph):

        def hook(x, hook=None, idx=idx, kind=reader.kind):
            x = x.clone()
            for j, r in enumerate(idx.tolist()):
                for w in excluded.get(r, []):
                    d = live(w) - replaced[w].to(x.device, x.dtype)
                    if kind in ("q", "k", "v"):
                        x[:, :, j] -= d
                    else:
                        x -= d
            return x

        fwd.append((reader.hook, hook))
    return fwd


@torch.no_grad()
def ablated_reference(model: Model, task: Task, keep: Bool[Tensor, "edge"], ablation: str = "counterfactual",
                      mean_task: Task | None = None) -> Float[Tensor, "batch"]:  # fmt: skip
    """`plan_reference` of an edge circuit, with the replacement of `ablation` built plainly."""
    if ablation == "counterfactual":
        from interp.circuits.replay import Replay

        _, corr, _ = runs.collect(model, task, True)
        rep, _ = runs.from_corrupted(Replay.of(model), corr)
    else:
        rep = runs.means(model, mean_task)
    return plan_reference(model, task, AblationPlan(edges=keep), rep)
