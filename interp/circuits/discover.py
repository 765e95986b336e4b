"""Automatic IOI circuit discovery: the paper's path-patching procedure with explicit thresholds.

1. Path-patch every head to the logits. Heads whose path lowers the logit diff and that attend
   from END to IO are *name movers*; those whose path raises it and attend to IO are *negative
   name movers*. Two classes the paper does not name, because GPT-2 small lacks them and
   SmolLM2 has them: strong heads that attend from END to S rather than IO are *S suppression*
   heads (they write against S, e.g. SmolLM2 23.3), and strong heads that attend to no name at
   all (e.g. SmolLM2's last-layer heads reading END itself) are *other direct* heads.
   *Backup name movers* are, as in Wang et al. (section 3.4), the heads that compensate when the
   name movers are knocked out: we run the clean prompts with the name movers' outputs taken
   from each prompt's own ABC corruption (the intervention path patching uses), and measure
   every later head's direct effect on the logit diff (its output at END read through the final
   norm and the IO - S unembedding: `direct_effects`) with and without the knock-out, both with
   the clean run's norm scale (so only a change of the head's own output counts); heads in
   layers after the first name mover whose direct effect rises by at least `backup_effect` of
   the IOI gap are backups (`effects["backup compensation"]` holds the rise of every head).
2. Path-patch every head to the queries at END of the name movers and S suppression heads:
   *S-inhibition* heads (which also attend from END to S).
3. Path-patch every head to the S-inhibition heads' keys and values at S2: heads attending from
   S2 to S1+1 are *induction* heads, to S1 *duplicate-token* heads.
4. Path-patch every head to the induction heads' keys at S1+1: heads attending from S1+1 to S1
   are *previous-token* heads.

Effects are normalized logit-diff changes (0 = none, -1 = the whole clean-to-corrupted gap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.circuits.evaluate import head_mask
from interp.circuits.path import PatchCaches, PathResult, Receivers, all_heads, path_patch
from interp.data.ioi import templates_used
from interp.data.task import Task
from interp.errors import WorkbenchError
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model
CLASSES = (
    "name mover", "s suppression", "negative name mover", "backup name mover", "other direct", "s-inhibition",
    "induction", "duplicate token", "previous token",
)  # fmt: skip


@dataclass
class DiscoveryConfig:
    """Thresholds of the automated procedure (normalized effects are fractions of the IOI gap)."""

    name_mover_effect: float = 0.08  # path to logits at most -this (and attends to IO) -> name mover
    backup_effect: float = 0.02  # direct effect rises by at least this share of the IOI gap when the
    # name movers are knocked out -> backup name mover
    negative_effect: float = 0.08  # path to logits at least +this (and attends to IO) -> negative name mover
    io_attention: float = 0.2  # mean END->IO attention a name-mover-like head needs
    s_inhibition_effect: float = 0.03  # path to name movers' queries at most -this -> S-inhibition
    induction_effect: float = 0.02  # path to S-inhibition keys/values at most -this -> induction/duplicate
    previous_effect: float = 0.01  # path to induction keys at S1+1 at most -this -> previous token
    pattern_attention: float = 0.1  # attention an induction/duplicate/previous-token head needs
    max_per_class: int = 8  # keep at most this many heads per class (strongest effect first)
    prefilter: bool = True  # steps 2-4 path-patch only heads passing their class's attention test
    # (the classification is the same; False path-patches every head for full heatmaps, slower)
    chunk: int = 64  # senders per batch in path patching


@dataclass
class Discovery:
    """What discovery found, and the evidence behind it."""

    classes: dict[str, list[Head]]  # class name -> heads (only non-empty classes)
    effects: dict[str, Float[Tensor, "layer head"]]  # step name -> normalized path-patching effect per sender
    attention: dict[str, Float[Tensor, "layer head"]]  # e.g. "END->IO" -> mean attention per head
    clean_logit_diff: float  # mean clean logit diff on the discovery prompts
    corrupted_logit_diff: float  # mean ABC logit diff on the discovery prompts
    config: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    templates: list[str] = field(default_factory=list)  # base templates the discovery prompts use
    names: list[str] = field(default_factory=list)  # the names they draw from

    def heads(self) -> list[Head]:
        return sorted({h for hs in self.classes.values() for h in hs})


def attention_between(pattern: dict[int, Tensor], ds: Task, dest: str, src: str) -> Float[Tensor, "layer head"]:
    """Mean attention from each prompt's `dest` position to its `src` position, per head."""
    rows = torch.arange(len(ds))
    d, s = ds.positions[dest], ds.positions[src]
    return torch.stack([p[rows, :, d, s].mean(0) for _, p in sorted(pattern.items())]).cpu()


