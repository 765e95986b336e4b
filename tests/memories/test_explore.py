"""agreeing_memories equals a slow count through MemoryIndex.show, on a model where a memory is
known to agree (so the comparison cannot pass on two empty results)."""

from __future__ import annotations

from collections import Counter

import torch

from interp.memories import IndexSettings, build_index
from interp.memories.explore import agreeing_memories


def _slow_agreement(index, model, n_triggers: int) -> dict[tuple[int, int, str], int]:
    slow = {}
    for layer in index.layers:
        for neuron in range(model.info.d_mlp):
            for sign in index.signs:
                view = index.show(layer, neuron, sign, n_triggers=n_triggers)
                hits = sum(t.next == view.value_tokens[0][0] for t in view.triggers if t.next is not None)
                if hits:
                    slow[layer, neuron, sign] = hits
    return slow


def test_agreeing_memories_match_show(planted, tmp_path):
    p = planted.planted
    settings = IndexSettings(layers=[0, p["layer"]], n_tokens=1500, top_k=5, seq_len=32, n_permutations=20)
    first = build_index(planted, settings, tmp_path / "first", batch_size=8)
    # make the planted "+" memory agree: its value now promotes the token that most often followed its triggers
    nexts = Counter(t.next for t in first.show(p["layer"], p["neuron"]).triggers if t.next is not None)
    follower, count = nexts.most_common(1)[0]
    unembed = planted.bridge.original_model.lm_head.weight
    with torch.no_grad():  # ... and so does the planted "-" memory (same triggers), through dim 2
        unembed[:, 1:3] = 0
        unembed[planted.token_id(follower), 1:3] = 20.0
    index = build_index(planted, settings, tmp_path / "agrees", batch_size=8)

    fast = agreeing_memories(index, n_triggers=5, top=10_000)
    slow = _slow_agreement(index, planted, 5)
    assert slow.get((p["layer"], p["neuron"], "+")) == count > 0
    assert slow.get((p["layer"], p["neuron_neg"], "-")) == count
    assert {(m.layer, m.neuron, m.sign): m.hits for m in fast} == slow
    assert [m.hits for m in fast] == sorted((m.hits for m in fast), reverse=True)
    assert (fast[0].layer, fast[0].neuron) == (p["layer"], p["neuron"]) or fast[0].hits >= count
