"""What the ablation engine runs: a plan (which writer is replaced where) and a replacement (by what).

A plan is one circuit to run with everything outside it ablated, in two words the whole engine speaks:

- `edges`: the graph's edges kept (interp.circuits.types.Graph's edge order). An edge not kept reads
  its writer's replacement instead of the writer's output: its input becomes
  x_v - sum_{u -> v not kept} (a(u) - r(u)) (MIB's edge ablation). None keeps every edge.
- `writers`: where writers are replaced at the source, [writer batch pos]: there every reader reads the
  replacement (a node ablation: the IOI evaluation mean-ablates heads outside the circuit everywhere,
  and a circuit head everywhere but at its class's position). None replaces none.

The replacement is the same for every plan of one engine: the writer's output on the corrupted
prompt of the same pair (counterfactual), its mean over the scoring prompts' real positions (mean), or
values given per prompt and position (the IOI evaluation's ABC means). Heads are replaced in z
(hook_z, before W_O: their write is z @ W_O[head]), the embedding and MLPs in d_model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.circuits.types import Graph


@dataclass
class AblationPlan:
    """One circuit: the edges kept and the writers replaced at the source (see the module docstring)."""

    edges: Bool[Tensor, "edge"] | None = None  # True = kept; None: every edge kept
    writers: Bool[Tensor, "writer batch pos"] | None = None  # True = replaced there; None: none replaced

    def __post_init__(self):
        if self.edges is not None:
            self.edges = self.edges.detach().to("cpu", torch.bool)
        if self.writers is not None:
            self.writers = self.writers.detach().to("cpu", torch.bool)

    @property
    def ablates_edges(self) -> bool:
        return self.edges is not None and not bool(self.edges.all())

    @property
    def replaces_writers(self) -> bool:
        return self.writers is not None and bool(self.writers.any())

    @property
    def is_full(self) -> bool:
        """Nothing ablated: the clean run."""
        return not self.ablates_edges and not self.replaces_writers

    @property
    def is_empty(self) -> bool:
        """Every edge ablated and nothing else asked: everything reads the replacement."""
        return self.edges is not None and not bool(self.edges.any()) and not self.replaces_writers

    def key(self) -> bytes:
        """Equal for equal plans (plans that run once)."""
        e = b"" if not self.ablates_edges else self.edges.numpy().tobytes()
        w = b"" if not self.replaces_writers else self.writers.numpy().tobytes()
        return e + b"|" + w

    def first_difference(self, base: AblationPlan, graph: Graph, n_prompts: int, n_pos: int) -> tuple[int, Tensor]:
        """(the first layer, per prompt the first position) where this node plan's replaced writers
        differ from `base`'s: before both every activation equals the base run's (a causal model reads
        only earlier positions). (n_layers, n_pos) where the plans agree everywhere."""
        mine = self.writers if self.writers is not None else torch.zeros(len(graph.writers), n_prompts, n_pos, dtype=torch.bool)
        theirs = base.writers if base.writers is not None else torch.zeros_like(mine)
        differ = mine != theirs  # [writer batch pos]
        where = differ.flatten(1).any(1).nonzero().flatten()
        if not len(where):
            return graph.n_layers, torch.full((n_prompts,), n_pos)
        layer = writer_layer(graph, int(where[0]))
        at = differ.any(0)  # [batch pos]
        first = torch.where(at.any(1), at.float().argmax(1), torch.full((n_prompts,), n_pos))
        return layer, first


def writer_layer(graph: Graph, w: int) -> int:
    """The layer whose block a writer belongs to (the embedding: 0)."""
    node = graph.writers[w]
    return 0 if node.kind == "embed" else node.layer


def edges_plan(keep: Bool[Tensor, "edge"]) -> AblationPlan:
    return AblationPlan(edges=keep)


@dataclass
class Replacement:
    """What replaced writers write (see the module docstring), on the CPU or the model's device."""

    z: dict[int, Float[Tensor, "batch|1 pos|1 head d_head"]]  # layer -> the heads' replacement z
    embed: Float[Tensor, "batch|1 pos|1 d_model"] | None = None
    mlp: dict[int, Float[Tensor, "batch|1 pos|1 d_model"]] = field(default_factory=dict)  # layer -> MLP output
    kind: str = "given"  # "counterfactual", "mean" or "given"
