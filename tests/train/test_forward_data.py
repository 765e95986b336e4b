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
from interp.train.metrics import (change_across, icl_bands, icl_positions, icl_score, icl_token_score, icl_window_scores,
                                  per_token_loss, repeat_bigram_gap, repeated_bigram_mask)
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


def test_change_across_a_window_compares_the_spans_around_it():
    records = [{"step": s, "icl_score": (-0.1 if s < 700 else -0.2), "loss": 1.0} for s in range(0, 1200, 20)]
    records.insert(3, {"step": 50, "loss": 3.0})  # training records without the key are ignored
    before, after = change_across(records, "icl_score", (700, 760), span=200)
    assert before == pytest.approx(-0.1) and after == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="before the window"):
        change_across(records, "icl_score", (0, 60), span=200)


def test_ablated_token_losses_match_a_plainly_written_mean_ablation(tiny_llama):
    """Reference: one hook that overwrites the heads' z with means computed by a separate cached pass."""
    from interp.train.metrics import ablated_token_losses

    tokens = torch.randint(1, 100, (5, 12), generator=torch.Generator().manual_seed(0))
    heads = [(0, 1), (1, 0)]
    clean = ablated_token_losses(tiny_llama, tokens, [])
    assert torch.allclose(clean, per_token_loss(tiny_llama(tokens), tokens), atol=1e-5)

    _, cache = tiny_llama.run_with_cache(tokens)
    def overwrite(z, hook):
        layer = int(hook.name.split(".")[1])
        for l, h in heads:
            if l == layer:
                z[:, :, h] = cache[hook.name][:, :, h].mean((0, 1))
        return z
    names = {f"blocks.{l}.attn.hook_z" for l, _ in heads}
    logits = tiny_llama.run_with_hooks(tokens, fwd_hooks=[(n, overwrite) for n in names])
    fast = ablated_token_losses(tiny_llama, tokens, heads, batch_size=2)  # chunked means and forwards
    assert torch.allclose(fast, per_token_loss(logits, tokens), atol=1e-5)
    assert not torch.allclose(fast, clean, atol=1e-3)


def test_icl_under_ablation_reports_every_head_set(tiny_llama):
    from interp.train.metrics import icl_under_ablation

    tokens = torch.randint(1, 100, (4, 32), generator=torch.Generator().manual_seed(1))
    rows = icl_under_ablation(tiny_llama, tokens, {"induction": [(1, 0)], "other": [(1, 1)]}, mode="zero")
    assert [r["ablated"] for r in rows] == ["none", "induction", "other"]
    assert rows[1]["heads"] == [[1, 0]] and rows[0]["heads"] == []
    assert rows[0]["loss"] != rows[1]["loss"] and all(r["icl_score_se"] > 0 for r in rows)
    for r in rows:  # the score is the late band minus the early band
        assert r["icl_score"] == pytest.approx(r["loss_late"] - r["loss_early"], abs=1e-5)
    with pytest.raises(WorkbenchError, match="unknown ablation"):
        icl_under_ablation(tiny_llama, tokens, {"x": [(0, 0)]}, mode="resample")
    with pytest.raises(WorkbenchError, match=r"heads \[\(5, 0\)\] do not exist"):
        icl_under_ablation(tiny_llama, tokens, {"x": [(5, 0)]})


def test_compare_across_uses_one_window_for_every_run():
    from interp.train.metrics import compare_across

    jump = [{"step": s, "eval_loss": 1.0, "icl_score": -0.1 if s < 700 else -0.2, "repeat_bigram_gap": -1.0}
            for s in range(0, 1500, 20)]
    flat = [{"step": s, "eval_loss": 1.0, "icl_score": -0.1} for s in range(0, 1500, 20)]  # an older log: no gap
    rows = compare_across({"2l": jump, "1l": flat}, (680, 760))
    assert [r["run"] for r in rows] == ["2l", "1l"] and rows[0]["span"] == 100  # max(100, 80, 5 x 20)
    assert rows[0]["icl_score change"] == pytest.approx(-0.1) and rows[1]["icl_score change"] == pytest.approx(0.0)
    assert rows[0]["repeat_bigram_gap change"] == pytest.approx(0.0) and rows[1]["repeat_bigram_gap change"] is None
    assert compare_across({"2l": jump}, (680, 760), span=300)[0]["span"] == 300
