"""Our transcoders in circuit-tracer's on-disk format (per-layer transcoders, "transcoder_set"), and back.

circuit-tracer 0.5.0 (read 2026-12-07: circuit_tracer/transcoder/single_layer_transcoder.py and
utils/hf_utils.py) loads a set of per-layer transcoders from a config.yaml

    {model_kind: transcoder_set, scan, feature_input_hook, feature_output_hook, transcoders: [path per layer]}

and one safetensors file per layer, `layer_{i}.safetensors`, with

    W_enc [d_sae, d_model]   (ours is [d_in, d_sae]: transposed)
    W_dec [d_sae, d_model]   (ours: the same orientation)
    b_enc [d_sae], b_dec [d_model]
    W_skip [d_model, d_model] (optional; both sides compute x @ W_skip.T)
    activation_function.threshold [d_sae] (JumpReLU only: pre * (pre > threshold) on both sides)

Its loader gives a file without a threshold a ReLU. TopK is not in the file format: circuit-tracer
has a TopK module (the k largest pre-activations kept as they are, no ReLU after) that a caller
sets as the transcoder's activation function; ours keeps the k largest and then applies the ReLU.
The two agree whenever the k largest pre-activations of every token are positive. The config
therefore carries an "interp" section (activation, k, layers, source) that circuit-tracer ignores
and a caller reads to set TopK. Our `apply_b_dec_to_input` (encode x - b_dec) has no counterpart
there; it is folded into b_enc (b_enc - b_dec @ W_enc), which gives the same pre-activations.

The hooks are those of circuit-tracer's TransformerLens backend for an MLP transcoder:
"mlp.hook_in" (the MLP's input, after ln2: what our transcoders read) and "mlp.hook_out" (the MLP's
output: what they write).

The config is written as JSON, which is valid YAML (circuit-tracer reads it with yaml.safe_load).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.errors import WorkbenchError
from interp.features.dictionary import Dictionary, DictionaryConfig

FEATURE_INPUT_HOOK = "mlp.hook_in"
FEATURE_OUTPUT_HOOK = "mlp.hook_out"
CONFIG = "config.yaml"


def layer_file(layer: int) -> str:
    return f"layer_{layer}.safetensors"


def tracer_tensors(tc: Dictionary, layer: int) -> dict[str, torch.Tensor]:
    """The tensors of `layer`'s transcoder under circuit-tracer's names and orientation (float32)."""
    i = tc.index(layer)
    W_enc = tc.W_enc.detach()[i].float()  # [d_in, d_sae]
    b_enc = tc.b_enc.detach()[i].float()
    b_dec = tc.b_dec.detach()[i].float()
    if tc.cfg.apply_b_dec_to_input:
        b_enc = b_enc - b_dec @ W_enc
    out = {"W_enc": W_enc.T.contiguous(), "W_dec": tc.W_dec.detach()[i].float().contiguous(),
           "b_enc": b_enc.contiguous(), "b_dec": b_dec.contiguous()}  # fmt: skip
    if tc.W_skip is not None:
        out["W_skip"] = tc.W_skip.detach()[i].float().contiguous()
    if tc.cfg.activation == "jumprelu":
        out["activation_function.threshold"] = tc.threshold.detach()[i].float().contiguous()
    return out


def write_tracer_transcoders(tc: Dictionary, folder: str | Path, scan: str = "interp-workbench") -> Path:
    """Write `tc` (MLP transcoders of every layer 0..L-1) as circuit-tracer's transcoder set in
    `folder`: layer_{i}.safetensors and config.yaml (absolute paths, as its loader opens them as
    given). Returns the config's path."""
    from safetensors.torch import save_file

    if not tc.site.is_transcoder:
        raise WorkbenchError(f"circuit-tracer's per-layer format holds transcoders (site 'mlp'), not {tc.cfg.site!r}")
    layers = sorted(tc.layers)
    if layers != list(range(len(layers))):
        raise WorkbenchError(f"circuit-tracer needs a transcoder for every layer 0..{max(layers)}; these have {layers}")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for layer in layers:
        path = folder / layer_file(layer)
        save_file(tracer_tensors(tc, layer), str(path))
        paths.append(str(path))
    cfg = tc.cfg
    config = {"model_kind": "transcoder_set", "scan": scan, "feature_input_hook": FEATURE_INPUT_HOOK,
              "feature_output_hook": FEATURE_OUTPUT_HOOK, "transcoders": paths,
              "interp": {"activation": cfg.activation, "k": cfg.k, "layers": layers, "d_sae": cfg.d_sae,
                         "skip": cfg.skip, "source": cfg.source, "model": cfg.model,
                         "folded_b_dec_into_b_enc": cfg.apply_b_dec_to_input}}  # fmt: skip
    out = folder / CONFIG
    out.write_text(json.dumps(config, indent=1) + "\n")
    return out


def read_tracer_config(folder: str | Path) -> dict:
    """The transcoder set's config.yaml: ours is JSON; circuit-tracer's own YAML needs pyyaml."""
    path = Path(folder) / CONFIG
    try:
        text = path.read_text()
    except OSError as e:
        raise WorkbenchError(f"{str(path)!r} is unreadable ({type(e).__name__}); write the transcoders again") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml

        return yaml.safe_load(text)


def read_tracer_transcoders(folder: str | Path) -> Dictionary:
    """A transcoder set in circuit-tracer's format (ours or its own ReLU / JumpReLU ones) as our
    Dictionary. TopK comes from the config's "interp" section; without it, a file with a threshold is
    JumpReLU and one without is ReLU (circuit-tracer's rule)."""
    from safetensors.torch import load_file

    config = read_tracer_config(folder)
    if config.get("model_kind") != "transcoder_set":
        raise WorkbenchError(f"{str(folder)!r} holds {config.get('model_kind')!r}, not per-layer transcoders")
    tensors = []
    for path in config["transcoders"]:
        p = Path(path)
        if not p.is_absolute():
            p = Path(folder) / p
        tensors.append(load_file(str(p)))
    first = tensors[0]
    d_sae, d_model = first["W_enc"].shape
    meta = config.get("interp") or {}
    activation = meta.get("activation") or ("jumprelu" if "activation_function.threshold" in first else "relu")
    cfg = DictionaryConfig(site="mlp", layers=list(range(len(tensors))), d_in=d_model, d_out=d_model, d_sae=d_sae,
                           k=meta.get("k") if activation == "topk" else None, activation=activation,
                           skip="W_skip" in first, model=meta.get("model") or {},
                           source=meta.get("source") or "circuit-tracer")  # fmt: skip
    stacked = {"W_enc": torch.stack([t["W_enc"].T for t in tensors]),
               "b_enc": torch.stack([t["b_enc"] for t in tensors]),
               "W_dec": torch.stack([t["W_dec"] for t in tensors]),
               "b_dec": torch.stack([t["b_dec"] for t in tensors])}  # fmt: skip
    if cfg.skip:
        stacked["W_skip"] = torch.stack([t["W_skip"] for t in tensors])
    if activation == "jumprelu":
        stacked["threshold"] = torch.stack([t["activation_function.threshold"] for t in tensors])
    return Dictionary(cfg).load_tensors(stacked)
