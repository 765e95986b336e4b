"""agreeing_memories equals a slow count through MemoryIndex.show."""

from __future__ import annotations

from interp.memories import build_index
from interp.memories.explore import agreeing_memories


def test_agreeing_memories_match_show(tiny_llama, tmp_path):
    index = build_index(tiny_llama, "synthetic", n_tokens=400, out_dir=tmp_path / "idx", seq_len=32, top_k=5)
    fast = agreeing_memories(index, n_triggers=5, top=1000)
    slow = {}
    for layer in index.layers:
        for neuron in range(tiny_llama.info.d_mlp):
            view = index.show(layer, neuron, n_triggers=5)
            hits = sum(t.next == view.value_tokens[0][0] for t in view.triggers if t.next is not None)
            if hits:
                slow[layer, neuron] = hits
    assert {(m.layer, m.neuron): m.hits for m in fast} == slow
    assert [m.hits for m in fast] == sorted((m.hits for m in fast), reverse=True)
