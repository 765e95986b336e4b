"""Repeated-token probes: shape, repetition, which ids are drawn, small vocabularies."""

from __future__ import annotations

import pytest
import torch

from interp.data.synthetic import repeated_tokens, token_pool
from interp.errors import WorkbenchError
from interp.models.inhouse import NativeSpec, build_native


def test_bos_then_a_segment_twice(tiny_gpt2):
    t = repeated_tokens(tiny_gpt2, n_seqs=5, seg_len=7, seed=3)
    assert t.shape == (5, 15)
    assert (t[:, 0] == tiny_gpt2.bos_token_id).all()
    assert torch.equal(t[:, 1:8], t[:, 8:])
    assert all(len(set(row[1:8].tolist())) == 7 for row in t)  # no repeats inside a segment
    assert torch.equal(t, repeated_tokens(tiny_gpt2, 5, 7, seed=3))
    assert not torch.equal(t, repeated_tokens(tiny_gpt2, 5, 7, seed=4))


def test_extremes_and_specials_are_excluded(tiny_gpt2):
    pool = token_pool(tiny_gpt2)
    d_vocab = tiny_gpt2.info.d_vocab  # 50257, BOS/EOS 50256
    assert pool.min() >= 0.02 * d_vocab and pool.max() < 0.9 * d_vocab
    assert tiny_gpt2.bos_token_id not in set(pool.tolist())
    t = repeated_tokens(tiny_gpt2, 20, 10)[:, 1:]
    assert t.min() >= 0.02 * d_vocab and t.max() < 0.9 * d_vocab
    assert len(token_pool(tiny_gpt2, exclude_extremes=False)) == d_vocab - 1  # all but BOS


def test_small_vocabulary_tokenizer_free_model():
    bridge = build_native(NativeSpec(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=32, d_vocab=12, attn_only=True), None)
    t = repeated_tokens(bridge, 4, 15)  # more tokens than the pool: drawn with replacement
    assert t.shape == (4, 31) and (t[:, 0] == 0).all()
    assert t[:, 1:].min() >= 1 and t[:, 1:].max() < 12
    assert len(token_pool(bridge)) >= 12 // 2 - 1


def test_bad_sizes(tiny_gpt2):
    with pytest.raises(WorkbenchError, match="context"):
        repeated_tokens(tiny_gpt2, 2, 40)  # 81 > n_ctx 64
    with pytest.raises(WorkbenchError):
        repeated_tokens(tiny_gpt2, 0, 5)
