"""Helpers for the circuit tests: corruptions a tiny random model reacts to."""

from __future__ import annotations

import torch

from interp.data.ioi import make_ioi
from interp.data.tasks import from_ioi


def scrambled(model, n: int, seed: int):
    """IOI prompts whose 'corrupted' run reads random tokens: a tiny random model barely
    reacts to swapped names, and the comparisons need effects well above float noise."""
    ds = make_ioi(model, n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(100, 5000, ds.tokens.shape, generator=g)
    ds.corrupted_tokens = torch.cat([ds.tokens[:, :1], noise[:, 1:]], dim=1)
    return ds


def scrambled_task(model, n: int, seed: int):
    return from_ioi(scrambled(model, n, seed))


def sharpen_queries(model, request, factor: float = 16.0):
    """Multiply every layer's query weights by `factor` until the test ends (restored by a
    finalizer): freshly initialised attention is nearly uniform, so patching or keeping a head
    would barely move anything."""
    weights = [model.bridge.blocks[layer].attn.q.original_component.weight for layer in range(model.info.n_layers)]
    with torch.no_grad():
        for w in weights:
            w.mul_(factor)
    request.addfinalizer(lambda: [w.data.div_(factor) for w in weights])
    return model


def late_scrambled_task(model, n: int, seed: int, start: int):
    """`scrambled_task` with every prompt's first `start` tokens left clean: the clean and corrupted
    runs agree before `start`."""
    ds = scrambled(model, n, seed)
    ds.corrupted_tokens = torch.cat([ds.tokens[:, :start], ds.corrupted_tokens[:, start:]], dim=1)
    return from_ioi(ds)
