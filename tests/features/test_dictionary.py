"""The dictionary's fast paths against slow, obviously correct references."""

from __future__ import annotations

import pytest
import torch
from feature_helpers import random_dictionary

from interp.errors import WorkbenchError
from interp.features import DictionaryConfig


@torch.no_grad()
def reference_forward(d, x, i):
    """Token by token, layer i: pre-activations, keep the k largest (ReLU'd), sum decoder rows."""
    W_enc, b_enc, W_dec, b_dec = d.W_enc[i], d.b_enc[i], d.W_dec[i], d.b_dec[i]
    acts, outs = [], []
    for row in x:
        inp = row - b_dec if d.cfg.apply_b_dec_to_input else row
        pre = inp @ W_enc + b_enc
        a = torch.zeros_like(pre)
        if d.cfg.activation == "topk":
            order = sorted(range(len(pre)), key=lambda j: -float(pre[j]))[: d.cfg.k]
            for j in order:
                a[j] = max(float(pre[j]), 0.0)
        else:
            a = pre.relu()
        y = b_dec.clone()
        for j in range(len(a)):
            y = y + a[j] * W_dec[j]
        if d.W_skip is not None:
            y = y + d.W_skip[i] @ row
        acts.append(a)
        outs.append(y)
    return torch.stack(acts), torch.stack(outs)


@pytest.mark.parametrize("site,skip,activation", [("mlp", False, "topk"), ("mlp", True, "topk"),
                                                  ("resid_post", False, "topk"), ("mlp_out", False, "relu")])
def test_forward_matches_reference(site, skip, activation):
    d = random_dictionary(site=site, skip=skip, activation=activation)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    pre = d.pre_acts(x)
    acts, idx = d.select(pre)
    sparse = d.decode_sparse(acts, idx, x)
    dense = d.decode(d.activate(pre), x)
    for i in range(2):
        ref_acts, ref_out = reference_forward(d, x[i], i)
        assert torch.allclose(d.activate(pre)[i], ref_acts, atol=1e-6)
        assert torch.allclose(sparse[i], ref_out, atol=1e-5)
        assert torch.allclose(dense[i], ref_out, atol=1e-5)
        layer = d.layers[i]
        assert torch.allclose(d.encode(x[i], layer), ref_acts, atol=1e-6)
        assert torch.allclose(d.reconstruct(x[i], layer), ref_out, atol=1e-5)


def test_topk_keeps_exactly_k_and_relu_zeroes():
    d = random_dictionary(k=5)
    x = torch.randn(2, 50, 32)
    acts = d.activate(d.pre_acts(x))
    nonzero = (acts != 0).sum(-1)
    assert int(nonzero.max()) <= 5 and (acts >= 0).all()
    assert int((nonzero == 5).sum()) > 0  # most tokens have k positive pre-activations


def test_bf16_close_to_float32():
    """In bf16 the pre-activations are within bf16's rounding; where both precisions pick the same
    latents (most tokens: only near-ties flip) the outputs agree to about 1%."""
    d = random_dictionary()
    x = torch.randn(2, 64, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pre = d.pre_acts(x)
        acts, idx = d.select(pre)
        ref = d.decode_sparse(acts, idx, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pre_low = d.pre_acts(x.bfloat16())
            acts_low, idx_low = d.select(pre_low)
            low = d.decode_sparse(acts_low, idx_low, x.bfloat16())
    assert pre_low.dtype == torch.bfloat16
    assert ((pre_low.float() - pre).norm() / pre.norm()) < 0.01
    same = (idx.sort(-1).values == idx_low.sort(-1).values).all(-1)
    assert same.float().mean() > 0.8
    err = (low.float() - ref).norm(dim=-1)[same] / ref.norm(dim=-1)[same]
    assert float(err.max()) < 0.03


def test_rows_share_gradients_with_the_stack():
    d = random_dictionary(layers=(0, 1, 2))
    x = torch.randn(3, 9, 32)
    whole = d(x)[1:].pow(2).sum()
    whole.backward()
    g_whole = d.W_enc.grad.clone()
    d.zero_grad()
    part = d.rows(1, 3)
    part(x[1:]).pow(2).sum().backward()
    assert torch.equal(d.W_enc.grad, g_whole)
    assert float(d.W_enc.grad[0].abs().sum()) == 0.0


@pytest.mark.parametrize("change,needle", [(dict(k=100), "k must be"), (dict(d_sae=0), "at least 1"),
                                           (dict(site="resid_post", skip=True), "skip connection"),
                                           (dict(site="nowhere"), "unknown site"), (dict(layers=[]), "distinct layers")])
def test_bad_configs_are_one_line_errors(change, needle):
    base = dict(site="mlp", layers=[0], d_in=4, d_out=4, d_sae=8, k=2)
    with pytest.raises(WorkbenchError, match=needle):
        DictionaryConfig(**{**base, **change}).check()


def test_missing_layer_is_refused():
    with pytest.raises(WorkbenchError, match="no layer 5"):
        random_dictionary().encode(torch.zeros(3, 32), 5)
