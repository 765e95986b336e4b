"""Tokenizers for in-house models: a byte-level BPE trained on the corpus (cached), or GPT-2's.

`corpus_tokenizer(corpus, vocab_size)` trains a byte-level BPE with the `tokenizers` library on
the corpus's documents the first time, saves it under the workbench cache
(`tokenizers/bpe-<corpus>-<vocab>`) and reloads it from there afterwards. The special token
`<|endoftext|>` is BOS, EOS and the document separator, as in GPT-2.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from interp.data.corpus import open_corpus
from interp.errors import WorkbenchError
from interp.io import write_dir
from interp.models.cache import cache_dir

SPECIAL = "<|endoftext|>"
MIN_VOCAB = 256 + 1  # every byte, plus the special token


def _cache_key(corpus_name: str, vocab_size: int, max_documents: int | None) -> str:
    digest = hashlib.sha1(f"{corpus_name}|{vocab_size}|{max_documents}".encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() else "_" for c in corpus_name)[-24:]
    return f"bpe-{safe}-{vocab_size}-{digest}"


def corpus_tokenizer_dir(corpus: str | None = None, vocab_size: int = 4096, max_documents: int | None = None) -> Path:
    """The folder of a byte-level BPE trained on `corpus` (trained and cached on first use)."""
    if vocab_size < MIN_VOCAB:
        raise WorkbenchError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + <|endoftext|>), got {vocab_size}")
    source = open_corpus(corpus)
    if source.kind in ("synthetic", "hf") and max_documents is None:
        max_documents = 20_000  # endless or huge corpora: train on a bounded sample
    target = cache_dir() / "tokenizers" / _cache_key(source.name, vocab_size, max_documents)
    if (target / "tokenizer.json").is_file():
        return target

    def fill(tmp: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[SPECIAL],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        docs = itertools.islice(source.documents(seed=0), max_documents)
        tok.train_from_iterator(docs, trainer=trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL)
        fast.save_pretrained(str(tmp))

    return write_dir(target, fill)


def corpus_tokenizer(corpus: str | None = None, vocab_size: int = 4096, max_documents: int | None = None):
    return AutoTokenizer.from_pretrained(str(corpus_tokenizer_dir(corpus, vocab_size, max_documents)))


def make_tokenizer(kind: str, corpus: str | None, vocab_size: int) -> PreTrainedTokenizerBase:
    """'bpe': a BPE trained on the corpus with `vocab_size` tokens; 'gpt2': GPT-2's 50257 tokens."""
    if kind == "bpe":
        return corpus_tokenizer(corpus, vocab_size)
    if kind == "gpt2":
        from interp.models.tokenizers import gpt2_tokenizer

        return gpt2_tokenizer()
    raise WorkbenchError(f"unknown tokenizer {kind!r}; use 'bpe' (trained on the corpus) or 'gpt2'")
