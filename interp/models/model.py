"""The one model type: `Model` (a TransformerLens 4.x `TransformerBridge` plus its tokenizer and a
small `ModelInfo` that downstream code reads instead of poking at configs). interp.models.load makes
them from any source; in-house models (interp.models.inhouse) wrap bridges built here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from interp.errors import WorkbenchError


@dataclass(frozen=True)
class ModelInfo:
    name: str  # short name (the registry name or the folder/file name)
    source: str  # "hub" | "bundled-gguf" | "local-hf" | "gguf" | "inhouse"
    location: str  # hub id or path it came from
    n_layers: int
    n_heads: int  # query heads per layer
    n_kv_heads: int  # key/value heads per layer (== n_heads without GQA)
    d_model: int
    d_head: int
    d_mlp: int | None  # None for attention-only models
    d_vocab: int
    n_ctx: int
    positional: str  # "standard" | "rotary" | "alibi"
    normalization: str | None  # "LN" | "RMS" | None
    gated_mlp: bool
    attn_only: bool

    def to_dict(self) -> dict:
        return asdict(self)


class Model:
    """A hooked model: `bridge` runs it, `tokenizer` reads text, `info` describes it."""

    def __init__(self, bridge, tokenizer, info: ModelInfo, device: torch.device, dtype: torch.dtype):
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.dtype = dtype
        self.memo: dict[str, object] = {}  # per-model verdicts and caches (they die with the model, never keyed by id)

    @classmethod
    def from_bridge(cls, bridge, tokenizer, name: str, source: str, location: str = "") -> Model:
        """Wrap a bridge built here (in-house models, training) as the one model type; device
        and dtype are read off its parameters."""
        param = next(bridge.parameters())
        return cls(bridge, tokenizer, model_info(bridge, name, source, location), param.device, param.dtype)

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Model({i.name!r}, source={i.source}, layers={i.n_layers}, heads={i.n_heads}/kv {i.n_kv_heads}, "
            f"d_model={i.d_model}, positional={i.positional}, device={self.device}, dtype={self.dtype})"
        )

    # -- running ---------------------------------------------------------------------------
    def __call__(self, tokens: Tensor, **kwargs) -> Tensor:
        return self.bridge(tokens.to(self.device), **kwargs)

    def run_with_cache(self, tokens: Tensor, **kwargs):
        return self.bridge.run_with_cache(tokens.to(self.device), **kwargs)

    def run_with_hooks(self, tokens: Tensor, fwd_hooks=(), **kwargs):
        return self.bridge.run_with_hooks(tokens.to(self.device), fwd_hooks=list(fwd_hooks), **kwargs)

    def hooks(self, fwd_hooks=(), **kwargs):
        return self.bridge.hooks(fwd_hooks=list(fwd_hooks), **kwargs)

    # -- text ------------------------------------------------------------------------------
    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    def to_tokens(self, text: str | list[str], prepend_bos: bool = True) -> Tensor:
        """Token ids [batch, pos] on the model's device; BOS first unless prepend_bos=False.
        Refuses empty text and text longer than the context with a clear message."""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or any(not t.strip() for t in texts):
            raise WorkbenchError("empty prompt: type some text (not only spaces) to run the model on")
        tokens = self.bridge.to_tokens(texts, prepend_bos=prepend_bos, truncate=False)  # refuse, never truncate silently
        if tokens.shape[-1] > self.info.n_ctx:
            raise WorkbenchError(
                f"text is {tokens.shape[-1]} tokens but {self.info.name} reads at most {self.info.n_ctx}; shorten it"
            )
        return tokens.to(self.device)

    def to_str_tokens(self, text: str | Tensor, prepend_bos: bool = True) -> list[str]:
        if isinstance(text, str):
            text = self.to_tokens(text, prepend_bos=prepend_bos)[0]
        return [self.tokenizer.decode([int(t)]) for t in text.flatten()]

    def token_id(self, token: str) -> int:
        """The id of a string that must be exactly one token (e.g. ' Mary')."""
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise WorkbenchError(f"{token!r} is {len(ids)} tokens in {self.info.name}'s tokenizer, not one")
        return ids[0]

    @torch.no_grad()
    def top_predictions(self, prompt: str, k: int = 10) -> list[tuple[str, float]]:
        """The k most likely next tokens after `prompt`, with probabilities."""
        logits = self(self.to_tokens(prompt))[0, -1].float()
        probs = logits.softmax(-1)
        top = probs.topk(k)
        return [(self.tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


def model_info(bridge, name: str, source: str, location: str) -> ModelInfo:
    """What downstream code needs to know of a bridge, read from its config."""
    cfg = bridge.cfg
    attn_only = bool(getattr(cfg, "attn_only", False))
    return ModelInfo(
        name=name,
        source=source,
        location=location,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_mlp=None if attn_only else cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
        positional=(getattr(cfg, "positional_embedding_type", None) or "standard").lower(),
        normalization=cfg.normalization_type,
        gated_mlp=bool(getattr(cfg, "gated_mlp", False)),
        attn_only=attn_only,
    )
