"""Token streams for training: corpus text and synthetic tasks, mixed by weight.

Every training sequence is a pure function of (seed, index): sequence i draws its source (by the
mix's weights) and its content from a generator seeded with (seed, i). The data position is
therefore a single integer -- the number of sequences consumed -- which makes resuming exact.

Sources
  corpus     a random window of the corpus's training tokens (documents joined by <|endoftext|>)
  repeated   random tokens in segments of random length, each segment repeated to fill the context
             (the pattern induction heads solve; varying lengths defeat positional shortcuts)
  ioi        generated sentences in the style of indirect-object identification prompts
The last `heldout_fraction` of the corpus's documents never appear in training; evaluation reads them.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interp.data.corpus import open_corpus
from interp.errors import WorkbenchError
from interp.io import write_with
from interp.models.cache import cache_dir
from interp.train.args import check_field_types

MAX_DOCUMENTS = 20_000  # cap for endless or huge corpora


@dataclass(frozen=True)
class DataMix:
    corpus: float = 1.0  # weight of corpus text windows
    repeated: float = 0.0  # weight of repeated random segments
    ioi: float = 0.0  # weight of IOI-like sentences
    min_segment: int = 8  # shortest repeated segment (tokens)
    max_segment: int = 64  # longest repeated segment (tokens)

    def __post_init__(self) -> None:
        """A mix is checked when it is made, so every DataMix in use is a valid one."""
        check_field_types(self, "data mix")
        w = self.weights()
        if not all(math.isfinite(v) and v >= 0 for v in w.values()) or sum(w.values()) <= 0:
            raise WorkbenchError(f"data mix weights must be non-negative and not all zero, got {w}")
        if not 1 <= self.min_segment <= self.max_segment:
            raise WorkbenchError(f"need 1 <= min_segment <= max_segment, got {self.min_segment}, {self.max_segment}")

    def weights(self) -> dict[str, float]:
        return {"corpus": self.corpus, "repeated": self.repeated, "ioi": self.ioi}

    def with_overrides(self, **changes) -> DataMix:
        """A copy with some fields changed; unknown names are refused."""
        known = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise WorkbenchError(f"unknown data mix fields {unknown}; known: {', '.join(known)}")
        return replace(self, **changes)


# -- corpus tokens -----------------------------------------------------------------------------


def _tokenizer_key(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha1(repr(vocab[:: max(1, len(vocab) // 512)]).encode() + str(len(vocab)).encode()).hexdigest()[:12]


def corpus_token_arrays(corpus: str | None, tokenizer, heldout_fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) int32 token arrays of the corpus, documents joined by EOS; cached on disk."""
    source = open_corpus(corpus)
    safe = "".join(c if c.isalnum() else "_" for c in source.name)[-24:]
    key = hashlib.sha1(f"{source.name}|{heldout_fraction}".encode()).hexdigest()[:8]
    path = cache_dir() / "tokens" / f"{safe}-{key}-{_tokenizer_key(tokenizer)}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return data["train"], data["heldout"]
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache entry: rebuild it
    docs = list(itertools.islice(source.documents(seed=0), MAX_DOCUMENTS))
    if len(docs) < 2:
        raise WorkbenchError(f"corpus {source.name!r} has {len(docs)} document(s); training needs at least 2")
    n_heldout = max(1, round(len(docs) * heldout_fraction))
    eos = tokenizer.eos_token_id

    def encode(texts: list[str]) -> np.ndarray:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.fromiter(itertools.chain.from_iterable(seq + [eos] for seq in ids), dtype=np.int32)

    train, heldout = encode(docs[:-n_heldout]), encode(docs[-n_heldout:])

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a bare name
            np.savez(fh, train=train, heldout=heldout)

    write_with(path, save)
    return train, heldout


# -- IOI-like sentences ----------------------------------------------------------------------------

_NAMES = ["Mary", "John", "Alice", "Bob", "Sarah", "David", "Emma", "James", "Laura", "Peter", "Anna", "Paul"]
_PLACES = ["store", "garden", "school", "market", "station", "river", "library", "park"]
_OBJECTS = ["drink", "book", "ring", "letter", "kiss", "basketball", "apple", "necklace"]
_TEMPLATES = [
    "When {A} and {B} went to the {P}, {B} gave a {O} to {A}.",
    "Then, {A} and {B} had a long day at the {P}. {B} gave a {O} to {A}.",
    "After {A} and {B} arrived at the {P}, {B} handed the {O} to {A}.",
    "While {A} and {B} were working at the {P}, {B} passed a {O} to {A}.",
]


