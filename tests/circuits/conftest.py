"""Shared pieces of the circuit tests: sharpened tiny models."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import sharpen_queries


@pytest.fixture
def sharp(request):
    """The tiny model with 16x query weights (restored exactly afterwards): freshly initialised
    attention is nearly uniform, so patching a query would barely move anything."""

    def get(name: str):
        model = request.getfixturevalue(name)
        return sharpen_queries(model, request)

    return get


@pytest.fixture(scope="session")
def tiny_llama_bf16(tiny_llama_dir):
    """The tiny Llama loaded again in bfloat16, its query weights sharpened 16x for good (a model of
    its own: the float32 fixture is untouched)."""
    from interp import load

    model = load(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    with torch.no_grad():
        for block in model.bridge.blocks:
            block.attn.q.original_component.weight.mul_(16.0)
    return model
