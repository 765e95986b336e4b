"""Building the mixture corpus (interp.data.mixture) and reading its token store.

`build_mixture` gathers each source's documents once (deduplicated against every source before
it, cached as text/SOURCE.jsonl.gz), then tokenizes them for one tokenizer into the train and
held-out stores; both steps are atomic folders, and a rerun reuses whatever is finished.
`mixture_table` cuts a store's documents into windows and draws `n_tokens` worth of them in a
seeded order, the way interp.data.corpus.windows cuts a corpus (BOS first, -1 = padding).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from interp.data.mixture import READERS, SOURCES, Deduper, corpus_root, is_heldout
from interp.errors import WorkbenchError
from interp.io import write_dir

if TYPE_CHECKING:
    from interp.models import Model

Progress = Callable[[int, int, str], None]


def tokenizer_key(tokenizer) -> str:
    """A short stable name for a tokenizer: its vocabulary's hash."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:12]


def _gather(source: str, dedup: Deduper, model: Model | None, sample_tokens: int, seed: int) -> list[tuple[str, str]]:
    if source == "model":
        if model is None or sample_tokens <= 0:
            return []
        from interp.data.samples import sample_texts

        batch = min(16, max(1, sample_tokens // 256))  # documents of up to 256 tokens, 16 at a time
        docs = sample_texts(model, sample_tokens, seed, batch=batch, length=min(256, sample_tokens))
    else:
        docs = READERS[source]()
    out = []
    for key, text in docs:
        kept = dedup(text)
        if kept is not None:
            out.append((key, kept))
    return out


def _text_path(root: Path, source: str) -> Path:
    return root / "text" / f"{source}.jsonl.gz"


def _write_text(root: Path, source: str, docs: list[tuple[str, str]]) -> None:
    def fill(tmp: Path) -> None:
        with gzip.open(tmp / "docs.jsonl.gz", "wt", encoding="utf-8") as fh:
            for key, text in docs:
                fh.write(json.dumps({"key": key, "text": text}) + "\n")

    write_dir(root / "text" / source, fill)


def _read_text(root: Path, source: str) -> list[tuple[str, str]] | None:
    path = root / "text" / source / "docs.jsonl.gz"
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [(row["key"], row["text"]) for row in map(json.loads, fh)]


def build_mixture(model: Model, sources: tuple[str, ...] = SOURCES, heldout_permille: int = 20,
                  sample_tokens: int = 0, seed: int = 0, progress: Progress | None = None) -> Path:  # fmt: skip
    """Gather, deduplicate, split and tokenize the mixture for `model`'s tokenizer (module doc);
    returns the token store's folder. Sources missing on this machine yield nothing."""
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise WorkbenchError(f"unknown corpus sources {bad}; choose from {', '.join(SOURCES)}")
    root = corpus_root()
    report = progress or (lambda done, total, message: None)
    dedup, texts = Deduper(), {}
    for i, source in enumerate(sources):
        report(i, len(sources), f"gathering {source}")
        cached = _read_text(root, source)
        if cached is None:
            cached = _gather(source, dedup, model, sample_tokens, seed)
            _write_text(root, source, cached)
        else:
            for _, text in cached:  # later sources dedupe against this one too
                dedup(text)
        texts[source] = cached
    key = f"tok-{tokenizer_key(model.tokenizer)}-{'-'.join(sources)}-h{heldout_permille}"
    store = root / key
    if (store / "manifest.json").is_file():
        return store
    report(len(sources), len(sources), "tokenizing")
    write_dir(store, lambda tmp: _tokenize_into(tmp, model.tokenizer, texts, heldout_permille, report))
    return store


def _tokenize_into(tmp: Path, tokenizer, texts: dict[str, list[tuple[str, str]]], permille: int, report) -> None:
    splits = {"train": ([], [0]), "heldout": ([], [0])}
    stats: dict[str, dict] = {}
    for source, docs in texts.items():
        row = stats.setdefault(source, {"train_docs": 0, "train_tokens": 0, "heldout_docs": 0, "heldout_tokens": 0,
                                        "chars": sum(len(t) for _, t in docs)})  # fmt: skip
        for lo in range(0, len(docs), 512):
            part = docs[lo : lo + 512]
            ids = tokenizer([t for _, t in part], add_special_tokens=False)["input_ids"]
            for (k, _), toks in zip(part, ids):
                split = "heldout" if is_heldout(k, permille) else "train"
                chunks, offsets = splits[split]
                chunks.append(np.asarray(toks, dtype=np.uint32))
                offsets.append(offsets[-1] + len(toks))
                row[f"{split}_docs"] += 1
                row[f"{split}_tokens"] += len(toks)
            report(lo + len(part), len(docs), f"tokenizing {source}")
    for split, (chunks, offsets) in splits.items():
        flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)
        flat.tofile(tmp / f"{split}.tokens")
        np.asarray(offsets, dtype=np.int64).tofile(tmp / f"{split}.docs")
    totals = {s: sum(r[f"{s}_tokens"] for r in stats.values()) for s in splits}
    (tmp / "manifest.json").write_text(json.dumps({"sources": stats, "tokens": totals,
                                                   "vocab_size": len(tokenizer)}, indent=1))  # fmt: skip


def find_store(tokenizer) -> Path:
    """The newest token store built for `tokenizer`."""
    root = corpus_root()
    stores = sorted(root.glob(f"tok-{tokenizer_key(tokenizer)}-*"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    stores = [s for s in stores if (s / "manifest.json").is_file()]
    if not stores:
        raise WorkbenchError("no mixture corpus is built for this model's tokenizer; build it first: "
                             "interp features corpus --model MODEL")  # fmt: skip
    return stores[-1]


def read_store(store: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens uint32, document offsets int64) of one split, memory-mapped."""
    tokens = np.memmap(store / f"{split}.tokens", dtype=np.uint32, mode="r")
    offsets = np.fromfile(store / f"{split}.docs", dtype=np.int64)
    return tokens, offsets


def cut_windows(offsets: np.ndarray, room: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of every window: each document cut into pieces of at most `room` tokens."""
    lengths = np.diff(offsets)
    per_doc = -(-lengths // room)
    doc = np.repeat(np.arange(len(lengths)), per_doc)
    first = np.cumsum(per_doc) - per_doc
    j = np.arange(len(doc)) - np.repeat(first, per_doc)
    start = offsets[doc] + j * room
    length = np.minimum(room, offsets[doc + 1] - start)
    return start, length


def mixture_table(spec: str, tokenizer, seq_len: int, n_tokens: int, seed: int, bos: int | None) -> torch.Tensor:
    """[window, seq_len] int32 windows (BOS first, -1 padding) holding at least `n_tokens` text
    tokens of the split `spec` names, drawn in a seeded order."""
    split = "heldout" if spec.endswith("heldout") else "train"
    tokens, offsets = read_store(find_store(tokenizer), split)
    room = seq_len - (bos is not None)
    start, length = cut_windows(offsets, room)
    order = np.random.default_rng(seed).permutation(len(start))
    total = np.cumsum(length[order])
    if len(total) == 0 or total[-1] < n_tokens:
        have = int(total[-1]) if len(total) else 0
        raise WorkbenchError(f"the mixture's {split} split holds {have:,} tokens but {n_tokens:,} were asked for; "
                             "ask for fewer tokens")  # fmt: skip
    pick = order[: int(np.searchsorted(total, n_tokens)) + 1]
    s, n = start[pick], length[pick]
    cols = np.arange(room)
    idx = s[:, None] + cols[None, :]
    ok = cols[None, :] < n[:, None]
    body = np.where(ok, tokens[np.minimum(idx, len(tokens) - 1)].astype(np.int64), -1)
    if bos is not None:
        body = np.concatenate([np.full((len(pick), 1), bos, dtype=np.int64), body], axis=1)
    return torch.from_numpy(body.astype(np.int32))
