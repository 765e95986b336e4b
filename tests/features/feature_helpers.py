"""Helpers for dictionary tests: random dictionaries of hand-chosen shapes."""

from __future__ import annotations

import torch

from interp.features import Dictionary, DictionaryConfig


def random_dictionary(site: str = "mlp", layers=(0, 1), d: int = 32, d_sae: int = 48, k: int = 5, skip: bool = False,
                      activation: str = "topk", seed: int = 0, model: dict | None = None) -> Dictionary:
    """A dictionary with random parameters (every tensor nonzero, so a wrong one shows)."""
    cfg = DictionaryConfig(site=site, layers=list(layers), d_in=d, d_out=d, d_sae=d_sae,
                           k=k if activation == "topk" else None, activation=activation, skip=skip,
                           apply_b_dec_to_input=site != "mlp", model=model or {})
    out = Dictionary(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in out.tensors().values():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
    return out


