"""Which IOI heads a configuration keeps clean, and where, and running stacks of configurations.

A configuration keeps some heads' clean outputs (hook_z) at every position, some only at the places
where they work (their class's position in `CLASS_POSITIONS`, or the segments interp.circuits.positions
found for them), and mean-ablates every other head everywhere (the means: interp.circuits.evaluate's
ABC means). `ablated_logit_diffs` runs a stack of them with the one ablation engine
(interp.circuits.ablate), replaying each from the first layer and position where it differs from a
base; `ablated_logit_diffs_reference` runs them one hooked pass each, which tests compare it with.
interp.circuits.evaluate builds the stacks Wang et al.'s figures need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.circuits.ablate import AblationPlan, Ablator, Replacement, plan_reference
from interp.circuits.positions import places_mask
from interp.circuits.types import Graph
from interp.data.task import Task
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model

# where each class works (Wang et al.'s code keeps each class's heads at these positions only)
CLASS_POSITIONS: dict[str, str] = {
    "name mover": "END", "s suppression": "END", "negative name mover": "END", "backup name mover": "END",
    "other direct": "END", "s-inhibition": "END", "induction": "S2", "duplicate token": "S2",
    "previous token": "S1+1",
}  # fmt: skip


# -- configurations: which heads are kept clean, and where ----------------------------------------


@dataclass
class Configs:
    """A stack of configurations. In configuration c, head (l, h) keeps its clean output at every
    position where keep_all[c, l, h], only at its own places head_at[l, h] (per prompt and position)
    where keep_at[c, l, h], and is mean-ablated everywhere else."""

    keep_all: Bool[Tensor, "config layer head"]
    keep_at: Bool[Tensor, "config layer head"]
    head_at: Bool[Tensor, "layer head batch pos"]  # where each head works (its class's position, places found)

    def __len__(self) -> int:
        return self.keep_all.shape[0]

    def plan(self, c: int, graph: Graph, n_pos: int) -> AblationPlan:
        """Configuration c as an ablation plan: each head replaced at the source (by its ABC mean)
        wherever c ablates it."""
        L, H, B, P = self.head_at.shape
        if P != n_pos:
            raise ValueError(f"head_at covers {P} positions, the prompts have {n_pos}")
        kept = self.keep_all[c][..., None, None] | (self.keep_at[c][..., None, None] & self.head_at)
        writers = torch.zeros(len(graph.writers), B, n_pos, dtype=torch.bool)
        for layer in range(L):
            writers[graph.first_head(layer) : graph.first_head(layer) + H] = ~kept[layer]
        return AblationPlan(writers=writers)

    def plans(self, graph: Graph, n_pos: int) -> list[AblationPlan]:
        return [self.plan(c, graph, n_pos) for c in range(len(self))]


def head_positions(model: Model, ds: Task, classes: dict[str, list[Head]],
                   places: dict[Head, list[str]] | None = None) -> Bool[Tensor, "layer head batch pos"]:  # fmt: skip
    """Where each circuit head works, per prompt and position: its class's `CLASS_POSITIONS`, or with
    `places` (interp.circuits.positions.find_places) the segments found for it (which include its
    class's position). Heads of a class outside `CLASS_POSITIONS` are kept everywhere by the
    configurations themselves."""
    if places is None:
        places = {h: [CLASS_POSITIONS[c]] for c, hs in classes.items() if c in CLASS_POSITIONS for h in hs}
    return places_mask(model, ds, places)


def head_mask(model: Model, heads: list[Head]) -> Bool[Tensor, "layer head"]:
    m = torch.zeros(model.info.n_layers, model.info.n_heads, dtype=torch.bool)
    for layer, h in heads:
        m[layer, h] = True
    return m


# -- running configurations ------------------------------------------------------------------------


def mean_replacement(means: dict[int, Tensor]) -> Replacement:
    return Replacement(z=means, kind="given")


@torch.no_grad()
def ablated_logit_diffs_reference(model: Model, ds: Task, means: dict[int, Tensor], configs: Configs) -> Float[Tensor, "config batch"]:
    """Plain and obvious: one hooked forward pass of the whole model per configuration."""
    graph, rep = Graph.of(model), mean_replacement(means)
    return torch.stack([plan_reference(model, ds, p, rep).float().cpu() for p in configs.plans(graph, ds.clean.shape[1])])


@torch.no_grad()
def ablated_logit_diffs(
    model: Model,
    ds: Task,
    means: dict[int, Tensor],
    configs: Configs,
    bases: list[int] | None = None,
    max_rows: int = 512,
    progress: Progress | None = None,
) -> Float[Tensor, "config batch"]:
    """Per-prompt logit diff of every configuration, by the ablation engine: the `bases` (default: the
    first) run first, every other configuration is replayed from the first layer and the first
    position where it differs from the base it shares most with (module docstring)."""
    graph = Graph.of(model)
    ab = Ablator(model, ds, graph=graph, replacement=mean_replacement(means))
    plans = configs.plans(graph, ds.clean.shape[1])
    return ab.run_many(plans, stacked=True, max_rows=max_rows, progress=progress,
                       bases=list(dict.fromkeys([0] if bases is None else bases))).float().cpu()  # fmt: skip


def ablated_logit_diff(
    model: Model,
    ds: Task,
    means: dict[int, Tensor],
    ablate: Bool[Tensor, "config layer head"],
    progress: Progress | None = None,
) -> Float[Tensor, "config"]:
    """Mean logit diff for each configuration, mean-ablating the heads marked True in it at every
    position (the others kept everywhere)."""
    L, H = ablate.shape[1:]
    configs = Configs(~ablate.cpu(), torch.zeros_like(ablate.cpu()), torch.zeros(L, H, *ds.clean.shape, dtype=torch.bool))
    return ablated_logit_diffs(model, ds, means, configs, progress=progress).mean(1)
