"""Documents cut into prefix windows (interp.data.corpus.windows)."""

from __future__ import annotations

import itertools

import pytest

from interp.data.corpus import open_corpus, windows
from interp.errors import WorkbenchError
from interp.models.tokenizers import gpt2_tokenizer


def test_windows_cover_documents_in_order_and_stop_at_n_tokens():
    tok = gpt2_tokenizer()
    corpus = open_corpus("synthetic")
    ws = list(windows(corpus, tok, seq_len=16, n_tokens=100, bos_id=tok.bos_token_id))
    assert sum(len(w.tokens) - 1 for w in ws) == 100
    assert all(w.tokens[0] == tok.bos_token_id and len(w.tokens) <= 16 for w in ws)
    doc = tok.encode(next(corpus.documents(0)), add_special_tokens=False)
    first = [w for w in ws if w.doc_id == 0]
    assert (
        list(itertools.chain.from_iterable(w.tokens[1:] for w in first)) == doc[: sum(len(w.tokens) - 1 for w in first)]
    )
    for a, b in itertools.pairwise(first):
        assert b.start == a.start + 15 and a.next_token == b.tokens[1]
    assert ws == list(windows(corpus, tok, seq_len=16, n_tokens=100, bos_id=tok.bos_token_id))  # deterministic
    no_bos = list(windows(corpus, tok, seq_len=16, n_tokens=40))
    assert no_bos[0].tokens == doc[:16] and no_bos[0].next_token == doc[16]


def test_windows_need_room_for_text():
    with pytest.raises(WorkbenchError, match="seq_len"):
        next(windows(open_corpus("synthetic"), gpt2_tokenizer(), seq_len=1, bos_id=0))
