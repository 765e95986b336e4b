"""Finding memories worth a look in a built index."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.memories.agreement import next_token


@dataclass(frozen=True)
class AgreeingMemory:
    layer: int
    neuron: int
    hits: int  # trigger examples (of the top `n_triggers`) followed by the value's top token
    n_triggers: int  # trigger examples looked at (those with a known next token)


def agreeing_memories(index, layers: list[int] | None = None, n_triggers: int = 5, top: int = 10) -> list[AgreeingMemory]:
    """Memories whose value's top token most often is the token that followed their own top
    trigger examples (key-value agreement, per neuron), best first."""
    found: list[AgreeingMemory] = []
    for layer in layers if layers is not None else index.layers:
        refs = index.keys(layer)["ref"][:, :n_triggers].long()
        nexts = next_token(index.windows, index.next_after, refs)  # [neuron, k]
        top_value = index.values(layer)["ids"][:, 0].long()
        hits = ((nexts == top_value[:, None]) & (nexts >= 0)).sum(-1)
        known = (nexts >= 0).sum(-1)
        best = torch.argsort(hits * 1000 + known, descending=True)[:top]
        found += [AgreeingMemory(layer, int(n), int(hits[n]), int(known[n])) for n in best if hits[n] > 0]
    found.sort(key=lambda m: (-m.hits, -m.n_triggers, m.layer, m.neuron))
    return found[:top]
