"""The fast training forward equals the bridge's for every preset; the data stream is
deterministic, mixes by weight and keeps held-out text out of training; the ICL score's math."""

from __future__ import annotations

import math

from dataclasses import replace

import numpy as np
import pytest
import torch

from interp.errors import WorkbenchError
from interp.models.inhouse import build_native
from interp.train import PRESETS
from interp.train.data import DataMix, TokenStream, corpus_token_arrays, heldout_batch
from interp.train.forward import FastLM, lm_loss
from interp.train.metrics import (icl_bands, icl_positions, icl_score, icl_token_score, icl_window_scores, per_token_loss,
                                  repeat_bigram_gap, repeated_bigram_mask)
from interp.train.tokenizer import corpus_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_corpus):
    return corpus_tokenizer(tiny_corpus, 300)


@pytest.mark.parametrize("name", list(PRESETS))
def test_fast_forward_equals_the_bridge(name, tok):
    spec = PRESETS[name].with_overrides(d_model=32, n_heads=4, d_head=8, n_ctx=24, d_vocab=len(tok)).spec
    spec = replace(spec, d_mlp=None if spec.attn_only else 48, n_kv_heads=2 if spec.n_kv_heads else None)
    bridge = build_native(spec, tok, device="cpu").bridge
    with torch.no_grad():  # random weights are too tame: make every parameter matter
        for p in bridge.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    tokens = torch.randint(0, len(tok), (3, 24))
    fast = FastLM(bridge, spec)
    with torch.no_grad():
        torch.testing.assert_close(fast(tokens), bridge(tokens), atol=1e-4, rtol=1e-4)
    # gradients reach the bridge's own parameters
    lm_loss(fast(tokens), tokens).backward()
    assert all(p.grad is not None for p in bridge.parameters())


def test_tokenizer_has_the_asked_vocabulary_and_is_cached(tiny_corpus, tok):
    assert len(tok) == 300 and tok.bos_token_id == tok.eos_token_id
    assert tok.decode(tok("Mary gave a book to John.")["input_ids"]) == "Mary gave a book to John."
    again = corpus_tokenizer(tiny_corpus, 300)
    assert again.get_vocab() == tok.get_vocab()
    with pytest.raises(WorkbenchError, match="vocab_size must be at least 257"):
        corpus_tokenizer(tiny_corpus, 100)


def test_stream_is_deterministic_and_mixes_by_weight(tiny_corpus, tok):
    train_tokens, heldout = corpus_token_arrays(tiny_corpus, tok)
    mix = DataMix(corpus=0.5, repeated=0.5, min_segment=4, max_segment=6)
    stream = TokenStream(train_tokens, mix, 32, len(tok), tok.bos_token_id, seed=7)
    a, b = stream.batch(0, 64), stream.batch(0, 64)
    assert torch.equal(a, b) and a.shape == (64, 32) and (a[:, 0] == tok.bos_token_id).all()
    assert torch.equal(stream.batch(10, 4), a[10:14])  # a sequence depends on its index only
    assert not torch.equal(TokenStream(train_tokens, mix, 32, len(tok), tok.bos_token_id, seed=8).batch(0, 64), a)

    def is_repeated(seq):
        body = seq[1:]
        return any(torch.equal(body[L:], body[:-L]) for L in range(4, 7))

    n_rep = sum(is_repeated(s) for s in stream.batch(0, 400))
    assert 150 < n_rep < 250  # about half


def test_heldout_text_never_appears_in_training(tiny_corpus, tok):
    train_tokens, heldout = corpus_token_arrays(tiny_corpus, tok)
    assert len(heldout) > 31
    ho = heldout_batch(heldout, 32, 4, tok.bos_token_id)
    text = tok.decode(ho[0, 1:].tolist())
    assert text not in tok.decode(train_tokens.tolist())
    assert np.array_equal(ho[0, 1:].numpy(), heldout[:31])


def test_icl_token_score_is_late_minus_early_loss():
    assert icl_positions(512) == (50, 500) and icl_positions(256) == (25, 250)
    losses = torch.zeros(2, 255)
    losses[:, 24] = 3.0  # predicting token 25
    losses[:, 249] = 1.0  # predicting token 250
    assert icl_token_score(losses, 256) == pytest.approx(-2.0)


def test_icl_score_averages_bands_and_reports_the_standard_error():
    early, late = icl_bands(128)
    assert (early.start, early.stop, late.start, late.stop) == (8, 24, 96, 128)
    losses = torch.full((3, 127), 9.0)  # positions outside both bands must not count
    window_scores = [-1.0, -2.0, -3.0]
    for w, score in enumerate(window_scores):
        losses[w, 7:23] = 4.0  # tokens 8..23
        losses[w, 95:127] = 4.0 + score  # tokens 96..127
    mean, se = icl_score(losses, 128)
    assert mean == pytest.approx(-2.0)
    assert se == pytest.approx(float(torch.tensor(window_scores).std()) / 3 ** 0.5)
    assert icl_window_scores(losses, 128).tolist() == pytest.approx(window_scores)


def test_repeated_bigram_mask_matches_a_plain_loop():
    def reference(seq):
        return [any(seq[j] == seq[i] and seq[j + 1] == seq[i + 1] for j in range(i)) for i in range(len(seq) - 1)]

    tokens = torch.randint(0, 4, (5, 40), generator=torch.Generator().manual_seed(0))
    mask = repeated_bigram_mask(tokens)
    assert mask.tolist() == [reference(seq.tolist()) for seq in tokens]
    assert 0 < mask.float().mean() < 1
    # [A][B] ... [A][B]: the second B is predictable, the first is not
    assert repeated_bigram_mask(torch.tensor([[0, 5, 6, 7, 5, 6]])).tolist() == [[False, False, False, False, True]]


def test_repeat_bigram_gap():
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[False, True, False, True]])
    assert repeat_bigram_gap(losses, mask) == pytest.approx(3.0 - 2.0)
    assert math.isnan(repeat_bigram_gap(losses, torch.zeros_like(mask)))


def test_per_token_loss_matches_cross_entropy():
    logits, tokens = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    per = per_token_loss(logits, tokens)
    assert per.shape == (2, 4)
    assert per.mean().item() == pytest.approx(lm_loss(logits, tokens).item(), abs=1e-6)


def test_ioi_sentences_mix_in(tiny_corpus, tok):
    from interp.train.data import ioi_tokens

    train_tokens, _ = corpus_token_arrays(tiny_corpus, tok)
    stream = TokenStream(train_tokens, DataMix(corpus=0.0, ioi=1.0), 32, len(tok), tok.bos_token_id, seed=0,
                         ioi=ioi_tokens(tok, n_documents=20))
    text = tok.decode(stream.batch(0, 8).flatten().tolist())
    assert " gave a " in text or " handed the " in text or " passed a " in text
    with pytest.raises(WorkbenchError, match="ioi data has fewer tokens"):
        TokenStream(train_tokens, DataMix(corpus=0.0, ioi=1.0), 32, len(tok), tok.bos_token_id, seed=0, ioi=None)
    with pytest.raises(WorkbenchError, match="data mix weights"):
        DataMix(corpus=0.0).weights()