def ioi_text(rng: random.Random, n_sentences: int = 8) -> str:
    """Generated sentences where the second-mentioned name gives something to the first."""
    out = []
    for _ in range(n_sentences):
        a, b = rng.sample(_NAMES, 2)
        out.append(rng.choice(_TEMPLATES).format(A=a, B=b, P=rng.choice(_PLACES), O=rng.choice(_OBJECTS)))
    return " ".join(out)


def ioi_tokens(tokenizer, n_documents: int = 400, seed: int = 0) -> np.ndarray:
    rng = random.Random(seed)
    ids = tokenizer([ioi_text(rng) for _ in range(n_documents)], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return np.fromiter(itertools.chain.from_iterable(seq + [eos] for seq in ids), dtype=np.int32)


# -- the stream ------------------------------------------------------------------------------------


class TokenStream:
    """Sequences of n_ctx tokens, each starting with BOS; `batch(start, size)` is deterministic."""

    def __init__(self, corpus_tokens: np.ndarray, mix: DataMix, n_ctx: int, d_vocab: int, bos: int, seed: int,
                 ioi: np.ndarray | None = None):
        weights = mix.weights()
        self.sources = [name for name, w in weights.items() if w > 0]
        self.probs = np.array([weights[s] for s in self.sources]) / sum(weights[s] for s in self.sources)
        self.cumulative = np.cumsum(self.probs)
        self.corpus, self.ioi, self.mix = corpus_tokens, ioi, mix
        self.n_ctx, self.d_vocab, self.bos, self.seed = n_ctx, d_vocab, bos, seed
        for name, arr in (("corpus", corpus_tokens), ("ioi", ioi)):
            if name in self.sources and (arr is None or len(arr) < n_ctx):
                raise WorkbenchError(f"the {name} data has fewer tokens than n_ctx={n_ctx}; use a bigger corpus")
        if "repeated" in self.sources and n_ctx - 1 < mix.min_segment:
            raise WorkbenchError(f"n_ctx={n_ctx} leaves {n_ctx - 1} tokens after BOS, fewer than the data mix's shortest "
                                 f"repeated segment (min_segment={mix.min_segment}); raise n_ctx (--arch n_ctx=) or "
                                 "lower it (--mix min_segment=)")  # fmt: skip

    def sequence(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        pick = int(np.searchsorted(self.cumulative, rng.random() * self.cumulative[-1], side="right"))
        source = self.sources[min(pick, len(self.sources) - 1)]
        body = self.n_ctx - 1
        if source == "repeated":
            length = int(rng.integers(self.mix.min_segment, min(self.mix.max_segment, body) + 1))
            segment = rng.integers(0, self.d_vocab, size=length)
            segment[segment == self.bos] = (self.bos + 1) % self.d_vocab
            tokens = np.tile(segment, body // length + 1)[:body]
        else:
            arr = self.corpus if source == "corpus" else self.ioi
            start = int(rng.integers(0, len(arr) - body + 1))
            tokens = arr[start : start + body]
        return np.concatenate([[self.bos], tokens]).astype(np.int64)

    def batch(self, start: int, size: int) -> Int[Tensor, "batch pos"]:
        return torch.from_numpy(np.stack([self.sequence(start + i) for i in range(size)]))


class MicroBatches:
    """One process's micro-batches from a stream, each built in a background thread while the
    previous one trains. Data-parallel process `rank` of `world` takes its own slice of every
    global micro-batch of world x `size` sequences; `position` counts the sequences all
    processes together have consumed (the data position a checkpoint stores)."""

    def __init__(self, stream: TokenStream, position: int, size: int, rank: int = 0, world: int = 1,
                 pin: bool = False):
        self.stream, self.position, self.size, self.rank, self.world = stream, position, size, rank, world
        self.pin = pin  # page-locked host memory (for CUDA), so the copy to the device overlaps the step
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._next = self._pool.submit(self._build, position + rank * size)

    def _build(self, start: int) -> Int[Tensor, "batch pos"]:
        tokens = self.stream.batch(start, self.size)
        return tokens.pin_memory() if self.pin else tokens

    def next(self) -> Int[Tensor, "batch pos"]:
        tokens = self._next.result()
        self.position += self.size * self.world
        self._next = self._pool.submit(self._build, self.position + self.rank * self.size)
        return tokens

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def heldout_batch(heldout: np.ndarray, n_ctx: int, n_sequences: int, bos: int) -> Int[Tensor, "batch pos"]:
    """The first n_sequences non-overlapping windows of held-out text, each after a BOS."""
    body = n_ctx - 1
    n = min(n_sequences, len(heldout) // body)
    if n < 1:
        raise WorkbenchError(f"the held-out text has fewer than {body} tokens; use a bigger corpus or smaller n_ctx")
    windows = heldout[: n * body].reshape(n, body).astype(np.int64)
    return torch.from_numpy(np.concatenate([np.full((n, 1), bos, dtype=np.int64), windows], axis=1))


