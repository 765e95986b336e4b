"""FFN key-value memories (Geva et al., EMNLP 2021): a memory is one sign of one neuron
(layer, neuron, "+" or "-"); keys' trigger examples, values' vocabulary projections, key-value
agreement by layer with a permutation test, the memories behind a prediction (LM-Debugger's
trace), interventions, an on-disk index."""

from interp.memories.build import IndexSettings, build_index
from interp.memories.collector import KeyCollector
from interp.memories.index import MemoryIndex, MemoryView, SearchHit, Trigger, open_index
from interp.memories.intervene import InterventionResult, SwitchOff, intervene, switch_off
from interp.memories.keys import SIGNS, coefficient_hook, merge_topk, merge_topk_sparse, parse_memory
from interp.memories.trace import LayerTrace, Trace, TracedMemory, trace
from interp.memories.values import project_values, search_values, value_logits

__all__ = [
    "SIGNS",
    "IndexSettings",
    "InterventionResult",
    "KeyCollector",
    "LayerTrace",
    "MemoryIndex",
    "MemoryView",
    "SearchHit",
    "SwitchOff",
    "Trace",
    "TracedMemory",
    "Trigger",
    "build_index",
    "coefficient_hook",
    "intervene",
    "merge_topk",
    "merge_topk_sparse",
    "open_index",
    "parse_memory",
    "project_values",
    "search_values",
    "switch_off",
    "trace",
    "value_logits",
]