def logit_diff_directions(model: Model, ds: Task, resid_end: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
    """Per prompt, the direction d with x . d = x's direct contribution to logit(IO) - logit(S):
    the final norm's linear part (centring for LayerNorm, the weight) with this run's own norm
    scale at END, times the IO - S unembedding. resid_end . d + the norm's and b_U's constant
    terms = the logit diff."""
    from interp.lens import final_norm

    W_U = model.bridge.W_U
    u = (W_U[:, ds.answers.to(W_U.device)] - W_U[:, ds.distractors.to(W_U.device)]).T.float()  # [batch d_model]
    kind, weight = final_norm(model)
    r = resid_end.float()
    if weight is not None:
        u = u * weight.float()
    if kind == "LN":
        u = u - u.mean(-1, keepdim=True)
        r = r - r.mean(-1, keepdim=True)
    if kind is not None:
        eps = float(getattr(model.bridge.cfg, "eps", 1e-5))
        u = u / (r.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return u


def _head_effects(model: Model, z_end: dict[int, Tensor], d: Tensor) -> Float[Tensor, "layer head batch"]:
    """Each head's output at END (z @ W_O) dotted with the per-prompt directions d [batch d_model]."""
    out = torch.empty(model.info.n_layers, model.info.n_heads, d.shape[0])
    for layer, z in z_end.items():
        W_O = model.bridge.blocks[layer].attn.W_O.float()  # [head d_head d_model]
        per_head = einops.einsum(z.float(), W_O, "b head e, head e d -> b head d")
        out[layer] = einops.einsum(per_head, d, "b head d, b d -> head b").cpu()
    return out


@torch.no_grad()
def direct_effects(model: Model, ds: Task, replaced: dict[Head, Tensor] | None = None,
                   directions: Tensor | None = None) -> tuple[Float[Tensor, "layer head batch"], Tensor]:
    """(each head's direct effect on the logit diff per prompt, the directions used): its output
    at END (z @ W_O) dotted with `logit_diff_directions` -- of this run, or the given
    `directions` [batch d_model] -- in a run of the clean prompts where each head in `replaced`
    takes the given output (hook_z values [batch pos d_head]). The run stops at the final norm."""
    L = model.info.n_layers
    replaced = replaced or {}
    end = ds.end.to(ds.clean.device)
    rows = torch.arange(len(ds), device=end.device)
    got: dict = {}

    def edit(z: Tensor, hook, layer: int) -> Tensor:
        for (rl, h), value in replaced.items():
            if rl == layer:
                z[:, :, h] = value.to(z.dtype)
        got[layer] = z[rows, end].detach()
        return z

    def keep_final(x: Tensor, hook) -> None:
        got["final"] = x[rows, end].detach()

    edits = [(hooks.name("z", layer), partial(edit, layer=layer)) for layer in range(L)]
    edits.append((hooks.final_resid(L), keep_final))
    hooks.run_until(model, ds.clean, edits, last=hooks.final_resid(L))
    final = got.pop("final")
    d = logit_diff_directions(model, ds, final) if directions is None else directions
    return _head_effects(model, got, d), d


def compensation(model: Model, ds: Task, cached: PatchCaches, knocked_out: list[Head]) -> Float[Tensor, "layer head"]:
    """How much each head's direct effect rises when the heads in `knocked_out` take their output
    from each prompt's ABC corruption: mean over prompts, as a share of the IOI gap. Both runs are
    read with the clean run's final-norm scale, so a head counts only when its own output
    changes, not because the knock-out shrinks the residual stream the final norm divides by.
    The clean run's outputs come from `cached` (path patching's clean cache)."""
    end = ds.end.to(ds.clean.device)
    rows = torch.arange(len(ds), device=end.device)
    clean = cached.clean
    directions = logit_diff_directions(model, ds, clean[hooks.final_resid(model.info.n_layers)][rows, end])
    before = _head_effects(model, {layer: clean[hooks.name("z", layer)][rows, end]
                                   for layer in range(model.info.n_layers)}, directions)
    replaced = {(layer, h): cached.corrupted[hooks.name("z", layer)][:, :, h] for layer, h in knocked_out}
    after, _ = direct_effects(model, ds, replaced, directions)
    gap = float(cached.clean_metric.mean() - cached.corrupted_metric.mean())
    return (after - before).mean(-1) / gap


def _pick(effect: Tensor, keep: Tensor, limit: int, sign: float = -1.0) -> list[Head]:
    """Heads where `keep`, strongest (most negative, or most positive for sign=+1) first."""
    cand = [(float(effect[layer, h]) * sign, (layer, h)) for layer, h in keep.nonzero().tolist()]
    return [head for _, head in sorted(cand, reverse=True)[:limit]]


@torch.no_grad()
def _direct_classes(e: Tensor, att: dict[str, Tensor], cfg: DiscoveryConfig) -> dict[str, list[Head]]:
    """The heads that act on the logits directly, by their path-patching effect `e` [layer head] and
    where END attends: name movers (to IO), S suppression (to S), negative name movers, other direct."""
    to_io, to_s = att["END->IO"], torch.maximum(att["END->S1"], att["END->S2"])
    io_att = (to_io >= cfg.io_attention) & (to_io >= to_s)
    s_att = (to_s >= cfg.io_attention) & (to_s > to_io)
    strong = e <= -cfg.name_mover_effect
    return {
        "name mover": _pick(e, strong & io_att, cfg.max_per_class),
        "s suppression": _pick(e, strong & s_att, cfg.max_per_class),
        "negative name mover": _pick(e, (e >= cfg.negative_effect) & io_att, cfg.max_per_class, +1.0),
        "other direct": _pick(e.abs(), (e.abs() >= cfg.name_mover_effect) & ~io_att & ~s_att, cfg.max_per_class, +1.0),
    }


def _exclusive(classes: dict[str, list[Head]]) -> dict[str, list[Head]]:
    """Each head in the first class (in `CLASSES` order) that claims it; empty classes dropped."""
    taken: set[Head] = set()
    out = {}
    for c in CLASSES:
        out[c] = [h for h in classes[c] if h not in taken]
        taken.update(out[c])
    return {c: hs for c, hs in out.items() if hs}


def discover(
    model: Model, ds: Task, config: DiscoveryConfig | None = None, progress: Progress | None = None
) -> Discovery:
    """Run the four path-patching steps on the IOI task `ds` (named positions IO, S1, S1+1, S2, END)
    and classify heads (see the module docstring)."""
    cfg = config or DiscoveryConfig()
    L, H = model.info.n_layers, model.info.n_heads
    if L < 4:
        raise WorkbenchError(f"{model.info.name} has {L} layers; the IOI circuit needs at least 4 (use a deeper model)")
    if progress:
        progress(0, 5, "running clean and corrupted prompts")
    cached = PatchCaches.collect(model, ds, extra=hooks.names("pattern", range(L)))
    pattern = {layer: cached.clean[hooks.name("pattern", layer)] for layer in range(L)}
    att = {f"{d}->{s}": attention_between(pattern, ds, d, s) for d, s in
           [("END", "IO"), ("END", "S2"), ("END", "S1"), ("S2", "S1+1"), ("S2", "S1"), ("S1+1", "S1")]}  # fmt: skip
    senders = all_heads(model)
    effects: dict[str, Tensor] = {}
    classes: dict[str, list[Head]] = {c: [] for c in CLASSES}

    def step(i: int, name: str, receivers: Receivers | None, keep: Tensor | None = None) -> Tensor:
        if progress:
            progress(i, 5, f"path patching to {name}")
        below = max(layer for layer, _ in receivers.heads) if receivers else L
        chosen = [(layer, h) for layer, h in senders if layer < below and (keep is None or bool(keep[layer, h]))]
        if not chosen:
            effects[name] = torch.full((L, H), float("nan"))
            return effects[name]
        res: PathResult = path_patch(model, ds, chosen, receivers, chunk=cfg.chunk, caches=cached)
        effects[name] = res.grid(L, H)
        return effects[name]

    classes.update(_direct_classes(step(1, "logits", None), att, cfg))
    to_s = torch.maximum(att["END->S1"], att["END->S2"])
    movers = classes["name mover"] + classes["s suppression"]
    if classes["name mover"]:
        rise = compensation(model, ds, cached, classes["name mover"])
        effects["backup compensation"] = rise
        backup = rise >= cfg.backup_effect
        backup[: min(layer for layer, _ in classes["name mover"]) + 1] = False  # only later layers can respond
        backup[head_mask(model, classes["name mover"])] = False
        classes["backup name mover"] = _pick(rise, backup, cfg.max_per_class, +1.0)
    if movers:
        keep = (to_s >= cfg.pattern_attention) if cfg.prefilter else None
        e = step(2, "mover queries", Receivers(movers, "q", "END"), keep)
        si = (e <= -cfg.s_inhibition_effect) & (to_s >= cfg.pattern_attention)
        classes["s-inhibition"] = [h for h in _pick(e, si, cfg.max_per_class) if h not in movers]
    if classes["s-inhibition"]:
        ind, dup = att["S2->S1+1"], att["S2->S1"]
        keep = (torch.maximum(ind, dup) >= cfg.pattern_attention) if cfg.prefilter else None
        e = step(3, "s-inhibition keys/values", Receivers(classes["s-inhibition"], "kv", "S2"), keep)
        strong = e <= -cfg.induction_effect
        is_ind = strong & (ind >= dup) & (ind >= cfg.pattern_attention)
        is_dup = strong & (dup > ind) & (dup >= cfg.pattern_attention)
        classes["induction"] = _pick(e, is_ind, cfg.max_per_class)
        classes["duplicate token"] = _pick(e, is_dup, cfg.max_per_class)
    if classes["induction"]:
        keep = (att["S1+1->S1"] >= cfg.pattern_attention) if cfg.prefilter else None
        e = step(4, "induction keys", Receivers(classes["induction"], "k", "S1+1"), keep)
        prev = (e <= -cfg.previous_effect) & (att["S1+1->S1"] >= cfg.pattern_attention)
        classes["previous token"] = _pick(e, prev, cfg.max_per_class)
    if progress:
        progress(5, 5, "discovery done")
    return Discovery(
        _exclusive(classes),
        effects,
        att,
        float(cached.clean_metric.mean()),
        float(cached.corrupted_metric.mean()),
        cfg,
        templates_used(ds),
        list(ds.source.get("names", [])),
    )
