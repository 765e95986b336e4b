"""Fixtures for attribution-graph tests: one prompt's replacement model and graph on the tiny models."""

from __future__ import annotations

import pytest
from graph_helpers import random_transcoders

PROMPT = "The cat sat on the mat and"


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request, tiny_llama, tiny_gpt2):
    return tiny_llama if request.param == "llama" else tiny_gpt2


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "skip"])
def built(request, tiny):
    """(model, transcoders, replacement, graph) for PROMPT, with and without skip connections."""
    from interp.graphs.attribute import attribute
    from interp.graphs.replacement import build

    tc = random_transcoders(tiny, skip=request.param)
    R = build(tiny, tc, tiny.to_tokens(PROMPT)[0])
    return tiny, tc, R, attribute(tiny, tc, PROMPT, replacement=R, batch_size=16)
