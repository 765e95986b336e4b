"""FFN key-value memories (Geva et al., EMNLP 2021): keys' trigger examples, values'
vocabulary projections, key-value agreement by layer, interventions, an on-disk index."""

from interp.memories.build import IndexSettings, build_index
from interp.memories.index import MemoryIndex, MemoryView, SearchHit, Trigger, open_index
from interp.memories.intervene import InterventionResult, intervene
from interp.memories.keys import KeyCollector, coefficient_hook, merge_topk
from interp.memories.values import project_values, search_values, value_logits

__all__ = [
    "IndexSettings",
    "InterventionResult",
    "KeyCollector",
    "MemoryIndex",
    "MemoryView",
    "SearchHit",
    "Trigger",
    "build_index",
    "coefficient_hook",
    "intervene",
    "merge_topk",
    "open_index",
    "project_values",
    "search_values",
    "value_logits",
]
