"""The batched logit lens (one matmul per chunk of (layer, position) rows, top-k on the logits,
probabilities from an in-place exp-sum) against the plain per-layer reference (softmax over the
whole vocabulary, then top-k), in float32 and bfloat16."""

from __future__ import annotations

import pytest
import torch

from interp import load
from interp.lens import lens_residuals, logit_lens, logit_lens_reference

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def models(request, tiny_gpt2_dir, tiny_llama_dir):
    """Both tiny models in one dtype."""
    return request.param, {name: load(str(folder), device="cpu", dtype=request.param)
                           for name, folder in (("gpt2", tiny_gpt2_dir), ("llama", tiny_llama_dir))}


def _assert_same(got, want, atol):
    assert got.top_ids.shape == want.top_ids.shape
    assert torch.equal(got.top_ids, want.top_ids)
    assert torch.equal(got.final_rank, want.final_rank)
    torch.testing.assert_close(got.top_probs, want.top_probs, atol=atol, rtol=0)
    assert got.top_tokens == want.top_tokens and got.str_tokens == want.str_tokens
    assert got.layer_names == want.layer_names


@pytest.mark.parametrize("which", ["gpt2", "llama"])
@pytest.mark.parametrize("last", [None, 3])
def test_fast_lens_equals_reference(models, which, last):
    dtype, by_name = models
    model = by_name[which]
    residuals = lens_residuals(model, PROMPT)
    assert residuals[1].dtype == getattr(torch, dtype)
    want = logit_lens_reference(model, PROMPT, k=4, residuals=residuals, last=last)
    # chunks of 5 rows cut across layers; one chunk holding every row; the default
    for chunk in (5, 10_000, 256):
        got = logit_lens(model, PROMPT, k=4, chunk=chunk, residuals=residuals, last=last)
        _assert_same(got, want, atol=1e-6)
    assert torch.all(want.final_rank[-1] == 0)  # the last row is the model's own prediction
    assert (want.final_rank[:-1] > 0).any()  # ... and the earlier rows are not all already there


def test_reference_matches_the_models_own_forward(models):
    """The reference's last row is the model's forward pass: its top tokens and probabilities."""
    _, by_name = models
    model = by_name["llama"]
    ref = logit_lens_reference(model, PROMPT, k=5)
    with torch.no_grad():
        probs = model(model.to_tokens(PROMPT))[0].float().softmax(-1)  # [pos, vocab]
    top = probs.topk(5, dim=-1)
    assert torch.equal(ref.top_ids[-1], top.indices)
    torch.testing.assert_close(ref.top_probs[-1], top.values, atol=1e-6, rtol=0)


def test_lens_k_larger_than_vocab_is_the_whole_vocabulary(tiny_gpt2):
    lens = logit_lens(tiny_gpt2, PROMPT, k=10 ** 6, last=2)
    assert lens.top_ids.shape[-1] == tiny_gpt2.info.d_vocab
    torch.testing.assert_close(lens.top_probs.sum(-1), torch.ones(lens.top_probs.shape[:-1]))
