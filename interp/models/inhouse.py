"""In-house models: small TL-native TransformerBridges we build, train and save ourselves.

`NativeSpec` describes the architecture (attention-only or with MLPs, LayerNorm or RMSNorm,
GELU or SwiGLU, learned / rotary / ALiBi positions, grouped-query attention). TL-native models
have no ALiBi, so we add it here: each attention's pattern is re-weighted as
softmax(log(pattern) + bias), which equals softmax(scores + bias) -- ALiBi's definition -- and
happens before the bridge's `hook_pattern`, so hooks see and edit the real ALiBi pattern.

A checkpoint folder holds config.json (`format: interp-inhouse/1`), model.safetensors and the
tokenizer's files; `save_inhouse` writes it atomically and `load_inhouse` opens it.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from interp.errors import WorkbenchError
from interp.io import write_dir
from interp.models.model import Model
from interp.models.sources import INHOUSE_FORMAT

POSITIONALS = ("standard", "rotary", "alibi")
NORMS = ("LN", "RMS", None)


@dataclass
class NativeSpec:
    n_layers: int = 2  # transformer blocks
    d_model: int = 256  # residual stream width
    n_heads: int = 8  # query heads per layer
    d_head: int = 32  # width of each head
    n_kv_heads: int | None = None  # key/value heads (GQA); None = n_heads
    d_mlp: int | None = None  # MLP hidden width; None = 4 * d_model (ignored when attn_only)
    n_ctx: int = 256  # context length
    d_vocab: int = 4096  # vocabulary size (set from the tokenizer)
    attn_only: bool = False  # no MLPs at all
    normalization: str | None = "LN"  # "LN", "RMS" or None
    positional: str = "standard"  # "standard" (learned), "rotary" or "alibi"
    gated_mlp: bool = False  # SwiGLU-style gated MLP
    act_fn: str = "gelu_new"  # MLP activation ("silu" for SwiGLU)
    rotary_base: int = 10000  # rotary frequency base
    seed: int = 0  # initialization seed

    def validate(self) -> None:
        if self.positional not in POSITIONALS:
            raise WorkbenchError(f"unknown positional type {self.positional!r}; choose one of {POSITIONALS}")
        if self.normalization not in NORMS:
            raise WorkbenchError(f"unknown normalization {self.normalization!r}; choose 'LN', 'RMS' or None")
        for name in ("n_layers", "d_model", "n_heads", "d_head", "n_ctx", "d_vocab"):
            if getattr(self, name) <= 0:
                raise WorkbenchError(f"{name} must be positive, got {getattr(self, name)}")
        kv = self.n_kv_heads or self.n_heads
        if self.n_heads % kv:
            raise WorkbenchError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({kv})")

    def to_bridge_config(self):
        from transformer_lens.config import TransformerBridgeConfig

        self.validate()
        return TransformerBridgeConfig(
            d_model=self.d_model,
            d_head=self.d_head,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            n_ctx=self.n_ctx,
            d_vocab=self.d_vocab,
            d_mlp=None if self.attn_only else (self.d_mlp or 4 * self.d_model),
            n_key_value_heads=self.n_kv_heads if (self.n_kv_heads or self.n_heads) != self.n_heads else None,
            attn_only=self.attn_only,
            normalization_type=self.normalization,
            final_rms=self.normalization == "RMS",
            # ALiBi is built as "rotary" (so no learned positions are created), then the
            # rotation is switched off and the ALiBi bias switched on.
            positional_embedding_type="standard" if self.positional == "standard" else "rotary",
            rotary_base=self.rotary_base,
            gated_mlp=self.gated_mlp,
            act_fn=self.act_fn,
            seed=self.seed,
            init_weights=True,
            default_prepend_bos=True,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NativeSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise WorkbenchError(f"unknown architecture fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi's per-head slopes (Press et al. 2022): a geometric sequence starting at
    2^(-8/n); for head counts that are not powers of two, interleave the next power's slopes."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


def alibi_bias(n_heads: int, seq: int, device=None) -> Tensor:
    """bias[h, i, j] = -slope_h * (i - j) for j <= i (future positions are masked anyway)."""
    pos = torch.arange(seq, device=device)
    distance = (pos[:, None] - pos[None, :]).clamp(min=0).float()
    return -alibi_slopes(n_heads).to(device)[:, None, None] * distance


def apply_alibi_to_pattern(pattern: Tensor) -> Tensor:
    """softmax(log(pattern) + alibi): the same as adding ALiBi's bias to the scores."""
    n_heads, seq = pattern.shape[-3], pattern.shape[-1]
    logp = pattern.float().clamp_min(0).log()
    out = torch.softmax(logp + alibi_bias(n_heads, seq, pattern.device), dim=-1)
    return torch.nan_to_num(out, nan=0.0).to(pattern.dtype)  # fully masked (padding) rows stay 0


