"""Fixtures for FFN-memory tests: a tiny Llama with two hand-planted memories, one of each sign."""

from __future__ import annotations

import pytest
import torch

TRIGGER = " LORD"  # frequent in the KJV corpus; one GPT-2 token
PROMOTED = " banana"  # never in the KJV; one GPT-2 token
PROMOTED_NEG = " robot"  # never in the KJV; one GPT-2 token
LAYER, NEURON, NEURON_NEG = 1, 7, 8


@pytest.fixture(scope="module")
def planted(tiny_llama_dir):
    """A fresh copy of the tiny Llama with two planted memories on layer 1, both keyed on a
    residual direction (dim 0) that only the embedding of TRIGGER writes:
      (1, 7, "+"): gate and up both read dim 0, so c = 3x·silu(3x) > 0 on TRIGGER; its value
                   writes dim 1, which only PROMOTED's unembedding reads (weight 20);
      (1, 8, "-"): up reads dim 0 negated, so c = -3x·silu(3x) < 0 on TRIGGER; the neuron's
                   W_out row writes -dim 2, so its "-" value (-W_out) writes +dim 2, which only
                   PROMOTED_NEG's unembedding reads (weight 10: ' banana' stays the prediction).
    Nothing else writes dims 0-2, so both coefficients are exactly 0 away from TRIGGER, neuron
    7's "-" memory and neuron 8's "+" memory are never active."""
    from interp import load

    model = load(str(tiny_llama_dir), device="cpu")
    hf = model.bridge.original_model
    trig, prom, neg = model.token_id(TRIGGER), model.token_id(PROMOTED), model.token_id(PROMOTED_NEG)
    emb, unemb = hf.model.embed_tokens.weight, hf.lm_head.weight
    assert emb.data_ptr() != unemb.data_ptr(), "planting needs untied embeddings"
    mlp = hf.model.layers[LAYER].mlp
    with torch.no_grad():
        emb[:, :3] = 0
        for layer in hf.model.layers:  # nothing else writes dims 0-2 of the residual stream
            layer.self_attn.o_proj.weight[:3] = 0
            layer.mlp.down_proj.weight[:3] = 0
        emb[trig, 0] = 1.0
        unemb[:, 1:3] = 0
        unemb[prom, 1] = 20.0
        unemb[neg, 2] = 10.0
        for neuron, up in ((NEURON, 3.0), (NEURON_NEG, -3.0)):
            mlp.gate_proj.weight[neuron] = 0
            mlp.up_proj.weight[neuron] = 0
            mlp.gate_proj.weight[neuron, 0] = 3.0
            mlp.up_proj.weight[neuron, 0] = up
            mlp.down_proj.weight[:, neuron] = 0
        mlp.down_proj.weight[1, NEURON] = 1.0
        mlp.down_proj.weight[2, NEURON_NEG] = -1.0
    model.planted = {
        "layer": LAYER,
        "neuron": NEURON,
        "neuron_neg": NEURON_NEG,
        "trigger": trig,
        "promoted": prom,
        "promoted_neg": neg,
        "trigger_str": TRIGGER,
        "promoted_str": PROMOTED,
        "promoted_neg_str": PROMOTED_NEG,
    }
    return model
