"""Features read as key-value memories, beside the FFN neurons (Geva et al. 2021).

A transcoder's feature f of layer l is a memory: its key is the encoder column W_enc[:, f] (what
makes it fire), its value the decoder row W_dec[f] (what it writes into the residual stream). Its
activation is always >= 0, so it is one memory, sign "+".

`build_feature_index` streams a corpus through the model, keeps every feature's top-k activating
positions with interp.memories' streaming top-k (KeyCollector, the same machinery and on-disk
format as the neuron index, so MemoryIndex.show / search / agreement read it), projects every
decoder row to the vocabulary through the final norm, and measures Geva's agreement and the
shallowness (monosemanticity proxy) per layer with interp.memories.agreement. `open_feature_index`
opens it; its "neurons" are the features.

`compare` sets a feature index beside a neuron index built on the same corpus, seed and tokens:
per layer the agreement (with its interval, random baseline and permutation p-value) and the
proxy "same_last" (the share of a unit's top-k contexts that end in its most common token, with a
95% interval and the random-position baseline), for features and for neurons.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.data.corpus import open_corpus, windows
from interp.errors import WorkbenchError
from interp.features.activations import valid_positions
from interp.features.dictionary import Dictionary
from interp.features.formats import check_for_model
from interp.io import write_dir
from interp.lens import direction_logits
from interp.memories.agreement import layer_agreement
from interp.memories.build import IndexSettings, window_table
from interp.memories.collector import KeyCollector
from interp.memories.index import FORMAT, MemoryIndex, open_index
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


class FeatureIndex(MemoryIndex):
    """A memory index whose units are a dictionary's features (d_sae of them per layer: its `d_mlp`)."""


def open_feature_index(folder: str | Path) -> FeatureIndex:
    index = open_index(folder)
    if index.manifest.get("units") != "features":
        raise WorkbenchError(f"{str(folder)!r} is a neuron memory index, not a feature index; "
                             "build one with `interp features index`")  # fmt: skip
    return FeatureIndex(index.folder, index.manifest)


@torch.no_grad()
def value_tokens(model: Model, d: Dictionary, layer: int, top_n: int = 20, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Every feature's decoder row through the final norm and unembedding: the `top_n` promoted
    tokens' ids and probabilities, [1, feature, top] each (one sign, as the index stores them)."""
    rows = d.W_dec[d.index(layer)].detach()
    ids, probs = [], []
    for lo in range(0, rows.shape[0], chunk):
        logits = direction_logits(model, rows[lo : lo + chunk])
        top = logits.topk(top_n, dim=-1)
        probs.append((top.values - logits.logsumexp(-1, keepdim=True)).exp().cpu())
        ids.append(top.indices.to(torch.int32).cpu())
    return torch.cat(ids)[None], torch.cat(probs)[None]


def _feature_hooks(d: Dictionary, collector: KeyCollector) -> list:
    def make(layer: int):
        one = d.layer_view(layer)

        def hook(act: Tensor, hook=None) -> Tensor:
            flat = act.reshape(1, -1, act.shape[-1]).to(one.W_enc.dtype)
            acts = one.activate(one.pre_acts(flat))[0]
            collector.observe(layer, acts.reshape(*act.shape[:-1], -1))
            return act

        return hook

    return [(d.site.input_hook(layer), make(layer)) for layer in d.layers]


@torch.no_grad()
def build_feature_index(model: Model, d: Dictionary, settings: IndexSettings, out: str | Path, batch_size: int = 16,
                        progress: Progress | None = None) -> FeatureIndex:  # fmt: skip
    """Index the features of every layer of `d` over `settings.n_tokens` tokens of
    `settings.corpus` into the folder `out` (module doc); written atomically."""
    check_for_model(d, model)
    s = settings.resolved(model)
    bad = [la for la in s.layers if la not in d.layers]
    if bad:
        raise WorkbenchError(f"layers {bad} have no dictionary; its layers: {d.layers}")
    report = progress or (lambda done, total, message: None)
    bos = model.bos_token_id
    chunks = list(windows(open_corpus(s.corpus), model.tokenizer, s.seq_len, s.seed, s.n_tokens, bos))
    table = window_table(chunks, s.seq_len)
    dev_dtype = d.W_enc.dtype
    collector = KeyCollector(s.layers, d.cfg.d_sae, s.top_k, device=model.device, signs=("+",), dtype=dev_dtype)
    sub = d if s.layers == d.layers else _subset(d, s.layers)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    fwd = _feature_hooks(sub, collector) + [hooks.stop_hook(sub.site.input_hook(max(s.layers)))]
    with model.hooks(fwd_hooks=fwd):
        for lo in range(0, len(table), batch_size):
            batch = table[lo : lo + batch_size]
            valid = valid_positions(batch, bos is not None)
            collector.set_batch(torch.arange(batch.numel()) + lo * s.seq_len, valid.flatten())
            hooks.stopped(lambda b=batch: model.bridge(b.long().masked_fill(b < 0, pad).to(model.device)))
            collector.flush()
            report(collector.n_positions, s.n_tokens, "indexing features")
    tokens = {"windows": table, "doc_id": torch.tensor([w.doc_id for w in chunks], dtype=torch.long),
              "doc_start": torch.tensor([w.start for w in chunks], dtype=torch.long),
              "next_token": torch.tensor([w.next_token for w in chunks], dtype=torch.int32)}  # fmt: skip
    manifest = {"format": FORMAT, "status": "complete", "units": "features", "settings": asdict(s),
                "model_info": model.info.to_dict(), "signs": ["+"], "has_bos": bos is not None, "shards_done": 1,
                "n_windows": len(table), "n_positions": collector.n_positions,
                "dictionary": {**d.cfg.to_dict(), "layers": s.layers}}  # fmt: skip
    _write(model, sub, collector, tokens, manifest, s, Path(out).expanduser(), report)
    return open_feature_index(out)


def _subset(d: Dictionary, layers: list[int]) -> Dictionary:
    idx = [d.index(la) for la in layers]
    lo, hi = min(idx), max(idx) + 1
    part = d.rows(lo, hi, detach=True)
    if part.layers != layers:
        raise WorkbenchError(f"index a contiguous run of the dictionary's layers, got {layers}")
    return part


def _write(model: Model, d: Dictionary, collector: KeyCollector, tokens: dict, manifest: dict, s: IndexSettings,
           out: Path, report: Progress) -> None:  # fmt: skip
    keys, values, rows = {}, {}, []
    for n, layer in enumerate(s.layers):
        report(n, len(s.layers), f"projecting values of layer {layer}")
        st = collector.state[layer]
        keys[f"{layer}.coef"] = st.coef.transpose(-1, -2).float().cpu()
        keys[f"{layer}.ref"] = st.ref.transpose(-1, -2).cpu()
        keys[f"{layer}.active"] = st.active.cpu()
        ids, probs = value_tokens(model, d, layer, s.top_n)
        values[f"{layer}.ids"], values[f"{layer}.probs"] = ids, probs
        row = layer_agreement(tokens["windows"], tokens["next_token"], keys[f"{layer}.ref"][0], ids[0],
                              manifest["has_bos"], s.n_permutations, seed=layer)  # fmt: skip
        active = float(st.active.sum()) / max(collector.n_positions * st.active.numel(), 1)
        rows.append({"layer": layer, "group": "all", "active_fraction": active, **row})
    vocab = [_decode(model.tokenizer, i) for i in range(model.info.d_vocab)]

    def fill(tmp: Path) -> None:
        import json

        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in keys.items()}, str(tmp / "keys.safetensors"))
        save_file({k: v.contiguous() for k, v in values.items()}, str(tmp / "values.safetensors"))
        save_file({k: v.contiguous() for k, v in tokens.items()}, str(tmp / "tokens.safetensors"))
        (tmp / "vocab.json").write_text(json.dumps(vocab))
        (tmp / "agreement.json").write_text(json.dumps(rows, indent=1))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))

    write_dir(out, fill)


