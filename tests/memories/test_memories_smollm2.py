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
    index = build_index(smollm2, IndexSettings(layers=LAYERS, n_tokens=2000, top_k=10, seq_len=64, n_permutations=200),
                        tmp_path / "idx", batch_size=8)  # fmt: skip
    assert index.signs == ("+", "-")  # SwiGLU: both signs are memories
    rows = index.agreement()
    assert [r["layer"] for r in rows] == LAYERS
    for r in rows:
        for key in ("agreement", "agreement_baseline", "agreement_any", "agreement_any_baseline", "same_last"):
            assert 0.0 <= r[key] <= 1.0
        assert r["agreement_lo"] <= r["agreement"] <= r["agreement_hi"] and 0 < r["agreement_p"] <= 1
        assert r["n_memories"] > 2 * smollm2.info.d_mlp * 0.9  # nearly every memory of both signs has triggers
        assert 0.4 < r["active_fraction"] < 0.6  # each position activates one of a neuron's two memories
    for sign in "+-":
        assert all(0.2 < r["active_fraction"] < 0.8 for r in index.agreement(sign))
    # keys are shallow: a memory's trigger examples end in the same token far more often than
    # random corpus positions do
    assert all(r["same_last"] > r["same_last_baseline"] + 0.05 for r in rows)
    view = index.show(LAYERS[-1], 0, "-")
    assert len(view.triggers) == 10 and view.triggers[0].coefficient >= view.triggers[-1].coefficient > 0
    assert len(view.value_tokens) == 20
    # switching a memory on with a high coefficient raises the probability of its value's top token
    r = intervene(smollm2, "In the beginning God created", LAYERS[-1], 0, mode="on", value=50.0, generate=2)
    assert r.value_token_prob[1] > r.value_token_prob[0] and r.logit_change > 0


def test_smollm2_trace_adds_up_and_its_off_switch_acts(smollm2):
    from interp.memories import switch_off, trace
    from interp.memories.trace import contributions

    prompt = "The Eiffel Tower is located in the city of"
    got = contributions(smollm2, smollm2.to_tokens(prompt))
    names = [f"blocks.{layer}.hook_mlp_out" for layer in range(smollm2.info.n_layers)]
    _, cache = smollm2.run_with_cache(smollm2.to_tokens(prompt), names_filter=lambda n: n in names)
    from interp.memories.trace import reading_direction

    r = reading_direction(smollm2, got.token_id)
    direct = torch.stack([cache[n][0, -1].float() @ r for n in names]) / got.scale
    torch.testing.assert_close(got.mlp_effect, direct, atol=1e-3, rtol=1e-3)
    t = trace(smollm2, prompt, top=5)
    assert t.top[0].contribution >= t.top[-1].contribution > 0
    off = switch_off(smollm2, prompt, [(m.layer, m.neuron, m.sign) for m in t.top])
    assert off.prob_after < off.prob_before  # the five memories that push the prediction most, off together
