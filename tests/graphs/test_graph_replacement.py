"""The local replacement model reproduces the real run, and its backward is its forward's transpose."""

from __future__ import annotations

import pytest
import torch
from graph_helpers import random_transcoders

from interp.errors import WorkbenchError
from interp.graphs.replacement import build


def test_reproduces_the_real_logits(built):
    model, _tc, R, _ = built
    x2, xf = R.forward(R.inputs[None], (R.decoded + R.errors)[None], bias=True)
    real = model(R.tokens[None])[0].float()
    torch.testing.assert_close(R.unembed(xf)[0], real, atol=1e-4, rtol=0)
    torch.testing.assert_close(x2[0], R.mlp_in, atol=1e-4, rtol=0)


def test_error_nodes_are_what_the_transcoders_miss(built):
    _model, tc, R, _ = built
    for layer in range(R.n_layers):
        recon = tc.reconstruct(R.mlp_in[layer], layer)
        torch.testing.assert_close(R.errors[layer], R.mlp_out[layer] - recon, atol=1e-5, rtol=0)


def test_gqa_weights_stay_grouped(tiny_llama):
    R = build(tiny_llama, random_transcoders(tiny_llama), tiny_llama.to_tokens("a b c")[0])
    assert tiny_llama.info.n_kv_heads < tiny_llama.info.n_heads
    assert R.weights.W_V[0].shape[0] == tiny_llama.info.n_kv_heads  # one per kv head: no ungrouped copy
    assert R.weights.W_O[0].shape[0] == tiny_llama.info.n_heads


def test_backward_is_the_transpose_of_forward(built):
    """<backward(g), x> = <g, forward(x)> for the linear part (biases off), at every place."""
    _, _, R, _ = built
    gen = torch.Generator().manual_seed(1)
    P, d, L = R.n_pos, R.inputs.shape[-1], R.n_layers
    x = torch.randn(1, P, d, generator=gen)
    writes = torch.randn(1, L, P, d, generator=gen)
    g_final = torch.randn(1, P, d, generator=gen)
    g_x2 = torch.randn(L, 1, P, d, generator=gen)
    seen = {}
    G0 = R.backward(g_final, lambda layer: g_x2[layer], lambda layer, G: seen.__setitem__(layer, G.clone()))
    x2, xf = R.forward(x, writes, bias=False)
    lhs = (G0 * x).sum() + sum((seen[la] * writes[:, la]).sum() for la in range(L))
    rhs = (g_final * xf).sum() + sum((g_x2[la] * x2[:, la]).sum() for la in range(L))
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)


def test_refuses_transcoders_missing_a_layer(tiny_llama):
    with pytest.raises(WorkbenchError, match="no layer 1"):
        build(tiny_llama, random_transcoders(tiny_llama, layers=[0]), tiny_llama.to_tokens("a b")[0])


def test_refuses_transcoders_of_another_model(tiny_llama, tiny_gpt2):
    with pytest.raises(WorkbenchError, match="made for"):
        build(tiny_llama, random_transcoders(tiny_gpt2), tiny_llama.to_tokens("a b")[0])
