"""Activation patching: copy one component's corrupted (ABC) activation into the clean run and
measure the normalized logit difference (0 = unchanged, -1 = fully corrupted).

Batched across components: a chunk of components runs as one forward pass over the prompts
repeated once per component, each copy patching only its own component (a boolean mask per
layer), instead of one forward pass per component. Positions are IOI positions (IO, S1, S1+1,
S2, END: each prompt's own index, since templates differ in length) or every position at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.circuits.metrics import logit_diff, normalized
from interp.data.ioi import POSITION_NAMES, IOIDataset
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model


def _masks(components, layer_of, n_layers: int, B: int, T: int, width: int, ds: IOIDataset, device):
    """Per layer: [n_comp, batch, pos, width] bool, True where that copy takes the corrupted value."""
    masks = {}
    rows = torch.arange(B, device=device)
    for c, comp in enumerate(components):
        layer, slot, pos = layer_of(comp)
        m = masks.setdefault(layer, torch.zeros(len(components), B, T, width, dtype=torch.bool, device=device))
        if pos is None:
            m[c, :, :, slot] = True
        else:
            m[c, rows, ds.positions[pos].to(device), slot] = True
    return masks


@torch.no_grad()
def _patch(model: Model, ds: IOIDataset, components, layer_of, hook_kind: str, width: int, chunk: int,
           progress: Progress | None, what: str):
    L, B, T = model.info.n_layers, *ds.tokens.shape
    names = set(hooks.names(hook_kind, range(L)))
    clean_logits = model(ds.tokens)
    corr_logits, corr = model.run_with_cache(ds.corrupted_tokens, names_filter=lambda n: n in names)
    clean, corrupted = logit_diff(clean_logits, ds).mean(), logit_diff(corr_logits, ds).mean()
    out = []
    for start in range(0, len(components), chunk):
        comps = components[start : start + chunk]
        n = len(comps)
        masks = _masks(comps, layer_of, L, B, T, width, ds, ds.tokens.device)
        edits = []
        for layer, m in masks.items():
            src = corr[hooks.name(hook_kind, layer)]

            def hook(x, hook, m=m, src=src):
                shaped = x.view(n, B, T, width, -1)
                return torch.where(m[..., None], src[None].view(1, B, T, width, -1), shaped).view(x.shape)

            edits.append((hooks.name(hook_kind, layer), hook))
        logits = model.run_with_hooks(ds.tokens.repeat(n, 1), fwd_hooks=edits)
        out.append(logit_diff(logits, ds).view(n, B).mean(1))
        if progress:
            progress(min(start + chunk, len(components)), len(components), what)
    return normalized(torch.cat(out), clean, corrupted).cpu()


def patch_heads(
    model: Model, ds: IOIDataset, per_position: bool = False, chunk: int = 16, progress: Progress | None = None
) -> Float[Tensor, "layer head"] | Float[Tensor, "layer head position"]:
    """Patch each head's output (hook_z) at every position, or at each IOI position separately
    (then the last axis follows `POSITION_NAMES`)."""
    L, H = model.info.n_layers, model.info.n_heads
    positions = list(POSITION_NAMES) if per_position else [None]
    comps = [(layer, h, p) for layer in range(L) for h in range(H) for p in positions]
    res = _patch(model, ds, comps, lambda c: c, "z", H, chunk, progress, "patching heads")
    return res.view(L, H, len(positions)) if per_position else res.view(L, H)


def patch_resid(
    model: Model, ds: IOIDataset, chunk: int = 16, progress: Progress | None = None
) -> Float[Tensor, "layer position"]:
    """Patch the residual stream entering each layer at each IOI position (`POSITION_NAMES`)."""
    L = model.info.n_layers
    comps = [(layer, 0, p) for layer in range(L) for p in POSITION_NAMES]
    res = _patch(
        model, ds, comps, lambda c: c, "resid_pre", 1, chunk, progress, "patching residual"
    )
    return res.view(L, len(POSITION_NAMES))


@torch.no_grad()
def patch_head_set(model: Model, ds: IOIDataset, heads: list[Head]) -> Float[Tensor, "batch"]:
    """Per-prompt logit diff with all `heads` taking their output from the corrupted run at
    every position (one forward pass; everything else recomputed)."""
    names = {hooks.name("z", layer) for layer, _ in heads}
    _, corr = model.run_with_cache(ds.corrupted_tokens, names_filter=lambda n: n in names)
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, []).append(h)
    edits = []
    for layer, hs in by_layer.items():
        src = corr[hooks.name("z", layer)]

        def hook(z, hook, hs=hs, src=src):
            z = z.clone()
            z[:, :, hs] = src[:, :, hs]
            return z

        edits.append((hooks.name("z", layer), hook))
    return logit_diff(model.run_with_hooks(ds.tokens, fwd_hooks=edits), ds)
