"""Finding memories worth a look in a built index."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.memories.agreement import next_token
from interp.memories.keys import memory_name


@dataclass(frozen=True)
class AgreeingMemory:
    layer: int
    neuron: int
    sign: str
    hits: int  # trigger examples (of the top `n_triggers`) followed by the value's top token
    n_triggers: int  # trigger examples looked at (those with a known next token)

    @property
    def name(self) -> str:
        return memory_name(self.layer, self.neuron, self.sign)


def agreeing_memories(index, layers: list[int] | None = None, n_triggers: int = 5, top: int = 10) -> list[AgreeingMemory]:
    """Memories (both signs) whose value's top token most often is the token that followed their
    own top trigger examples (key-value agreement, per memory), best first; ties go to more
    known triggers, then to the lower (layer, neuron, sign)."""
    found: list[AgreeingMemory] = []
    for layer in layers if layers is not None else index.layers:
        refs = index.keys(layer)["ref"][:, :, :n_triggers].long()  # [sign, neuron, k]
        nexts = next_token(index.windows, index.next_after, refs)
        top_value = index.values(layer)["ids"][:, :, 0].long()
        hits = ((nexts == top_value[..., None]) & (nexts >= 0)).sum(-1)  # [sign, neuron]
        known = (nexts >= 0).sum(-1)
        for s, sign in enumerate(index.signs):
            best = torch.argsort(hits[s] * 1000 + known[s], descending=True, stable=True)[:top]
            found += [AgreeingMemory(layer, int(n), sign, int(hits[s, n]), int(known[s, n])) for n in best if hits[s, n] > 0]
    found.sort(key=lambda m: (-m.hits, -m.n_triggers, m.layer, m.neuron, m.sign))
    return found[:top]
