"""Building a memory index: stream a corpus through the model, keep every neuron's top-k trigger
prefixes on the device, project the values, measure agreement, write the index.

Both signs: a gated MLP's neurons are indexed as two memories each ("+" and "-", keys.py), a
non-gated MLP's as one ("+"); the manifest's "signs" says which.

Resumable: the corpus' windows are cut in a fixed order and grouped into shards of
`shard_tokens // seq_len` windows. After each shard, work/ gets that shard's token windows and
the running top-k state, then the manifest records the shard as done (each file replaced
atomically, the manifest last). A rerun with the same settings reloads the state, skips the done
shards' windows and carries on: no shard is lost (an unrecorded shard is redone) and none is
counted twice (the state always matches the manifest's shard count).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from interp import hooks
from interp.data.corpus import open_corpus, windows
from interp.errors import WorkbenchError
from interp.io import check_dir_target, write_json, write_tensors, writer_lock
from interp.memories.agreement import layer_agreement
from interp.memories.collector import KeyCollector
from interp.memories.index import FORMAT, MemoryIndex, load_tensors, open_index, read_manifest
from interp.memories.keys import coefficient_hook, signs_for
from interp.memories.values import project_values
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class IndexSettings:
    corpus: str = "kjv"  # corpus spec (interp.data.corpus.open_corpus)
    layers: list[int] | None = None  # layers to index; None = all
    n_tokens: int = 100_000  # text tokens (prefixes) to index
    top_k: int = 25  # trigger examples kept per neuron
    seq_len: int = 64  # window length in tokens (BOS included)
    seed: int = 0  # corpus document order
    shard_tokens: int = 65_536  # tokens per resumable shard (a checkpoint of ~14 MB for SmolLM2, 30 layers)
    top_n: int = 20  # value tokens kept per memory
    n_permutations: int = 1000  # permutations of the agreement test, per layer (p-value resolution 1/(n+1))

    def check_sizes(self) -> IndexSettings:
        """The model-free checks (every count positive, no more trigger examples than tokens),
        so a front end can run them before loading the model."""
        for name in ("n_tokens", "top_k", "seq_len", "shard_tokens", "top_n", "n_permutations"):
            if getattr(self, name) < 1:
                raise WorkbenchError(f"{name} must be positive, got {getattr(self, name)}")
        if self.top_k > self.n_tokens:
            raise WorkbenchError(
                f"top_k {self.top_k} exceeds the {self.n_tokens} tokens to index: a memory cannot have more trigger "
                "examples than there are tokens; use a smaller top_k (25 is the usual)"
            )
        return self

    def resolved(self, model: Model) -> IndexSettings:
        """These settings with the corpus spec in canonical form and the layers filled in (all
        of the model's when None), checked against the model."""
        layers = sorted(set(range(model.info.n_layers) if self.layers is None else self.layers))
        s = replace(self, corpus=open_corpus(self.corpus).name, layers=layers)
        _check(model, s)
        return s


ENTRY_BYTES = 4 + 8  # one top-k slot: a float32 coefficient and an int64 position


def state_bytes(n_layers: int, d_mlp: int, top_k: int, n_signs: int) -> int:
    """Bytes of the running top-k state: layers x signs x d_mlp x k slots of (value + ref)."""
    return n_layers * n_signs * d_mlp * top_k * ENTRY_BYTES


def check_state_fits(model: Model, s: IndexSettings, n_signs: int) -> None:
    """Refuse, before any work, a top-k state that cannot fit: the state and the merge's new copy
    of it (2x) on the model's device, and on a GPU also a host copy for each checkpoint."""
    from interp.models.device import available_bytes

    state = state_bytes(len(s.layers), model.info.d_mlp, s.top_k, n_signs)
    places = [(model.device, 2 * state)]
    if model.device.type != "cpu":
        places.append((torch.device("cpu"), state))
    for device, need in places:
        have = available_bytes(device)
        if have is None or need <= have:
            continue
        per_k = state // s.top_k
        fits = max(0, have // 2 // per_k if device == model.device else have // per_k)
        copies = "the state and the merge's new copy" if need > state else "a checkpoint's copy of the state"
        raise WorkbenchError(
            f"top_k {s.top_k} needs {_size(need)} on {device} ({copies}: {len(s.layers)} layers x "
            f"{model.info.d_mlp} neurons x {n_signs} sign(s) x top_k slots of {ENTRY_BYTES} bytes) but {device} has "
            f"{_size(have)} free; use top_k of at most {fits} or index fewer layers at a time"
        )


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def window_table(chunk: list, seq_len: int) -> Tensor:
    """Windows as one [window, seq_len] int32 table, -1 = padding."""
    table = torch.full((len(chunk), seq_len), -1, dtype=torch.int32)
    for i, w in enumerate(chunk):
        table[i, : len(w.tokens)] = torch.tensor(w.tokens, dtype=torch.int32)
    return table


@torch.no_grad()
def stream_keys(
    model: Model,
    collector: KeyCollector,
    table: Int[Tensor, "window seq"],
    first_window: int,
    batch_size: int,
    has_bos: bool,
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Run the windows of `table` (global numbers from `first_window`) through the model in
    batches, folding every indexed layer's coefficients into `collector`. The forward pass stops
    right after the last indexed layer (later blocks and the unembedding are never computed)."""
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    seq = table.shape[1]
    with model.hooks(fwd_hooks=collector.hooks() + [hooks.stop_hook(coefficient_hook(max(collector.layers)))]):
        for lo in range(0, len(table), batch_size):
            batch = table[lo : lo + batch_size]
            valid = batch >= 0
            if has_bos:
                valid[:, 0] = False
            refs = torch.arange(batch.numel()) + (first_window + lo) * seq
            collector.set_batch(refs, valid.flatten())
            hooks.stopped(lambda b=batch: model.bridge(b.long().masked_fill(b < 0, pad).to(model.device)))
            collector.flush()
            if after_batch is not None:
                after_batch()


def _check(model: Model, s: IndexSettings) -> None:
    info = model.info
    if info.attn_only or not info.d_mlp:
        raise WorkbenchError(f"{info.name} is attention-only: it has no FFN memories to index")
    bad = [layer for layer in s.layers if not 0 <= layer < info.n_layers]
    if bad or not s.layers:
        raise WorkbenchError(f"layers {bad or s.layers} out of range: {info.name} has layers 0..{info.n_layers - 1}")
    s.check_sizes()
    if s.seq_len > info.n_ctx:
        raise WorkbenchError(f"seq_len {s.seq_len} exceeds {info.name}'s context of {info.n_ctx}; use a smaller one")
    if s.top_n > info.d_vocab:
        raise WorkbenchError(f"top_n {s.top_n} exceeds the vocabulary ({info.d_vocab})")


def _start(out: Path, manifest_new: dict) -> dict:
    """The manifest to continue from: a fresh one, or the one of a matching unfinished build."""
    if not out.exists() or not any(out.iterdir()):
        return manifest_new
    if not (out / "manifest.json").is_file():
        raise WorkbenchError(f"{str(out)!r} is not empty and holds no memory index; choose an empty output folder")
    old = read_manifest(out)
    if old.get("settings") != manifest_new["settings"] or old.get("model_info") != manifest_new["model_info"]:
        raise WorkbenchError(
            f"{str(out)!r} holds an index built with other settings or another model; "
            "choose a new output folder or delete this one"
        )
    return old


@torch.no_grad()
def build_index(
    model: Model,
    settings: IndexSettings | None,
    out: str | Path,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> MemoryIndex:
    """Index the FFN memories of `settings.layers` (default all) over `settings.n_tokens` corpus
    tokens into the folder `out`; resumes an interrupted build with the same settings. Returns
    the open index. `progress(done, total, message)` is called after every batch ("indexing
    keys", tokens) and every layer ("projecting values of layer L"). One build at a time writes
    `out` (interp.io.writer_lock): a second one, even with other settings, is refused at once."""
    s = (settings or IndexSettings()).resolved(model)
    if batch_size < 1:
        raise WorkbenchError(f"batch_size must be positive, got {batch_size}")
    out = Path(out).expanduser()
    with writer_lock(out, "index folder"):  # a second build into `out` is refused, not mixed with this one
        return _build(model, s, out, batch_size, progress)


def _build(model: Model, s: IndexSettings, out: Path, batch_size: int, progress: Progress | None) -> MemoryIndex:
    if not ((out / "manifest.json").is_file() and read_manifest(out).get("status") == "complete"):
        check_dir_target(out, "index folder")  # a file, a path under one, a read-only place: refused before the work
    bos = model.bos_token_id
    signs = signs_for(bool(model.info.gated_mlp))
    info = {k: v for k, v in model.info.to_dict().items()}
    manifest = _start(out, {
        "format": FORMAT, "status": "building", "settings": asdict(s), "model_info": info, "signs": list(signs),
        "has_bos": bos is not None, "shards_done": 0, "n_windows": 0, "n_positions": 0,
    })  # fmt: skip
    if manifest["status"] == "complete":
        return open_index(out)
    check_state_fits(model, s, len(signs))
    work = out / "work"
    collector = KeyCollector(s.layers, model.info.d_mlp, s.top_k, device=model.device, signs=signs, dtype=model.dtype)
    done = int(manifest["shards_done"])
    if done:
        collector.load_state_dict(load_tensors(work / f"state-{done - 1:05d}.safetensors"))
        if collector.n_positions != manifest["n_positions"]:
            raise WorkbenchError(f"the unfinished index in {str(out)!r} is inconsistent; delete it and rebuild")
    report = progress or (lambda done, total, message: None)
    report(collector.n_positions, s.n_tokens, "indexing keys")

    fresh = not out.exists()
    try:
        _stream_shards(model, collector, manifest, s, out, batch_size, done, report)
        if collector.n_positions == 0:
            raise WorkbenchError(f"corpus {s.corpus!r} yielded no tokens; choose another corpus")
        _finish(model, out, manifest, collector, s, report)
    except BaseException:
        if manifest["shards_done"] == 0:  # nothing worth resuming: leave nothing behind
            shutil.rmtree(out if fresh else work, ignore_errors=True)
        raise
    return open_index(out)


def _stream_shards(model: Model, collector: KeyCollector, manifest: dict, s: IndexSettings, out: Path,
                   batch_size: int, done: int, report: Progress) -> None:
    """Index the shards not yet done, recording each in work/ and the manifest (module doc)."""
    work, bos = out / "work", model.bos_token_id
    per_shard = max(1, s.shard_tokens // s.seq_len)
    stream = windows(open_corpus(s.corpus), model.tokenizer, s.seq_len, s.seed, s.n_tokens, bos)
    shard = 0
    while True:
        chunk = list(islice(stream, per_shard))
        if not chunk:
            break
        if shard < done:
            shard += 1
            continue
        first_window = shard * per_shard
        table = window_table(chunk, s.seq_len)
        stream_keys(model, collector, table, first_window, batch_size, bos is not None,
                    lambda: report(collector.n_positions, s.n_tokens, "indexing keys"))  # fmt: skip
        write_tensors(work / f"tokens-{shard:05d}.safetensors", {
            "windows": table,
            "doc_id": torch.tensor([w.doc_id for w in chunk], dtype=torch.long),
            "doc_start": torch.tensor([w.start for w in chunk], dtype=torch.long),
            "next_token": torch.tensor([w.next_token for w in chunk], dtype=torch.int32),
        })  # fmt: skip
        write_tensors(work / f"state-{shard:05d}.safetensors", collector.state_dict())
        manifest.update(shards_done=shard + 1, n_windows=first_window + len(chunk), n_positions=collector.n_positions)
        write_json(out / "manifest.json", manifest)
        (work / f"state-{shard - 1:05d}.safetensors").unlink(missing_ok=True)
        shard += 1


def _finish(model: Model, out: Path, manifest: dict, collector: KeyCollector, s: IndexSettings, report: Progress) -> None:
    work = out / "work"
    shards = [load_tensors(work / f"tokens-{i:05d}.safetensors") for i in range(manifest["shards_done"])]
    tokens = {k: torch.cat([sh[k] for sh in shards]) for k in shards[0]}
    keys, values, rows = {}, {}, []
    signs = collector.signs
    groups = [("all", list(range(len(signs))))] + ([(sign, [i]) for i, sign in enumerate(signs)] if len(signs) > 1 else [])
    for n, layer in enumerate(s.layers):
        report(n, len(s.layers), f"projecting values of layer {layer}")
        st = collector.state[layer]
        keys[f"{layer}.coef"] = st.coef.transpose(-1, -2).float().cpu()  # [sign, neuron, k]
        keys[f"{layer}.ref"] = st.ref.transpose(-1, -2).cpu()
        keys[f"{layer}.active"] = st.active.cpu()
        ids, probs = project_values(model, layer, s.top_n, signs=signs)
        values[f"{layer}.ids"], values[f"{layer}.probs"] = ids, probs
        for group, axis in groups:  # the memories of the group, one row each: signs concatenated
            row = layer_agreement(tokens["windows"], tokens["next_token"], keys[f"{layer}.ref"][axis].flatten(0, 1),
                                  ids[axis].flatten(0, 1), manifest["has_bos"], s.n_permutations, seed=layer)
            active = float(st.active[axis].sum()) / max(collector.n_positions * st.active[axis].numel(), 1)
            rows.append({"layer": layer, "group": group, "active_fraction": active, **row})
    report(len(s.layers), len(s.layers), "writing the index")
    vocab = [_decode(model.tokenizer, i) for i in range(model.info.d_vocab)]
    write_tensors(out / "keys.safetensors", keys)
    write_tensors(out / "values.safetensors", values)
    write_tensors(out / "tokens.safetensors", tokens)
    write_json(out / "vocab.json", vocab)
    write_json(out / "agreement.json", rows)
    manifest["status"] = "complete"
    write_json(out / "manifest.json", manifest)
    shutil.rmtree(work, ignore_errors=True)


def _decode(tokenizer, i: int) -> str:
    try:
        return tokenizer.decode([i])
    except (IndexError, KeyError, OverflowError, TypeError, ValueError):  # padded vocab rows
        return ""
