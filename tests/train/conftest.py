"""A tiny corpus and test-sized architectures so every training test runs in seconds."""

from __future__ import annotations

import itertools

import pytest

from interp.data.corpus import open_corpus

# 2 heads of 16, d_model 32, 32 tokens of context, a 300-token BPE: ~30k parameters.
TINY_ARCH = dict(d_model=32, n_heads=2, d_head=16, n_ctx=32, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
    """A folder of 40 short generated documents (one file each)."""
    folder = tmp_path_factory.mktemp("tiny_corpus")
    for i, doc in enumerate(itertools.islice(open_corpus("synthetic").documents(seed=0), 40)):
        (folder / f"doc{i:03d}.txt").write_text(doc)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_session(tiny_corpus):
    """kwargs for `train` that make a test-sized run on the tiny corpus (copy before changing)."""
    return dict(corpus=tiny_corpus, arch=dict(TINY_ARCH))


@pytest.fixture
def tiny(tiny_session):
    return dict(corpus=tiny_session["corpus"], arch=dict(tiny_session["arch"]))
