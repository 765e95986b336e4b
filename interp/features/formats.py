"""Dictionaries on disk: ours, SAELens's (read and write) and sparsify's (read).

ours (FORMAT)     a folder: dictionary.json {"format", "config": DictionaryConfig, "training": {...},
                  "metrics": {...}} and weights.safetensors (the stacked tensors of Dictionary.tensors())
SAELens 6         a folder per dictionary: cfg.json {"architecture", "d_in", "d_sae", "d_out", "k",
                  "apply_b_dec_to_input", "metadata": {"model_name", "hook_name", "hook_name_out", ...}}
                  and sae_weights.safetensors (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_out], b_dec,
                  W_skip, threshold); several layers = one subfolder each, named by hook. SAELens 6.54
                  has no TopK transcoder: ours are written as architecture "topk_transcoder" /
                  "topk_skip_transcoder" (SAELens refuses them rather than loading them with a ReLU).
sparsify          a folder per hookpoint (layers.N, layers.N.mlp): cfg.json (SparseCoderConfig + d_in)
                  and sae.safetensors (encoder.weight [d_sae, d_in], encoder.bias, W_dec, b_dec, W_skip)

`load` tells the three apart, and with a `model` refuses (one line) a dictionary made for another
model or site: widths, layers, and for ours the model's name and shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open

from interp.errors import WorkbenchError
from interp.features.dictionary import Dictionary, DictionaryConfig
from interp.features.sites import get_site, site_from_sparsify, site_from_tl_hook, sparsify_hookpoint, tl_hook_names
from interp.io import write_dir

if TYPE_CHECKING:
    from interp.models import Model

FORMAT = "interp-features/1"
OURS, SAELENS, SPARSIFY = "dictionary.json", "sae_weights.safetensors", "sae.safetensors"


def model_fingerprint(model: Model) -> dict:
    i = model.info
    return {"name": i.name, "d_model": i.d_model, "n_layers": i.n_layers, "d_vocab": i.d_vocab, "d_mlp": i.d_mlp}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WorkbenchError(f"dictionary file {str(path)!r} is corrupt or truncated ({type(e).__name__}); "
                             "re-save or re-download it") from e  # fmt: skip


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkbenchError(f"{str(path)!r} is unreadable ({type(e).__name__}); re-save the dictionary") from e
    if not isinstance(data, dict):
        raise WorkbenchError(f"{str(path)!r} is not a dictionary config (not a JSON object)")
    return data


# -- ours -----------------------------------------------------------------------------------------


def save(d: Dictionary, out: str | Path, training: dict | None = None, metrics: dict | None = None) -> Path:
    """Write `d` in our format into the folder `out`, atomically (replacing it)."""
    meta = {"format": FORMAT, "config": d.cfg.to_dict(), "training": training or {}, "metrics": metrics or {}}

    def fill(tmp: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.cpu().contiguous() for k, v in d.tensors().items()}, str(tmp / "weights.safetensors"))
        (tmp / OURS).write_text(json.dumps(meta, indent=1))

    return write_dir(Path(out).expanduser(), fill)


def read_meta(folder: str | Path) -> dict:
    """Our format's dictionary.json (format checked)."""
    meta = _read_json(Path(folder) / OURS)
    if meta.get("format") != FORMAT:
        raise WorkbenchError(f"{str(folder)!r} holds format {meta.get('format')!r}, not {FORMAT}; re-save it")
    return meta


def _load_ours(folder: Path, device, dtype) -> Dictionary:
    meta = read_meta(folder)
    try:
        cfg = DictionaryConfig(**meta["config"])
    except TypeError as e:
        raise WorkbenchError(f"{str(folder / OURS)!r} has a bad config ({e}); re-save the dictionary") from e
    d = Dictionary(cfg, device=device, dtype=dtype)
    return d.load_tensors(_read_tensors(folder / "weights.safetensors"))


# -- SAELens ----------------------------------------------------------------------------------------

_SAELENS_ARCH = {  # architecture -> (activation, transcoder, skip)
    "topk": ("topk", False, False), "standard": ("relu", False, False), "jumprelu": ("jumprelu", False, False),
    "transcoder": ("relu", True, False), "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False), "jumprelu_skip_transcoder": ("jumprelu", True, True),
    "topk_transcoder": ("topk", True, False), "topk_skip_transcoder": ("topk", True, True),
}  # fmt: skip


