"""Where each IOI circuit head works: positions found on the discovery prompts, beside its class's.

Wang et al. keep each class at the positions they chose by hand (interp.circuits.head_configs.CLASS_POSITIONS:
name movers at END, induction heads at S2, ...). On SmolLM2 a diagnostic (RESULTS.md, "By position rule
and template") found the circuit's heads also carrying the signal at tokens no class names, above all
between S2 and END, so a circuit held to its classes' positions loses what they do there. This module
finds those places from data, on the discovery prompts only, and the evaluation keeps each head at its
class's position *and* at the segments found for it.

Segments. Every prompt position up to END falls into a segment (`SEGMENTS`): the five named positions
(IO, S1, S1+1, S2, END; exactly the task's own positions, so two names may share one), "prefix" (before
the first name), "between" (after the first name, before S2, unnamed) and "after S2" (after S2, before
END). Templates differ in length, so a segment is a set of positions per prompt.

Gains. In the circuit's own configuration on the discovery prompts -- every head's output (hook_z)
mean-ablated with the ABC means of the prompts' own templates (interp.circuits.evaluate.abc_means),
except the circuit's heads at their classes' positions -- each head's output is written
z' = mean + keep * (z - mean), keep = 1 where it is kept and 0 where ablated. One forward and one
backward pass give d F / d keep at every (head, prompt, position): the first-order change of the
circuit's mean logit diff F(C) when that head is also kept there. Summed over a segment's positions
and averaged over prompts, signed towards F(M) (positive: it moves F(C) towards the full model's
logit diff) and divided by |F(M)|, it is the head's *gain* at that segment. A circuit head is kept
also at every segment where its gain reaches `threshold` (DiscoveryConfig.position_threshold, chosen
on validation prompts: benchmarks/ioi_threshold.py, RESULTS.md). With `rounds` > 1 the gains are
taken again after each round's additions. Only circuit heads get new places: heads are chosen by
path patching (interp.circuits.discover), never by this step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.data.task import Task, end_logits, metric_fn
from interp.types import Head

if TYPE_CHECKING:
    from interp.models import Model

SEGMENTS = ("prefix", "IO", "S1", "S1+1", "between", "S2", "after S2", "END")
NAMED = ("IO", "S1", "S1+1", "S2", "END")
POSITION_ABC = 16  # ABC prompts per template behind the means the gains are taken with (only to choose places)


def segment_masks(ds: Task) -> dict[str, Bool[Tensor, "batch pos"]]:
    """Each segment's positions per prompt (module docstring); positions after END are in none."""
    ar = torch.arange(ds.clean.shape[1])[None]
    pos = {k: ds.positions[k].cpu()[:, None] for k in NAMED}
    named = {k: pos[k] == ar for k in NAMED}
    is_named = torch.stack(list(named.values())).any(0)
    first = torch.minimum(pos["IO"], pos["S1"])
    out = {"prefix": (ar < first) & ~is_named, "between": (ar > first) & (ar < pos["S2"]) & ~is_named,
           "after S2": (ar > pos["S2"]) & (ar < pos["END"]) & ~is_named, **named}  # fmt: skip
    return {k: out[k] for k in SEGMENTS}


def places_mask(model: Model, ds: Task, places: dict[Head, list[str]]) -> Bool[Tensor, "layer head batch pos"]:
    """True where each head of `places` is kept: the union of its segments (names of `SEGMENTS`)."""
    seg = segment_masks(ds)
    out = torch.zeros(model.info.n_layers, model.info.n_heads, *ds.clean.shape, dtype=torch.bool)
    for (layer, h), names in places.items():
        for s in names:
            out[layer, h] |= seg[s]
    return out


def _logit_diff(model: Model, ds: Task, edits: list) -> Tensor:
    """The task's metric (IOI: the logit diff), mean over prompts, of one run under `edits`."""
    logits = hooks.run_until(model, ds.clean, edits, last=None)
    return metric_fn(ds)(end_logits(logits, ds.end)).float().mean()


def gains(model: Model, ds: Task, means: dict[int, Tensor], kept: Bool[Tensor, "layer head batch pos"],
          model_logit_diff: float) -> Float[Tensor, "layer head segment"]:  # fmt: skip
    """Each head's gain at each segment (module docstring) in the configuration that keeps `kept`."""
    L = model.info.n_layers
    keep = {layer: kept[layer].permute(1, 2, 0).to(model.device, torch.float32).requires_grad_(True) for layer in range(L)}

    def edit(z: Tensor, hook, layer: int) -> Tensor:
        m = means[layer].to(z.dtype)
        return m + keep[layer][..., None].to(z.dtype) * (z - m)

    with torch.enable_grad():
        f = _logit_diff(model, ds, [(hooks.name("z", layer), lambda z, hook, layer=layer: edit(z, hook, layer))
                                    for layer in range(L)])  # fmt: skip
        f.backward()
    f = float(f.detach())
    sign = 1.0 if model_logit_diff >= f else -1.0
    grad = torch.stack([keep[layer].grad.permute(2, 0, 1) for layer in range(L)]).cpu()  # [layer head batch pos]
    seg = torch.stack(list(segment_masks(ds).values())).float()  # [segment batch pos]
    per = torch.einsum("lhbp,sbp->lhs", grad.float(), seg)  # F is a mean over prompts already
    return sign * per / max(abs(model_logit_diff), 1e-6)


def find_places(model: Model, ds: Task, classes: dict[str, list[Head]], class_positions: dict[str, str],
                threshold: float, means: dict[int, Tensor], rounds: int = 1) -> tuple[dict[Head, list[str]], Tensor]:  # fmt: skip
    """Each circuit head's segments: its class's position (`class_positions`; a class not there is kept at
    every segment) plus every segment where its gain reaches `threshold`, over `rounds` rounds, with the
    mean-ablation values `means` (interp.circuits.evaluate.abc_means of `ds`, `POSITION_ABC` prompts per
    template by default). (places, the last round's gains [layer head segment])."""
    with torch.no_grad():
        f_model = float(_logit_diff(model, ds, []))
    places = class_places(classes, class_positions)
    g = torch.zeros(model.info.n_layers, model.info.n_heads, len(SEGMENTS))
    for _ in range(rounds):
        g = gains(model, ds, means, places_mask(model, ds, places), f_model)
        wider = widened(places, g, threshold)
        if wider == places:
            break
        places = wider
    return places, g


def class_places(classes: dict[str, list[Head]], class_positions: dict[str, str]) -> dict[Head, list[str]]:
    """Each circuit head at its class's position (every segment for a class not in `class_positions`)."""
    return {h: [class_positions[c]] if c in class_positions else list(SEGMENTS) for c, hs in classes.items() for h in hs}


def widened(places: dict[Head, list[str]], g: Float[Tensor, "layer head segment"], threshold: float) -> dict[Head, list[str]]:
    """`places` with every segment added where a head's gain `g` reaches `threshold`, in `SEGMENTS` order."""
    return {h: [s for i, s in enumerate(SEGMENTS) if s in names or float(g[h[0], h[1], i]) >= threshold]
            for h, names in places.items()}  # fmt: skip
