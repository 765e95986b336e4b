"""Helpers for attribution-graph tests: random transcoders for every layer of a tiny model."""

from __future__ import annotations

import torch

from interp.features import Dictionary, DictionaryConfig
from interp.features.formats import model_fingerprint


def random_transcoders(model, d_sae: int = 48, k: int = 5, skip: bool = False, seed: int = 0,
                       activation: str = "topk", layers=None) -> Dictionary:  # fmt: skip
    """Transcoders (site mlp) with random parameters for `layers` (default all) of `model`."""
    d = model.info.d_model
    cfg = DictionaryConfig(site="mlp", layers=list(range(model.info.n_layers)) if layers is None else list(layers),
                           d_in=d, d_out=d, d_sae=d_sae, k=k if activation == "topk" else None, activation=activation,
                           skip=skip, model=model_fingerprint(model))  # fmt: skip
    out = Dictionary(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # pre-activations of order 1 from the normed input; writes of the size of the tiny models'
        # MLP outputs (their weights are initialised with std 0.02)
        std = {"W_enc": d**-0.5, "b_enc": 0.3, "W_dec": 0.05, "b_dec": 0.02, "W_skip": 0.05 * d**-0.5, "threshold": 0.1}
        for name, t in out.tensors().items():
            t.copy_(torch.randn(t.shape, generator=gen) * std[name])
    return out