def save_saelens(d: Dictionary, out: str | Path) -> Path:
    """One SAELens folder per layer (named by its input hook) under `out`, atomically."""
    cfg, site = d.cfg, get_site(d.cfg.site)
    arch = {v: k for k, v in _SAELENS_ARCH.items()}[(cfg.activation, site.is_transcoder, cfg.skip)]

    def fill(tmp: Path) -> None:
        from safetensors.torch import save_file

        for i, layer in enumerate(cfg.layers):
            hook_in, hook_out = tl_hook_names(site, layer)
            sub = tmp / hook_in
            sub.mkdir()
            body = {"architecture": arch, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": str(d.W_enc.dtype)[6:],
                    "device": "cpu", "apply_b_dec_to_input": cfg.apply_b_dec_to_input, "normalize_activations": "none",
                    "reshape_activations": "none",
                    "metadata": {"model_name": cfg.model.get("name"), "hook_name": hook_in, "hook_name_out": hook_out,
                                 "hook_layer": layer, "hook_layer_out": layer, "prepend_bos": True,
                                 "interp_model": cfg.model}}  # fmt: skip
            if site.is_transcoder:
                body["d_out"] = cfg.d_out
            if cfg.activation == "topk":
                body["k"] = cfg.k
            (sub / "cfg.json").write_text(json.dumps(body, indent=1))
            save_file({k: v[i].cpu().contiguous() for k, v in d.tensors().items()}, str(sub / SAELENS))

    return write_dir(Path(out).expanduser(), fill)


def _saelens_one(folder: Path) -> tuple[DictionaryConfig, dict[str, torch.Tensor]]:
    body = _read_json(folder / "cfg.json")
    arch = body.get("architecture", "standard")
    if arch not in _SAELENS_ARCH:
        raise WorkbenchError(f"{str(folder)!r} is a SAELens {arch!r} dictionary; the workbench reads "
                             f"{', '.join(_SAELENS_ARCH)}")  # fmt: skip
    activation, transcoder, skip = _SAELENS_ARCH[arch]
    meta = body.get("metadata") or {}
    hook = meta.get("hook_name") or body.get("hook_name")
    site, layer = site_from_tl_hook(hook, transcoder)
    if body.get("normalize_activations", "none") not in ("none", None):
        raise WorkbenchError(f"{str(folder)!r} normalizes its inputs ({body['normalize_activations']}); "
                             "fold the normalization into the weights before loading it")  # fmt: skip
    model = meta.get("interp_model") or {"name": meta.get("model_name") or body.get("model_name")}
    cfg = DictionaryConfig(site=site, layers=[layer], d_in=int(body["d_in"]), d_out=int(body.get("d_out", body["d_in"])),
                           d_sae=int(body["d_sae"]), k=int(body["k"]) if activation == "topk" else None,
                           activation=activation, skip=skip, apply_b_dec_to_input=bool(body.get("apply_b_dec_to_input")),
                           model=model, source="saelens")  # fmt: skip
    return cfg, _read_tensors(folder / SAELENS)


# -- sparsify ----------------------------------------------------------------------------------------


def _sparsify_one(folder: Path) -> tuple[DictionaryConfig, dict[str, torch.Tensor]]:
    body = _read_json(folder / "cfg.json")
    if body.get("activation", "topk") != "topk":
        raise WorkbenchError(f"{str(folder)!r} uses sparsify's {body.get('activation')!r} activation; only topk is read")
    site, layer = site_from_sparsify(folder.name, bool(body.get("transcode")))
    raw = _read_tensors(folder / SPARSIFY)
    if "W_dec" not in raw:
        raise WorkbenchError(f"{str(folder)!r} has no decoder (saved encoder-only); it cannot reconstruct")
    d_in = int(body["d_in"])
    d_sae = int(raw["encoder.weight"].shape[0])
    tensors = {"W_enc": raw["encoder.weight"].T, "b_enc": raw["encoder.bias"], "W_dec": raw["W_dec"], "b_dec": raw["b_dec"]}
    if raw.get("W_skip") is not None:
        tensors["W_skip"] = raw["W_skip"]
    cfg = DictionaryConfig(site=site, layers=[layer], d_in=d_in, d_out=int(raw["W_dec"].shape[1]), d_sae=d_sae,
                           k=int(body.get("k", 32)), skip="W_skip" in tensors,
                           apply_b_dec_to_input=not body.get("transcode"), model={}, source="sparsify")  # fmt: skip
    return cfg, tensors


# -- reading any of them --------------------------------------------------------------------------


