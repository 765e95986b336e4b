"""One pass of the ablation engine over a batch of edge plans (interp.circuits.ablate.engine's docstring):
the replayed blocks from the first, each layer's changed inputs rebuilt from the writers' differences
(interp.circuits.ablate.layout), the differences of the heads and MLPs kept for the layers above.

Everything the pass decides is decided first, on the CPU (`structure`): which inputs are rebuilt and
from which writers, where each writer's difference is kept, which MLPs write their replacement. The
pass itself then only launches device work and never reads a device value back until the metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from interp.circuits.ablate.layout import Layout, Sum, layout
from interp.circuits.ablate.plan import AblationPlan
from interp.circuits.ablate.runs import attention_output
from interp.circuits.replay import ACC, Edit, Inputs, Span, gather_pos
from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.circuits.ablate.engine import Ablator


def at_span(x: Tensor, span: Span) -> Tensor:
    """A per-position tensor [batch|1 pos|1 ...] at the span's positions ([batch|1 win|1 ...])."""
    if x.shape[1] == 1:
        return x
    pos = span.pos.to(x.device)
    return gather_pos(x, pos if x.shape[0] == pos.shape[0] else pos.expand(x.shape[0], -1))


@dataclass
class Slots:
    """Where a sum reads the writers' differences: a slice of consecutive slots, or an index of a few,
    with the sum's weights over exactly those slots."""

    lo: int
    hi: int
    index: Tensor | None  # slots, when a few are gathered
    weights: Tensor  # [variant input slot-read]

    @classmethod
    def of(cls, s: Sum, slot: Tensor) -> Slots:
        """Gather the slots a sum reads when they are few; else read the whole run of slots up to its last
        writer (one view, no copy), with zero weights for the writers it does not read."""
        slots = slot[s.rows]
        if not len(slots):
            return cls(0, 0, None, s.weights)
        hi = int(slots.max()) + 1
        if 3 * len(slots) < hi:
            return cls(0, 0, slots, s.weights)
        w = s.weights.new_zeros(*s.weights.shape[:2], hi)
        w[:, :, slots] = s.weights
        return cls(0, hi, None, w)

    def read(self, buffer: Tensor) -> Tensor:
        return buffer[:, self.lo : self.hi] if self.index is None else buffer.index_select(1, self.index.to(buffer.device))


@dataclass
class Structure:
    """A pass worked out on the CPU: the rebuilds, each prompt's first position replayed, how many
    differences are kept, where each sum reads them and where each writer puts its own."""

    layout: Layout
    span: Span  # the positions replayed (on the CPU)
    keys: bool  # whether some prompt starts after position 0 (its earlier keys come from the clean run)
    n_slots: int
    reads: dict[int, Slots]  # id(sum) -> its writers' slots
    heads: list[tuple[Tensor, Tensor] | None]  # per layer: (heads with a slot, their slots), None: none kept
    mlp_slot: list[int | None]
    embed_slot: int | None
    mlp_zero: list[Tensor | None]  # per layer: [variant] plans whose MLP writes exactly its replacement


def structure(ab: Ablator, plans: list[AblationPlan]) -> Structure:
    """The CPU side of a pass (see the module docstring)."""
    if ab.ablated is None:
        raise WorkbenchError("given replacement values replace heads at the source only; edge ablation needs "
                             "counterfactual or mean ablation")  # fmt: skip
    g, (B, T) = ab.graph, ab.task.clean.shape
    lay = layout(g, torch.stack([p.edges for p in plans]), ab.ablation == "counterfactual")
    start = torch.full((B,), ab.t0, dtype=torch.long)
    for p in plans:  # a writer replaced at the source before t0 moves the start
        if p.replaces_writers:
            at = p.writers.any(0)
            start = torch.minimum(start, torch.where(at.any(1), at.float().argmax(1).long(), T))
    slot = torch.full((len(g.writers),), -1, dtype=torch.long)
    slot[lay.read] = torch.arange(int(lay.read.sum()))
    sums = [a.sum for a in lay.attention] + [m.sum for m in lay.mlp if m is not None] + [lay.logits]
    reads = {id(s): Slots.of(s, slot) for s in sums if s is not None}
    heads, mlp_slot, mlp_zero = [], [], []
    for layer in range(g.n_layers):
        s = slot[g.first_head(layer) : g.first_head(layer) + g.n_heads]
        kept = (s >= 0).nonzero().flatten()
        heads.append((kept, s[kept]) if len(kept) else None)
        if g.has_mlp:
            w = g.mlp_writer(layer)
            mlp_slot.append(int(slot[w]) if slot[w] >= 0 else None)
            zero = lay.zero[:, w]
            mlp_zero.append(zero if bool(zero.any()) else None)
        else:
            mlp_slot.append(None)
            mlp_zero.append(None)
    span = Span.of(start, ab.task.end, T, ab.task.reads)
    embed = int(slot[0]) if slot[0] >= 0 else None
    return Structure(lay, span, bool(start.max() > 0), int(lay.read.sum()), reads, heads, mlp_slot, embed, mlp_zero)


