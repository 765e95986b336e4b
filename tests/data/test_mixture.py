"""The mixture corpus: roff to text, deduplication, the held-out split, windows cut from the token
store against a plain loop, and the build on tiny sources (no system docs needed)."""

from __future__ import annotations

import numpy as np
import pytest

from interp.data import mixture, token_store
from interp.errors import WorkbenchError

ROFF = r""".\" a comment
.TH LS 1
.SH NAME
ls \- list directory contents
.SH DESCRIPTION
\fBls\fR lists files; cr\('eer \(`a l\(aqendroit \[u00E9]t\('e \(:e.
.IP "\fB\-a\fR" 4
do not ignore entries starting with .
.BR ls (1)
"""


def test_roff_to_text_keeps_words_and_resolves_escapes():
    text = mixture.roff_to_text(ROFF)
    assert "ls - list directory contents" in text
    assert "ls lists files; créer à l'endroit été ë." in text
    assert "-a" in text and " 4" not in text and "comment" not in text and "ls(1)" in text


def test_dedup_drops_repeated_documents_and_long_paragraphs():
    dd = mixture.Deduper()
    boiler = "This program is free software; you can redistribute it under the terms of the GNU GPL, any version."
    a = dd("Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu.\n\n" + boiler)
    assert a is not None and boiler in a
    assert dd("Alpha  beta gamma delta epsilon zeta eta theta iota kappa lambda MU.\n\n" + boiler) is None  # same text
    b = dd("Another document with its own words, long enough to be kept by itself.\n\n" + boiler)
    assert b is not None and boiler not in b
    assert dd("short") is None


def test_heldout_split_is_stable_and_about_its_share():
    keys = [f"doc/{i}" for i in range(20_000)]
    held = [k for k in keys if mixture.is_heldout(k, 20)]
    assert 0.015 < len(held) / len(keys) < 0.025
    assert held == [k for k in keys if mixture.is_heldout(k, 20)]


def test_cut_windows_matches_a_plain_loop():
    offsets = np.array([0, 5, 5, 17, 18, 40])
    start, length = token_store.cut_windows(offsets, 4)
    ref = [(s, min(4, e - s)) for a, e in zip(offsets[:-1], offsets[1:]) for s in range(a, e, 4)]
    assert list(zip(start.tolist(), length.tolist())) == ref


@pytest.fixture
def built(tmp_path, monkeypatch, tiny_llama):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    docs = [(f"fake/{i}", f"Document number {i} says something different about item {i * 7}. " * 3) for i in range(300)]
    monkeypatch.setitem(mixture.READERS, "kjv", lambda: iter(docs))
    return token_store.build_mixture(tiny_llama, sources=("kjv",), heldout_permille=100)


def test_build_store_and_tables(built, tiny_llama):
    import json

    manifest = json.loads((built / "manifest.json").read_text())
    row = manifest["sources"]["kjv"]
    assert row["train_docs"] + row["heldout_docs"] == 300 and 10 < row["heldout_docs"] < 60
    tokens, offsets = token_store.read_store(built, "train")
    assert offsets[-1] == len(tokens) == row["train_tokens"]
    bos = tiny_llama.bos_token_id
    table = token_store.mixture_table("mix", tiny_llama.tokenizer, 16, 500, seed=0, bos=bos)
    assert (table[:, 0] == bos).all() and int((table[:, 1:] >= 0).sum()) >= 500
    first = table[0, 1:][table[0, 1:] >= 0].tolist()  # every window is a run of one document's tokens
    flat = tokens.tolist()
    assert any(flat[i : i + len(first)] == first for i in range(len(flat) - len(first) + 1))
    with pytest.raises(WorkbenchError, match="holds"):
        token_store.mixture_table("mix:heldout", tiny_llama.tokenizer, 16, 10**7, seed=0, bos=bos)
    from interp.data.corpus import open_corpus

    docs = list(open_corpus("mix:heldout").documents(0))
    assert len(docs) == row["heldout_docs"]


def test_model_samples_are_a_source(tmp_path, monkeypatch, tiny_llama):
    from interp.data.samples import sample_texts

    docs = list(sample_texts(tiny_llama, n_tokens=16, seed=0, batch=2, length=8))
    assert len(docs) == 2 and all(key.startswith("model/0/") for key, _ in docs)
    again = list(sample_texts(tiny_llama, n_tokens=16, seed=0, batch=2, length=8))
    assert docs == again  # seeded
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    store = token_store.build_mixture(tiny_llama, sources=("model",), sample_tokens=16)
    import json

    row = json.loads((store / "manifest.json").read_text())["sources"]["model"]
    assert row["train_docs"] + row["heldout_docs"] >= 1
