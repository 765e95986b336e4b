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


@pytest.fixture(scope="module")
def pair(tiny_llama_dir):
    """The tiny Llama (grouped-query attention) in bf16 and in float32 with the bf16-rounded weights, queries
    sharpened 16x (exact in bf16) so that patching moves the logits well above bf16's rounding."""
    from interp import load

    models = {}
    for dtype in ("bfloat16", "float32"):
        model = load(str(tiny_llama_dir), device="cpu", dtype=dtype)
        with torch.no_grad():
            for p in model.bridge.parameters():
                p.copy_(p.to(torch.bfloat16))
            for block in model.bridge.blocks:
                block.attn.q.original_component.weight.mul_(16.0)
        models[dtype] = model
    assert models["bfloat16"].dtype == torch.bfloat16 and models["float32"].dtype == torch.float32
    assert models["float32"].info.n_kv_heads < models["float32"].info.n_heads  # grouped-query attention
    return models["bfloat16"], models["float32"]
