"""Activation patching: copy one component's corrupted (IOI: ABC) activation into the clean run and
measure the normalized metric (IOI: logit difference; 0 = unchanged, -1 = fully corrupted).

Batched across components: a chunk of components runs as one forward pass over the prompts
repeated once per component, each copy patching only its own component (a boolean mask per
layer), instead of one forward pass per component. Positions are the task's named positions
(IOI: IO, S1, S1+1, S2, END: each prompt's own index, since templates differ in length) or every
position at once. Every function takes an `interp.data.task.Task`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.data.task import Task, end_logits, metric_fn, normalized
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model


def _masks(components, layer_of, n_layers: int, B: int, T: int, width: int, ds: Task, device):
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
def _patch(model: Model, ds: Task, components, layer_of, hook_kind: str, width: int, chunk: int,
           progress: Progress | None, what: str):
    L, B, T = model.info.n_layers, *ds.clean.shape
    names = set(hooks.names(hook_kind, range(L)))
    clean_logits = model(ds.clean)
    corr_logits, corr = model.run_with_cache(ds.corrupted, names_filter=lambda n: n in names)
    metric = metric_fn(ds, end_logits(clean_logits, ds.reads))

    def score(logits):  # logits may stack several copies of the batch
        end = end_logits(logits, ds.reads)
        return metric(end.view(-1, B, *end.shape[1:])).flatten()

    clean, corrupted = score(clean_logits).mean(), score(corr_logits).mean()
    out = []
    for start in range(0, len(components), chunk):
        comps = components[start : start + chunk]
        n = len(comps)
        masks = _masks(comps, layer_of, L, B, T, width, ds, ds.clean.device)
        edits = []
        for layer, m in masks.items():
            src = corr[hooks.name(hook_kind, layer)]

            def hook(x, hook, m=m, src=src):
                shaped = x.view(n, B, T, width, -1)
                return torch.where(m[..., None], src[None].view(1, B, T, width, -1), shaped).view(x.shape)

            edits.append((hooks.name(hook_kind, layer), hook))
        logits = model.run_with_hooks(ds.clean.repeat(n, 1), fwd_hooks=edits)
        out.append(score(logits).view(n, B).mean(1))
        if progress:
            progress(min(start + chunk, len(components)), len(components), what)
    return normalized(torch.cat(out), clean, corrupted).cpu()


def patch_heads(
    model: Model, ds: Task, per_position: bool = False, chunk: int = 16, progress: Progress | None = None
) -> Float[Tensor, "layer head"] | Float[Tensor, "layer head position"]:
    """Patch each head's output (hook_z) at every position, or at each named position separately
    (then the last axis follows the task's positions: IOI's `POSITION_NAMES`)."""
    L, H = model.info.n_layers, model.info.n_heads
    positions = list(ds.positions) if per_position else [None]
    comps = [(layer, h, p) for layer in range(L) for h in range(H) for p in positions]
    res = _patch(model, ds, comps, lambda c: c, "z", H, chunk, progress, "patching heads")
    return res.view(L, H, len(positions)) if per_position else res.view(L, H)


def patch_resid(
    model: Model, ds: Task, chunk: int = 16, progress: Progress | None = None
) -> Float[Tensor, "layer position"]:
    """Patch the residual stream entering each layer at each named position (IOI: `POSITION_NAMES`)."""
    L = model.info.n_layers
    comps = [(layer, 0, p) for layer in range(L) for p in ds.positions]
    res = _patch(model, ds, comps, lambda c: c, "resid_pre", 1, chunk, progress, "patching residual")
    return res.view(L, len(ds.positions))


@torch.no_grad()
def patch_head_set(model: Model, ds: Task, heads: list[Head]) -> Float[Tensor, "batch"]:
    """Per-prompt metric with all `heads` taking their output from the corrupted run at every
    position (one forward pass; everything else recomputed)."""
    names = {hooks.name("z", layer) for layer, _ in heads}
    clean_logits = model(ds.clean)
    _, corr = model.run_with_cache(ds.corrupted, names_filter=lambda n: n in names)
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
    metric = metric_fn(ds, end_logits(clean_logits, ds.reads))
    return metric(end_logits(model.run_with_hooks(ds.clean, fwd_hooks=edits), ds.reads))