def detect(folder: Path) -> str:
    """'interp' | 'saelens' | 'sparsify' for a dictionary folder (or a folder of per-layer ones)."""
    if (folder / OURS).is_file():
        return "interp"
    if (folder / SAELENS).is_file():
        return "saelens"
    if (folder / SPARSIFY).is_file():
        return "sparsify"
    kinds = {detect(sub) for sub in _subfolders(folder)}
    if len(kinds) == 1 and kinds <= {"saelens", "sparsify"}:
        return kinds.pop()
    raise WorkbenchError(f"{str(folder)!r} holds no dictionary (no {OURS}, cfg.json + {SAELENS} or cfg.json + {SPARSIFY}); "
                         "give a folder written by `interp features train`, SAELens or sparsify")  # fmt: skip


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "cfg.json").is_file()) if folder.is_dir() else []


def _stack(parts: list[tuple[DictionaryConfig, dict]], folder: Path, device, dtype) -> Dictionary:
    parts = sorted(parts, key=lambda p: p[0].layers[0])
    first = parts[0][0]
    for cfg, _ in parts:
        same = (cfg.site, cfg.d_in, cfg.d_out, cfg.d_sae, cfg.k, cfg.activation, cfg.skip)
        if same != (first.site, first.d_in, first.d_out, first.d_sae, first.k, first.activation, first.skip):
            raise WorkbenchError(f"the dictionaries under {str(folder)!r} differ in site or shape; load them one by one")
    cfg = DictionaryConfig(**{**first.to_dict(), "layers": [c.layers[0] for c, _ in parts]})
    d = Dictionary(cfg, device=device, dtype=dtype)
    stacked = {name: torch.stack([t[name] for _, t in parts]) for name in d.tensors()}
    return d.load_tensors(stacked)


def load(path: str | Path, model: Model | None = None, device=None, dtype: torch.dtype = torch.float32) -> Dictionary:
    """Read a dictionary in any of the three formats; with `model`, check it was made for it."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WorkbenchError(f"no dictionary at {str(folder)!r}; give the folder `interp features train` wrote")
    kind = detect(folder)
    if kind == "interp":
        d = _load_ours(folder, device, dtype)
    else:
        one = _saelens_one if kind == "saelens" else _sparsify_one
        subs = [folder] if (folder / (SAELENS if kind == "saelens" else SPARSIFY)).is_file() else _subfolders(folder)
        d = _stack([one(sub) for sub in subs], folder, device, dtype)
    if model is not None:
        check_for_model(d, model)
    return d


def _same_model(made_for: str, name: str, location: str) -> bool:
    a = made_for.lower().rsplit("/", 1)[-1]
    return any(a in b.lower() or b.lower().rsplit("/", 1)[-1] in a for b in (name, location) if b)


def check_for_model(d: Dictionary, model: Model, site: str | None = None) -> None:
    """One-line error unless `d` fits `model` (and `site`, when given)."""
    info, cfg = model.info, d.cfg
    made_for = cfg.model.get("name")
    if site is not None and site != cfg.site:
        raise WorkbenchError(f"this dictionary was made for site {cfg.site!r}, not {site!r}; give a {site} dictionary")
    if made_for and not _same_model(made_for, info.name, info.location):
        raise WorkbenchError(f"this dictionary was made for {made_for}, not {info.name}; give a dictionary of {info.name}")
    for key in ("d_model", "n_layers", "d_vocab"):
        if key in cfg.model and cfg.model[key] != getattr(info, key):
            raise WorkbenchError(f"this dictionary was made for a model with {key} {cfg.model[key]}, but {info.name} "
                                 f"has {getattr(info, key)}; give a dictionary of {info.name}")  # fmt: skip
    if (cfg.d_in, cfg.d_out) != (info.d_model, info.d_model):
        raise WorkbenchError(f"this dictionary reads width {cfg.d_in} and writes {cfg.d_out}, but {info.name}'s "
                             f"stream is {info.d_model} wide; it was made for another model")  # fmt: skip
    bad = [la for la in cfg.layers if not 0 <= la < info.n_layers]
    if bad:
        raise WorkbenchError(f"this dictionary has layers {bad}, but {info.name} has layers 0..{info.n_layers - 1}; "
                             "it was made for another model")  # fmt: skip


def sparsify_name(site: str, layer: int) -> str:
    """The folder name sparsify gives a hookpoint (for writing test fixtures and docs)."""
    return sparsify_hookpoint(site, layer)