def _summed(st: Structure, s: Sum, buffer: Tensor, base: Tensor, current: Tensor,
            at: tuple[Tensor, Tensor] | None = None) -> Tensor:  # fmt: skip
    """The inputs' residual streams [variant input batch win d]: base or current per (variant, input),
    plus the signed sum of the writers' differences (at the positions `at` only, when given)."""
    read = st.reads[id(s)]
    S, n, k = read.weights.shape
    inside = s.inside.to(buffer.device).view(S, n, *([1] * (current.dim() - 1)))
    picked = torch.where(inside, base.to(buffer.device, ACC), current.unsqueeze(1))
    if not k:
        return picked.expand(S, n, *picked.shape[2:])
    part = read.read(buffer)  # [S k B W d]
    if at is not None:
        part = part[:, :, at[0], at[1]]
    part = part.expand(S, *part.shape[1:])
    w = read.weights.to(buffer.device, buffer.dtype)
    return torch.bmm(w, part.reshape(S, k, -1)).view(S, n, *part.shape[2:]) + picked


def edge_pass(ab: Ablator, plans: list[AblationPlan]) -> Tensor:
    """The metric per prompt of each edge plan [plan batch], all in one pass of stacked variants."""
    g, rp, task = ab.graph, ab.rp, ab.task
    st = structure(ab, plans)
    S, B, T = len(plans), len(task), task.clean.shape[1]
    dev = ab.model.device
    span = st.span.to(dev)
    buffer = torch.zeros(S, st.n_slots, B, span.width, ab.model.info.d_model, dtype=ACC, device=dev)
    X = at_span(ab.clean.resid(0), span)[None].to(ACC)
    X = ab.embed_replaced(plans, span, X)
    if st.embed_slot is not None:
        buffer[:, st.embed_slot] = X - at_span(ab.replacement.embed, span).to(X.device, ACC)
    writers = ab.writer_edits(plans, span, None)
    for layer in range(g.n_layers):
        edit = writers(layer) or Edit()
        _layer_edit(ab, st, layer, span, X, buffer, edit)
        X = rp.block(layer, X, span, cache=ab.clean.cache, keys=ab.clean.keys(rp, layer) if st.keys else None, edit=edit)
    dev = rp.device_of(g.n_layers)
    at = (torch.arange(B, device=dev)[:, None], span.rows.to(dev))  # [batch read]: the metric's positions
    base_end = ab.ablated.final
    base_end = base_end[at[0], at[1] + span.start.to(dev)[:, None]] if base_end.shape[1] != 1 else base_end[:, 0]
    final = _summed(st, st.layout.logits, buffer, base_end, X.to(dev)[:, at[0], at[1]], at)[:, 0]
    return ab.metric(span.readout(final)).float().cpu()


def _layer_edit(ab: Ablator, st: Structure, layer: int, span: Span, X: Tensor, buffer: Tensor, edit: Edit) -> None:
    """Fill `edit` with the layer's rebuilt inputs, the per-head differences kept, and the MLP's input,
    output and difference."""
    g, rep, dev = ab.graph, ab.replacement, ab.rp.device_of(layer)
    a = st.layout.attention[layer]
    if a.sum is not None or len(a.fixed):
        base = at_span(ab.ablated.attention[layer], span)
        streams = None if a.sum is None else _summed(st, a.sum, buffer, base, X.to(buffer.device))
        projected = at_span(ab.ablated.projected[layer], span)[:, :, a.fixed.to(dev)] if len(a.fixed) else None
        edit.inputs = Inputs(a.columns, streams, a.fixed, projected, a.default)
    r_z = at_span(rep.z[layer], span)
    edit.relative_to = r_z
    edit.offset = attention_output(ab.rp, layer, r_z.to(dev))
    if st.heads[layer] is not None:
        heads, slots = (t.to(buffer.device) for t in st.heads[layer])
        edit.heads = lambda per: buffer.index_copy_(
            1, slots, per.index_select(3, heads).permute(0, 3, 1, 2, 4).expand(buffer.shape[0], -1, -1, -1, -1))
    m = st.layout.mlp[layer]
    if m is None:
        return
    r_mlp = at_span(rep.mlp[layer], span).to(dev, ACC)
    if m.known == "replacement":
        edit.mlp_output = r_mlp
    elif m.known == "ablated":
        edit.mlp_output = at_span(ab.ablated.mlp_out[layer], span)
    elif m.sum is not None:
        base = at_span(ab.ablated.mlp_in[layer], span)
        edit.mlp_input = lambda mid: _summed(st, m.sum, buffer, base, mid.to(buffer.device))[:, 0]
    source = edit.mlp_edit
    if st.mlp_zero[layer] is not None:  # plans in which the MLP writes exactly its replacement
        mask = st.mlp_zero[layer].to(dev).view(-1, 1, 1, 1)
        edit.mlp_edit = lambda out: torch.where(mask, r_mlp, source(out) if source else out)
    slot = st.mlp_slot[layer]
    if slot is not None:
        edit.mlp_seen = lambda out: buffer[:, slot].copy_((out - r_mlp).expand(buffer.shape[0], *buffer.shape[2:]))