def _install_alibi(native_model: torch.nn.Module) -> None:
    from interp.bridge import native_attention_class

    class AlibiAttention(native_attention_class()):
        def forward(self, hidden_states, attention_mask=None, position_ids=None, pattern_fn=None, **kwargs):
            def with_alibi(pattern: Tensor) -> Tensor:
                pattern = apply_alibi_to_pattern(pattern)
                return pattern_fn(pattern) if pattern_fn is not None else pattern

            return super().forward(
                hidden_states, attention_mask=attention_mask, position_ids=None, pattern_fn=with_alibi, **kwargs
            )

    native_model.rotary = None
    for block in native_model.layers:
        block.attn.rotary = None
        block.attn.__class__ = AlibiAttention


def build_native(spec: NativeSpec, tokenizer, device=None, dtype=None, name: str = "inhouse", location: str = "") -> Model:
    """A freshly initialized in-house model for `spec` (seeded by spec.seed), as a `Model`."""
    from interp.bridge import build_native as bridge_native
    from interp.bridge import native_model

    cfg = spec.to_bridge_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        native = native_model(copy.deepcopy(cfg))
    if spec.positional == "alibi":
        _install_alibi(native)
    if device is not None:
        native = native.to(device)
    if dtype is not None:
        native = native.to(dtype=dtype)
    bridge = bridge_native(native, tokenizer, dtype=dtype, device=device)
    if spec.positional == "alibi":
        bridge.cfg.positional_embedding_type = "alibi"
    model = Model.from_bridge(bridge, tokenizer, name, "inhouse", location)
    model.memo["native_spec"] = spec  # the architecture it was built from (interp.circuits.ungroup reads it)
    return model


def native_state_dict(model: Model) -> dict[str, Tensor]:
    """The weights of the bridged native model, keyed as the model's own modules name them."""
    return {k: v.detach().clone().contiguous() for k, v in model.bridge.original_model.state_dict().items()}


def save_inhouse(
    model: Model,
    spec: NativeSpec,
    folder: str | Path,
    extra: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a checkpoint folder atomically: config.json, model.safetensors, tokenizer files,
    plus any `extra_files` (e.g. the trainer's state)."""

    def fill(tmp: Path) -> None:
        save_file(native_state_dict(model), str(tmp / "model.safetensors"))
        model.tokenizer.save_pretrained(str(tmp))
        config = {"format": INHOUSE_FORMAT, "architecture": asdict(spec), **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)

    return write_dir(Path(folder), fill)


def read_inhouse_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WorkbenchError(f"checkpoint {str(folder)!r} has an unreadable config.json ({e}); it is corrupt") from e
    if config.get("format") != INHOUSE_FORMAT or "architecture" not in config:
        raise WorkbenchError(f"{str(folder)!r} is not an in-house checkpoint (config.json lacks format {INHOUSE_FORMAT!r})")
    return config


def load_inhouse(folder: str | Path, device=None, dtype=None, name: str | None = None) -> tuple[Model, NativeSpec, dict]:
    """(model, spec, config) from a checkpoint folder written by `save_inhouse`."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    config = read_inhouse_config(folder)
    spec = NativeSpec.from_dict(config["architecture"])
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise WorkbenchError(f"checkpoint {str(folder)!r} has no model.safetensors; it is incomplete")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise WorkbenchError(f"{str(weights)!r} is corrupt or truncated ({e}); retrain or restore the checkpoint") from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"checkpoint {str(folder)!r} has unreadable tokenizer files ({e})") from e
    model = build_native(spec, tokenizer, device=device, dtype=dtype, name=name or folder.name, location=str(folder))
    try:
        model.bridge.original_model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise WorkbenchError(f"weights in {str(weights)!r} do not match its config.json ({first})") from e
    return model, spec, config
