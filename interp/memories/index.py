"""The on-disk memory index and its reader.

A finished index folder holds (every file written atomically by interp.io):
  manifest.json       format, status "complete", settings, model info, counts, "signs" (the
                      memory signs indexed, in the order of the sign axis: ["+", "-"] for a
                      gated MLP, ["+"] otherwise; see keys.py)
  keys.safetensors    "{l}.coef" [sign, neuron, k] float32 trigger coefficients (the memory's own,
                      sign · c > 0, largest first; -inf = empty slot),
                      "{l}.ref" [sign, neuron, k] int64 global positions (window * seq_len + pos; -1 empty),
                      "{l}.active" [sign, neuron] int64 positions where that memory's coefficient > 0
  values.safetensors  "{l}.ids" [sign, neuron, top_n] int32 and "{l}.probs" [sign, neuron, top_n]
                      float32 (the "-" memory's value is -W_out[i])
  tokens.safetensors  "windows" [window, seq_len] int32 (-1 = padding), "doc_id", "doc_start",
                      "next_token" [window] (the token after the window, -1 = none)
  vocab.json          every token id's string, so the index reads without the model
  agreement.json      one row per (layer, group) of interp.memories.agreement's numbers, group
                      "all" (every memory of the layer) and, with two signs, "+" and "-"
While building, manifest status is "building" and work/ holds the finished shards (see build.py).
`open_index` reads only the manifest, the token windows and the small JSON files; keys and
values of a layer are read on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from interp.errors import WorkbenchError
from interp.memories.agreement import next_token
from interp.memories.keys import check_sign, memory_name

FORMAT = "interp-memories/2"  # 2: both signs of every neuron (1: the "+" side only)
FILES = ("keys.safetensors", "values.safetensors", "tokens.safetensors")


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkbenchError(
            f"{what} {str(path)!r} is corrupt ({type(e).__name__}); delete the folder and rebuild it"
        ) from e


def load_tensors(path: Path, keys: list[str] | None = None) -> dict[str, Tensor]:
    """Tensors of a safetensors file (all, or `keys`), any damage as a WorkbenchError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            names = f.keys() if keys is None else keys
            return {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise WorkbenchError(
            f"memory index file {str(path)!r} is corrupt or truncated ({type(e).__name__}); "
            "delete the index folder and rebuild it with `interp memories index`"
        ) from e


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """The shape of every tensor of a safetensors file, from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WorkbenchError(
            f"memory index file {str(path)!r} is corrupt or truncated ({type(e).__name__}); "
            "delete the index folder and rebuild it with `interp memories index`"
        ) from e


def damaged(folder: Path, problem: str) -> WorkbenchError:
    return WorkbenchError(f"memory index {str(folder)!r} is damaged: {problem}, which disagrees with its manifest; "
                          "delete the folder and rebuild it with `interp memories index`")  # fmt: skip


def _out_of(t: Tensor, low: int, high: int) -> bool:
    """Whether some value of `t` lies outside [low, high)."""
    return bool(t.numel()) and (int(t.min()) < low or int(t.max()) >= high)


def read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise WorkbenchError(f"no memory index at {str(folder)!r}; build one there first (`interp memories index`)")
    try:
        manifest = read_json(path, "memory index manifest")
    except FileNotFoundError:
        raise WorkbenchError(
            f"{str(folder)!r} is not a memory index (no manifest.json); build one there first (`interp memories index`)"
        ) from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if isinstance(found, str) and found.startswith("interp-memories/") and found != FORMAT:
        raise WorkbenchError(
            f"{str(folder)!r} holds a memory index of format {found}, which this version cannot read (it now "
            f"indexes both signs of every neuron, {FORMAT}); rebuild it into a new folder with `interp memories index`"
        )
    if found != FORMAT:
        raise WorkbenchError(f"{str(path)!r} is not a {FORMAT} manifest; delete the folder and rebuild the index")
    return manifest


# -- reading ----------------------------------------------------------------------------------


@dataclass
class Trigger:
    coefficient: float  # the memory coefficient at the trigger position
    doc_id: int  # document index in the corpus' order for the index's seed
    position: int  # token offset of the trigger within its document
    before: list[str]  # context tokens before the trigger (within the window)
    token: str  # the trigger token (the prefix's last token)
    next: str | None  # the token that followed in the corpus


@dataclass
class MemoryView:
    layer: int
    neuron: int
    triggers: list[Trigger]  # top trigger examples, strongest first
    value_tokens: list[tuple[str, float]]  # the value's top tokens with probabilities
    active_fraction: float  # share of indexed tokens where this memory's coefficient was > 0
    value_token_ids: list[int] = field(default_factory=list)
    sign: str = "+"  # "+": coefficient c > 0, value W_out[i]; "-": c < 0, value -W_out[i]

    @property
    def name(self) -> str:
        return memory_name(self.layer, self.neuron, self.sign)


@dataclass
class SearchHit:
    layer: int
    neuron: int
    sign: str
    token: str  # the matching token
    prob: float  # its probability in the value's projection
    rank: int  # its rank among the value's top tokens (0 = top)


class MemoryIndex:
    """A finished index folder, opened for reading."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self.settings: dict = manifest["settings"]
        self.model_info: dict = manifest.get("model_info", {})
        self.layers: list[int] = list(self.settings["layers"])
        self.signs: tuple[str, ...] = tuple(manifest["signs"])
        self.top_k: int = int(self.settings["top_k"])
        self.n_tokens: int = int(manifest["n_positions"])
        self.has_bos: bool = bool(manifest.get("has_bos", True))
        tokens = load_tensors(folder / "tokens.safetensors")
        self.windows: Tensor = tokens["windows"]
        self.doc_id: Tensor = tokens["doc_id"]
        self.doc_start: Tensor = tokens["doc_start"]
        self.next_after: Tensor = tokens["next_token"]
        self.vocab: list[str] = read_json(folder / "vocab.json", "memory index vocabulary")
        self._agreement = read_json(folder / "agreement.json", "memory index agreement")
        self._cache: dict[tuple[str, int], dict[str, Tensor]] = {}
        self._check_contents()

    def _check_contents(self) -> None:
        """The token windows, the vocabulary and every layer's tensor shapes (headers only) agree
        with the manifest; a layer's positions and token ids are checked when it is read."""
        n, seq, V = int(self.manifest.get("n_windows", -1)), int(self.settings["seq_len"]), len(self.vocab)
        if tuple(self.windows.shape) != (n, seq):
            raise damaged(self.folder, f"its token windows are {list(self.windows.shape)}, not [{n}, {seq}]")
        if any(len(t) != n for t in (self.doc_id, self.doc_start, self.next_after)):
            raise damaged(self.folder, f"its document tables do not all have {n} windows")
        if self.model_info.get("d_vocab") not in (None, V):
            raise damaged(self.folder, f"its vocabulary has {V} tokens, not d_vocab {self.model_info['d_vocab']}")
        if _out_of(self.windows, -1, V) or _out_of(self.next_after, -1, V):
            raise damaged(self.folder, f"its token windows hold ids outside the vocabulary of {V}")
        S, d, k, top_n = len(self.signs), self.d_mlp, self.top_k, int(self.settings["top_n"])
        want = {"keys": {"coef": [S, d, k], "ref": [S, d, k], "active": [S, d]},
                "values": {"ids": [S, d, top_n], "probs": [S, d, top_n]}}  # fmt: skip
        for kind, parts in want.items():
            shapes = tensor_shapes(self.folder / f"{kind}.safetensors")
            for layer in self.layers:
                for part, shape in parts.items():
                    got = shapes.get(f"{layer}.{part}")
                    if got is None:
                        raise WorkbenchError(f"memory index file {str(self.folder / kind)!r}.safetensors lacks layer "
                                             f"{layer}; delete the folder and rebuild it")  # fmt: skip
                    if got != shape:
                        raise damaged(self.folder, f"{kind} {layer}.{part} has shape {got}, not {shape}")

    def __repr__(self) -> str:
        return (f"MemoryIndex({str(self.folder)!r}, model={self.model_info.get('name')}, layers={self.layers}, "
                f"signs={''.join(self.signs)}, tokens={self.n_tokens})")

    @property
    def d_mlp(self) -> int:
        """Units per layer: the MLP's neurons, or the dictionary's features of a feature index
        (interp.features.memories)."""
        if self.manifest.get("units") == "features":
            return int(self.manifest.get("dictionary", {}).get("d_sae") or 0)
        return int(self.model_info.get("d_mlp") or 0)

    def sign_axis(self, sign: str) -> int:
        """Position of `sign` on the index's sign axis (a clear error for a sign not indexed)."""
        check_sign(sign)
        if sign not in self.signs:
            raise WorkbenchError(
                f"this index holds only the {' and '.join(repr(s) for s in self.signs)} memories "
                f"({self.model_info.get('name', 'the model')}'s MLP is not gated); use sign '+'"
            )
        return self.signs.index(sign)

    def _check(self, layer: int, neuron: int | None = None) -> None:
        if layer not in self.layers:
            raise WorkbenchError(f"layer {layer} is not in this index; indexed layers: {self.layers}")
        if neuron is not None and not 0 <= neuron < self.d_mlp:
            raise WorkbenchError(f"neuron {neuron} is out of range: layers have neurons 0..{self.d_mlp - 1}")

    def _layer(self, kind: str, layer: int) -> dict[str, Tensor]:
        if (kind, layer) not in self._cache:
            names = ["coef", "ref", "active"] if kind == "keys" else ["ids", "probs"]
            got = load_tensors(self.folder / f"{kind}.safetensors", [f"{layer}.{n}" for n in names])
            if kind == "keys" and _out_of(got[f"{layer}.ref"], -1, self.windows.numel()):
                raise damaged(self.folder, f"layer {layer}'s trigger positions point outside its {self.windows.numel()} "
                                           "indexed positions")  # fmt: skip
            if kind == "values" and _out_of(got[f"{layer}.ids"], 0, len(self.vocab)):
                raise damaged(self.folder, f"layer {layer}'s value tokens lie outside its vocabulary of {len(self.vocab)}")
            self._cache[kind, layer] = {n: got[f"{layer}.{n}"] for n in names}
        return self._cache[kind, layer]

    def keys(self, layer: int) -> dict[str, Tensor]:
        """{"coef": [sign, neuron, k], "ref": [sign, neuron, k], "active": [sign, neuron]} of one layer."""
        self._check(layer)
        return self._layer("keys", layer)

    def values(self, layer: int) -> dict[str, Tensor]:
        """{"ids": [sign, neuron, top_n], "probs": [sign, neuron, top_n]} of one layer."""
        self._check(layer)
        return self._layer("values", layer)

    def decode(self, ids) -> list[str]:
        """The strings of token ids (ids outside the vocabulary are a damaged index: refused)."""
        if any(not 0 <= int(i) < len(self.vocab) for i in ids):
            raise damaged(self.folder, f"it names token ids outside its vocabulary of {len(self.vocab)}")
        return [self.vocab[int(i)] for i in ids]

    def show(self, layer: int, neuron: int, sign: str = "+", context: int = 12,
             n_triggers: int | None = None) -> MemoryView:
        """One memory: its trigger examples (strongest first; `n_triggers` of them, default all
        kept) and its value's top tokens."""
        self._check(layer, neuron)
        s = self.sign_axis(sign)
        if n_triggers is not None and n_triggers < 1:
            raise WorkbenchError(f"the number of trigger examples to show must be at least 1, got {n_triggers}")
        if context < 0:
            raise WorkbenchError(f"context must be 0 or more tokens, got {context}")
        keys, values = self.keys(layer), self.values(layer)
        seq = self.windows.shape[1]
        triggers = []
        for coef, ref in zip(keys["coef"][s, neuron].tolist(), keys["ref"][s, neuron].tolist()):
            if ref < 0 or len(triggers) == (n_triggers or self.top_k):
                continue
            w, p = divmod(ref, seq)
            row = self.windows[w].tolist()
            start = max(1 if self.has_bos else 0, p - context)
            nxt = int(next_token(self.windows, self.next_after, torch.tensor(ref)))
            triggers.append(
                Trigger(
                    coefficient=coef,
                    doc_id=int(self.doc_id[w]),
                    position=int(self.doc_start[w]) + p - (1 if self.has_bos else 0),
                    before=self.decode(row[start:p]),
                    token=self.decode([row[p]])[0],
                    next=self.decode([nxt])[0] if nxt >= 0 else None,
                )
            )
        ids, probs = values["ids"][s, neuron].tolist(), values["probs"][s, neuron].tolist()
        return MemoryView(
            layer=layer,
            neuron=neuron,
            triggers=triggers,
            value_tokens=list(zip(self.decode(ids), probs)),
            active_fraction=float(keys["active"][s, neuron]) / max(self.n_tokens, 1),
            value_token_ids=ids,
            sign=sign,
        )

    def agreement(self, group: str = "all") -> list[dict]:
        """One row per indexed layer: agreement vs its random baseline with intervals and
        p-values, shallowness, activity -- of all the layer's memories (`group` "all") or of one
        sign's ("+" / "-")."""
        if group != "all":
            self.sign_axis(group)
        return [dict(row) for row in self._agreement if row.get("group", "all") == group]

    def token_ids(self, token: str) -> list[int]:
        """Ids whose string is `token`, or `token` with a leading space (' ' / 'Ġ' / '▁')."""
        if not token:
            raise WorkbenchError("empty token: type the token to search for (e.g. Lord)")
        wanted = {token, " " + token.lstrip(), "Ġ" + token.lstrip(), "▁" + token.lstrip()}
        return [i for i, s in enumerate(self.vocab) if s in wanted]

    def search(self, token: str, top: int = 20) -> list[SearchHit]:
        """Memories (both signs) whose values promote `token` (it is among the value's stored
        top tokens), highest probability first."""
        if top < 1:
            raise WorkbenchError(f"the number of memories to list must be at least 1, got {top}")
        ids = self.token_ids(token)
        if not ids:
            raise WorkbenchError(f"no token {token!r} in {self.model_info.get('name', 'the model')}'s vocabulary")
        wanted = torch.tensor(ids, dtype=torch.int32)
        hits = []
        for layer in self.layers:
            v = self.values(layer)
            match = torch.isin(v["ids"], wanted)
            for s, n, r in match.nonzero().tolist():
                token_id = int(v["ids"][s, n, r])
                hits.append(SearchHit(layer, n, self.signs[s], self.vocab[token_id], float(v["probs"][s, n, r]), r))
        hits.sort(key=lambda h: -h.prob)
        return hits[:top]


def open_index(folder: str | Path) -> MemoryIndex:
    """Open a finished index; a missing, unfinished or corrupt one raises a clear WorkbenchError."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    if manifest.get("status") != "complete":
        raise WorkbenchError(
            f"the memory index in {str(folder)!r} is unfinished ({manifest.get('n_positions', 0)} of "
            f"{manifest.get('settings', {}).get('n_tokens', '?')} tokens); rerun `interp memories index` "
            "with the same settings to resume it"
        )
    for name in FILES + ("vocab.json", "agreement.json"):
        if not (folder / name).is_file():
            raise WorkbenchError(f"memory index {str(folder)!r} lacks {name}; delete the folder and rebuild it")
    try:
        return MemoryIndex(folder, manifest)
    except KeyError as e:
        raise WorkbenchError(f"memory index {str(folder)!r} is corrupt (missing {e}); delete it and rebuild") from e
    except (TypeError, ValueError) as e:  # a manifest field of the wrong kind
        raise WorkbenchError(f"memory index {str(folder)!r} is corrupt ({type(e).__name__}: {e}); delete it and rebuild") from e