def _decode(tokenizer, i: int) -> str:
    try:
        return tokenizer.decode([i])
    except (IndexError, KeyError, OverflowError, TypeError, ValueError):
        return ""


COMPARED = ("agreement", "agreement_lo", "agreement_hi", "agreement_baseline", "agreement_p", "agreement_any",
            "agreement_any_baseline", "agreement_any_p", "same_last", "same_last_lo", "same_last_hi",
            "same_last_baseline", "same_bigram", "same_bigram_lo", "same_bigram_hi", "n_memories", "active_fraction")  # fmt: skip


def compare(features: MemoryIndex, neurons: MemoryIndex, neuron_group: str = "all") -> list[dict]:
    """Per layer both index, the agreement and proxy numbers of features and of neurons (module doc)."""
    fs, ns = features.settings, neurons.settings
    same = ("corpus", "n_tokens", "seq_len", "seed", "top_k")
    if any(fs[k] != ns[k] for k in same):
        raise WorkbenchError("the feature and neuron indexes differ in corpus, tokens, window, seed or top_k; "
                             "build both with the same settings")  # fmt: skip
    by_layer = {r["layer"]: r for r in neurons.agreement(neuron_group)}
    out = []
    for row in features.agreement():
        n = by_layer.get(row["layer"])
        if n is None:
            continue
        out.append({"layer": row["layer"], **{f"feature_{k}": row.get(k) for k in COMPARED},
                    **{f"neuron_{k}": n.get(k) for k in COMPARED}})  # fmt: skip
    return out


def decoder_similar(d: Dictionary, layer: int, feature: int, top: int = 10) -> list[tuple[int, float]]:
    """The features of `layer` whose decoder rows point most nearly the same way (cosine)."""
    rows: Float[Tensor, "d_sae d_out"] = d.W_dec[d.index(layer)].detach().float()
    if not 0 <= feature < rows.shape[0]:
        raise WorkbenchError(f"feature {feature} is out of range: layers have features 0..{rows.shape[0] - 1}")
    unit = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    cos = unit @ unit[feature]
    cos[feature] = -2
    best = cos.topk(min(top, rows.shape[0] - 1))
    return list(zip(best.indices.tolist(), best.values.tolist()))
