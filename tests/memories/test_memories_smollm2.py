"""SmolLM2-135M: the coefficient/value conventions hold on the real model, an index over a few
thousand KJV tokens builds, and agreement by layer is reported against its random baseline."""

from __future__ import annotations

import pytest
import torch

from interp.memories import IndexSettings, build_index, intervene, value_logits
from interp.memories.keys import coefficient_hook

pytestmark = pytest.mark.slow
LAYERS = [1, 8, 16]


def test_smollm2_coefficients_and_values(smollm2):
    layer = 8
    names = [f"blocks.{layer}.mlp.hook_in", coefficient_hook(layer), f"blocks.{layer}.mlp.hook_out"]
    _, cache = smollm2.run_with_cache(smollm2.to_tokens("And God said"), names_filter=lambda n: n in names)
    x, post, out = (cache[n][0] for n in names)
    mlp = smollm2.bridge.original_model.model.layers[layer].mlp
    torch.testing.assert_close(post, torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T))
    w_out = smollm2.bridge.blocks[layer].mlp.W_out.detach()
    torch.testing.assert_close(post @ w_out, out, atol=1e-4, rtol=1e-4)
    # value projection: W_out[i] * w_final_norm @ W_U, with a final RMSNorm weight far from 1
    gamma = smollm2.bridge.original_model.model.norm.weight.detach()
    assert (gamma - 1).abs().max() > 0.3
    w_u = smollm2.bridge.original_model.lm_head.weight.detach().T
    for i in torch.randint(0, smollm2.info.d_mlp, (4,), generator=torch.Generator().manual_seed(0)).tolist():
        torch.testing.assert_close(value_logits(smollm2, layer, [i])[0], (w_out[i] * gamma) @ w_u)


def test_smollm2_index_and_agreement_by_layer(smollm2, tmp_path):
    index = build_index(smollm2, IndexSettings(layers=LAYERS, n_tokens=2000, top_k=10, seq_len=64), tmp_path / "idx", batch_size=8)
    rows = index.agreement()
    assert [r["layer"] for r in rows] == LAYERS
    for r in rows:
        for key in ("agreement", "agreement_baseline", "agreement_any", "agreement_any_baseline", "same_last"):
            assert 0.0 <= r[key] <= 1.0
        assert 0.2 < r["active_fraction"] < 0.8  # SwiGLU: roughly half the coefficients are positive
    # keys are shallow: a neuron's trigger examples end in the same token far more often than
    # random corpus positions do, most of all in the lowest layer
    assert all(r["same_last"] > r["same_last_baseline"] + 0.05 for r in rows)
    assert rows[0]["same_last"] == max(r["same_last"] for r in rows)
    view = index.show(LAYERS[-1], 0)
    assert len(view.triggers) == 10 and view.triggers[0].coefficient >= view.triggers[-1].coefficient
    assert len(view.value_tokens) == 20
    # switching a memory on with a high coefficient raises the probability of its value's top token
    r = intervene(smollm2, "In the beginning God created", LAYERS[-1], 0, mode="on", value=50.0, generate=2)
    assert r.value_token_prob[1] > r.value_token_prob[0] and r.logit_change > 0
