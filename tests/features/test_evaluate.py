"""Evaluation against plain recomputations: FVU/L0/dead from captured activations, and the splice
against a patch of the Hugging Face model's own MLP."""

from __future__ import annotations

import math

import pytest
import torch
from feature_helpers import random_dictionary

from interp import hooks
from interp.errors import WorkbenchError
from interp.features.activations import token_table
from interp.features.evaluate import evaluate, splice_hooks
from interp.features.formats import model_fingerprint


@pytest.fixture
def transcoder(tiny_llama):
    return random_dictionary(d_sae=40, k=3, model=model_fingerprint(tiny_llama))


def test_fvu_l0_dead_match_plain_recomputation(tiny_llama, transcoder):
    ev = evaluate(tiny_llama, transcoder, corpus="kjv", n_tokens=600, seq_len=32, splice=[], all_at_once=False)
    table = token_table(tiny_llama, "kjv", 32, 600, 0)
    tokens = table.long()
    xs = {la: [] for la in (0, 1)}
    ys = {la: [] for la in (0, 1)}
    for row in tokens:
        names = [hooks.name("mlp_normed", 0), hooks.name("mlp_out", 0), hooks.name("mlp_normed", 1), hooks.name("mlp_out", 1)]
        got = hooks.capture(tiny_llama, row[row >= 0][None], names)
        for la in (0, 1):
            xs[la].append(got[hooks.name("mlp_normed", la)][0, 1:])  # BOS left out
            ys[la].append(got[hooks.name("mlp_out", la)][0, 1:])
    assert ev.n_tokens == sum(len(t) for t in xs[0])
    for row in ev.layers:
        x, y = torch.cat(xs[row.layer]), torch.cat(ys[row.layer])
        with torch.no_grad():
            acts = transcoder.encode(x, row.layer)
            y_hat = transcoder.reconstruct(x, row.layer)
        fvu = float(((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
        assert row.fvu == pytest.approx(fvu, rel=1e-4)
        assert row.l0 == pytest.approx(float((acts > 0).sum(-1).float().mean()), rel=1e-6)
        assert row.dead == pytest.approx(float(((acts > 0).sum(0) == 0).float().mean()))
        assert sum(row.density) == int(((acts > 0).sum(0) > 0).sum())


def test_splice_equals_patching_the_hf_mlp(tiny_llama, tiny_llama_dir, transcoder):
    """The same weights loaded by plain transformers (no bridge), its layer-1 MLP swapped for the
    transcoder except at BOS: the logits must be ours."""
    from transformers import AutoModelForCausalLM

    tokens = tiny_llama.to_tokens("In the beginning God created the heaven and the earth.")
    keep = torch.zeros(tokens.shape, dtype=torch.bool)
    keep[:, 0] = True
    ours = tiny_llama.run_with_hooks(tokens, fwd_hooks=splice_hooks(transcoder, [1], keep))
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), attn_implementation="eager").eval()
    mlp = hf.model.layers[1].mlp
    original = mlp.forward

    def patched(x):
        out = transcoder.reconstruct(x, 1).to(x.dtype)
        out[:, 0] = original(x)[:, 0]
        return out

    mlp.forward = patched
    try:
        with torch.no_grad():
            ref = hf(tokens).logits
    finally:
        mlp.forward = original
    assert torch.allclose(ours, ref, atol=1e-5)
    clean = tiny_llama(tokens)
    assert not torch.allclose(ours, clean, atol=1e-3)  # the splice did change something


def test_ce_recovered_and_kl_are_consistent(tiny_llama, transcoder):
    ev = evaluate(tiny_llama, transcoder, corpus="kjv", n_tokens=300, seq_len=32, splice=[0])
    row = ev.layers[0]
    assert row.kl >= 0 and math.isnan(ev.layers[1].ce_spliced)
    assert row.ce_recovered == pytest.approx((row.ce_zero - row.ce_spliced) / (row.ce_zero - row.ce_clean))
    assert ev.all_spliced["kl"] >= 0 and ev.all_spliced["ce_clean"] == pytest.approx(row.ce_clean)


def test_bad_evaluation_input(tiny_llama, tiny_gpt2, transcoder):
    with pytest.raises(WorkbenchError, match="not all in"):
        evaluate(tiny_llama, transcoder, corpus="kjv", n_tokens=100, splice=[5])
    with pytest.raises(WorkbenchError, match="made for"):
        evaluate(tiny_gpt2, transcoder, corpus="kjv", n_tokens=100)
