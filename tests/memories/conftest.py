"""Fixtures for FFN-memory tests: a tiny Llama with one hand-planted memory."""

from __future__ import annotations

import pytest
import torch

TRIGGER = " LORD"  # frequent in the KJV corpus; one GPT-2 token
PROMOTED = " banana"  # never in the KJV; one GPT-2 token
LAYER, NEURON = 1, 7


@pytest.fixture(scope="module")
def planted(tiny_llama_dir):
    """A fresh copy of the tiny Llama where neuron (1, 7) is a planted memory: its key reads a
    residual direction (dim 0) that only the embedding of TRIGGER writes, and its value writes a
    direction (dim 1) that only PROMOTED's unembedding reads. Nothing else writes dims 0 and 1,
    so the neuron's coefficient is exactly 0 away from TRIGGER."""
    from interp import load

    model = load(str(tiny_llama_dir), device="cpu")
    hf = model.bridge.original_model
    trig, prom = model.token_id(TRIGGER), model.token_id(PROMOTED)
    emb, unemb = hf.model.embed_tokens.weight, hf.lm_head.weight
    assert emb.data_ptr() != unemb.data_ptr(), "planting needs untied embeddings"
    mlp = hf.model.layers[LAYER].mlp
    with torch.no_grad():
        emb[:, :2] = 0
        for layer in hf.model.layers:  # nothing else writes dims 0 and 1 of the residual stream
            layer.self_attn.o_proj.weight[:2] = 0
            layer.mlp.down_proj.weight[:2] = 0
        emb[trig, 0] = 1.0
        unemb[:, 1] = 0
        unemb[prom, 1] = 20.0
        mlp.gate_proj.weight[NEURON] = 0
        mlp.up_proj.weight[NEURON] = 0
        mlp.gate_proj.weight[NEURON, 0] = 3.0
        mlp.up_proj.weight[NEURON, 0] = 3.0
        mlp.down_proj.weight[:, NEURON] = 0
        mlp.down_proj.weight[1, NEURON] = 1.0
    model.planted = {
        "layer": LAYER,
        "neuron": NEURON,
        "trigger": trig,
        "promoted": prom,
        "trigger_str": TRIGGER,
        "promoted_str": PROMOTED,
    }
    return model
