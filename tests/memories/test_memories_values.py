"""Coefficients and values: what hook_post holds, W_out's orientation, the projection formula."""

from __future__ import annotations

import pytest
import torch
import transformers

from interp.lens import final_norm, norm_linear
from interp.memories import project_values, value_logits
from interp.memories.keys import coefficient_hook


def _cache(model, layer):
    names = [f"blocks.{layer}.mlp.hook_in", coefficient_hook(layer), f"blocks.{layer}.mlp.hook_out"]
    _, cache = model.run_with_cache(
        model.to_tokens("And God said, Let there be light"), names_filter=lambda n: n in names
    )
    return [cache[n][0] for n in names]


def test_gated_coefficient_is_act_gate_times_up(tiny_llama):
    """For SwiGLU, blocks.l.mlp.hook_post == silu(x W_gate^T) * (x W_up^T), computed from the HF weights."""
    x, post, out = _cache(tiny_llama, 1)
    mlp = tiny_llama.bridge.original_model.model.layers[1].mlp
    want = torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    torch.testing.assert_close(post, want)
    # the value of neuron i is row i of the bridge's W_out [d_mlp, d_model]: post @ W_out == mlp output
    w_out = tiny_llama.bridge.blocks[1].mlp.W_out
    assert w_out.shape == (tiny_llama.info.d_mlp, tiny_llama.info.d_model)
    torch.testing.assert_close(post @ w_out, out)


def test_gelu_coefficient_is_gelu_of_key(tiny_gpt2):
    x, post, out = _cache(tiny_gpt2, 0)
    mlp = tiny_gpt2.bridge.original_model.transformer.h[0].mlp
    act = transformers.activations.ACT2FN[tiny_gpt2.bridge.original_model.config.activation_function]
    torch.testing.assert_close(post, act(x @ mlp.c_fc.weight + mlp.c_fc.bias))
    b = tiny_gpt2.bridge.blocks[0].mlp
    torch.testing.assert_close(post @ b.W_out + b.b_out, out)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_value_projection_matches_formula(name, request):
    """logits_i = norm_linear(W_out[i]) @ W_U: RMS -> W_out[i] * w; LN -> (W_out[i] - mean) * w."""
    model = request.getfixturevalue(name)
    kind, weight = final_norm(model)
    assert kind == ("RMS" if name == "tiny_llama" else "LN")
    neurons = torch.randperm(model.info.d_mlp, generator=torch.Generator().manual_seed(1))[:5]
    w_out, w_u = model.bridge.blocks[1].mlp.W_out.detach(), model.bridge.W_U.detach()
    lm_head = model.bridge.original_model.lm_head.weight.detach()
    torch.testing.assert_close(w_u, lm_head.T)  # W_U is the HF lm_head, untouched by the final norm
    for i in neurons.tolist():
        v = w_out[i]
        if kind == "LN":
            v = v - v.mean()
        want = (v * weight) @ w_u
        torch.testing.assert_close(value_logits(model, 1, [i])[0], want)
    ids, probs = project_values(model, 1, top_n=5, chunk=16, signs=("+", "-"))  # chunking must not matter
    assert ids.shape == probs.shape == (2, model.info.d_mlp, 5)
    for i in neurons.tolist():
        logits = (w_out[i] - (w_out[i].mean() if kind == "LN" else 0)) * weight @ w_u
        for s, signed in enumerate((logits, -logits)):  # the "-" memory's value is -W_out[i]
            want = signed.softmax(-1).topk(5)
            assert ids[s, i].tolist() == want.indices.tolist()
            torch.testing.assert_close(probs[s, i], want.values)
        torch.testing.assert_close(value_logits(model, 1, [i], "-")[0], -logits)


def test_norm_linear_cases():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    w = torch.tensor([2.0, 1.0, 0.5])
    assert norm_linear(v, None, None).tolist() == [[1.0, 2.0, 3.0]]
    assert norm_linear(v, "RMS", w).tolist() == [[2.0, 2.0, 1.5]]
    assert norm_linear(v, "LN", w).tolist() == [[-2.0, 0.0, 0.5]]
