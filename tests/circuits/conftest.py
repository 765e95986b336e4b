"""Shared pieces of the circuit tests: sharpened tiny models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def sharp(request):
    """The tiny model with 16x query weights (restored exactly afterwards): freshly initialised
    attention is nearly uniform, so patching a query would barely move anything."""

    def get(name: str):
        model = request.getfixturevalue(name)
        weights = [model.bridge.blocks[layer].attn.q.original_component.weight for layer in range(model.info.n_layers)]
        with torch.no_grad():
            for w in weights:
                w.mul_(16.0)
        request.addfinalizer(lambda: [w.data.div_(16.0) for w in weights])
        return model

    return get
