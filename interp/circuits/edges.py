"""Exact edge patching: the effect of corrupting one edge, every other edge left clean.

    effect(u -> v) = m(clean) - m(clean, with input v reading u's corrupted output)

(the mean over prompts; input v's residual copy becomes x_v + a_corr(u) - a_clean(u), nothing else
is touched, everything downstream of v is recomputed). This is the quantity EAP and EAP-IG linearize
(interp.circuits.attribute), in the same sign. Two implementations:

- `edge_effects_reference`: plainly written, one hooked bridge forward per edge (the input's own copy,
  its site `Reader.hook`, gets the difference added; bridges without split copies recompute the one
  projection the input feeds instead).
- `edge_effects`: the batched engine. Edges are grouped by the input they enter; all edges into one
  input run together as variants stacked in front of the batch, and only what an edge can change is
  recomputed, from the clean cache, with the replayed block (interp.circuits.replay): the input's
  layer with that input reading its own shifted stream (`Inputs`), then the blocks above it, the last
  one at END only. An edge into the logits costs a final norm and an unembedding at END.

Direct path patching (Wang et al. 2022; TransformerLens 4.3's `get_act_patch_direct_path`) is the same
intervention on head -> head q/k/v edges in the other direction: on the corrupted run, the clean
difference is added. `edge_effects(model, task.swapped(), ...)` computes it (as effects relative to the
swapped task's clean run, i.e. the corrupted one); TL's refuses k and v on GQA models, which here are
the edges into the shared KV head (interp.circuits.types).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.bridge import split_inputs, supports_split
from interp.circuits.capture import check_inputs, writer_outputs
from interp.circuits.replay import ACC, Edit, Inputs, Replay, Span, gather_pos
from interp.circuits.types import EdgeScores, Graph, Reader
from interp.circuits.weights import projection
from interp.data.task import Task, end_logits, metric_fn, resid_metric
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


def _selection(graph: Graph, edges) -> Tensor:
    if edges is None:
        return torch.arange(graph.n_edges)
    idx = torch.as_tensor(edges, dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= graph.n_edges):
        raise WorkbenchError(f"edge indices must lie in 0..{graph.n_edges - 1}")
    return idx


# -- the reference -----------------------------------------------------------------------------------


@torch.no_grad()
def edge_effects_reference(model: Model, task: Task, edges=None, progress: Progress | None = None) -> Tensor:
    """Exact effects of `edges` (indices into the graph's edge order; default all), one forward each."""
    graph = Graph.of(model)
    split = supports_split(model)
    if split:
        check_inputs(model)
    idx = _selection(graph, edges)
    clean_logits, a_clean = writer_outputs(model, task.clean, graph)
    _, a_corr = writer_outputs(model, task.corrupted, graph)
    clean_end = end_logits(clean_logits, task.reads)
    metric = metric_fn(task, clean_end)
    base = metric(clean_end).mean()
    out = torch.empty(len(idx))
    streams = [hooks.name("resid_pre", layer) for layer in range(graph.n_layers)]
    streams += [hooks.name("resid_mid", layer) for layer in range(graph.n_layers)] if graph.has_mlp else []
    clean_resid = {} if split else hooks.capture(model, task.clean, streams, last=None)
    with split_inputs(model) if split else nullcontext():
        for j, e in enumerate(idx.tolist()):
            w, r = int(graph.src[e]), int(graph.dst[e])
            reader = graph.readers[r]
            delta = a_corr[:, :, w] - a_clean[:, :, w]
            edit = _split_edit(reader, delta) if split else _projection_edit(model, reader, delta, clean_resid)
            logits = model.run_with_hooks(task.clean, fwd_hooks=[edit])
            out[j] = base - metric(end_logits(logits, task.reads)).mean()
            if progress:
                progress(j + 1, len(idx), "patching edges one by one")
    return out


def _split_edit(reader: Reader, delta: Tensor):
    """Add `delta` to the input's own residual copy (the bridge's split inputs)."""

    def add(x, hook=None):
        x = x.clone()
        if reader.kind in ("q", "k", "v"):
            x[:, :, reader.head] += delta
        else:
            x += delta
        return x

    return reader.hook, add


def _projection_edit(model: Model, reader: Reader, delta: Tensor, clean: dict[str, Tensor]):
    """For bridges without split inputs: recompute the one projection the input feeds (a head's q, a
    KV head's k or v, before rotary; the MLP's normalized input) from the clean residual + delta."""
    if reader.kind == "logits":
        return hooks.name("final_in"), lambda x, hook=None: x + delta
    block = model.bridge.blocks[reader.layer]
    if reader.kind == "mlp":
        return hooks.name("mlp_normed", reader.layer), lambda x, hook=None: block.ln2(clean[reader.stream] + delta)
    W, b = projection(block.attn, reader.kind)
    new = block.ln1(clean[reader.stream] + delta) @ W[reader.head] + (0 if b is None else b[reader.head])

    def put(x, hook=None):
        x = x.clone()
        x[:, :, reader.head] = new
        return x

    return hooks.name(reader.kind, reader.layer), put


# -- the batched engine -----------------------------------------------------------------------------


class EdgePatcher:
    """The clean cache, the writers' corrupted-minus-clean outputs and the metric of one task, ready to
    patch any set of edges in batches (see the module docstring)."""

    @torch.no_grad()
    def __init__(self, model: Model, task: Task, graph: Graph | None = None):
        self.model, self.task = model, task
        self.graph = graph or Graph.of(model)
        self.rp = Replay.of(model)
        names = set(self.rp.all_cache_names())
        clean_logits, cache = model.run_with_cache(task.clean, names_filter=lambda n: n in names)
        missing = sorted(names - set(cache.keys()))
        if missing:
            raise WorkbenchError(f"{model.info.name} does not expose the hooks exact edge patching replays "
                                 f"({missing[0]}); use interp.circuits.edges.edge_effects_reference")  # fmt: skip
        self.cache = dict(cache.items())
        _, a_clean = writer_outputs(model, task.clean, self.graph)
        corr_logits, a_corr = writer_outputs(model, task.corrupted, self.graph)
        self.delta = a_corr - a_clean  # [batch pos writer d_model]
        del a_clean, a_corr
        clean_end = end_logits(clean_logits, task.reads)
        self.metric = resid_metric(model.bridge, task, clean_end)
        self.end = task.end.to(model.device)
        self.span = Span.whole(self.end, task.clean.shape[1], task.reads.to(model.device))
        m = metric_fn(task, clean_end)
        self.m_clean, self.m_corr = m(clean_end), m(end_logits(corr_logits, task.reads))  # [batch]
        self.final = self.cache[hooks.final_resid(self.rp.n_layers)]

    @torch.no_grad()
    def check_null(self) -> None:
        """Every kind of input, patched with a zero difference, must give back the clean metric."""
        zero = torch.zeros_like(self.delta[:, :, :1]).permute(2, 0, 1, 3)
        kinds, worst = set(), 0.0
        for reader in self.graph.readers:
            if (reader.kind, reader.layer) not in kinds:
                kinds.add((reader.kind, reader.layer))
                worst = max(worst, float((self.reader_pass(reader, zero)[0] - self.m_clean).abs().max()))
        tol = 1e-3 if self.rp.dtype == torch.float32 else 3e-2  # 16-bit: the bridge rounds, the replay sums in float32
        if worst > tol * max(1.0, float(self.m_clean.abs().max())):
            raise WorkbenchError(f"exact edge patching cannot replay {self.model.info.name} (off by {worst:.3g}); "
                                 "use interp.circuits.edges.edge_effects_reference")  # fmt: skip

    def reader_pass(self, reader: Reader, delta: Float[Tensor, "variant batch pos d_model"]) -> Float[Tensor, "variant batch"]:
        """The metric per prompt with input `reader` shifted by each variant's `delta`."""
        rp, c, S = self.rp, self.cache, len(delta)
        rows = self.span.rows  # the metric's read positions [batch read] (the span starts at 0)
        if reader.kind == "logits":  # the final residual stream at the reads (END) alone
            at_end = gather_pos(delta.flatten(0, 1), rows.repeat(S, 1)).view(S, -1, rows.shape[1], delta.shape[-1])
            return self.metric(self.span.readout(gather_pos(self.final, rows)[None].to(ACC) + at_end.to(ACC)))
        layer = reader.layer
        last = layer == rp.n_layers - 1  # the last block runs at the reads (END) only
        qidx = rows if last else None
        X = c[hooks.name("resid_pre", layer)][None].to(ACC)  # the clean stream, shared by every variant
        if reader.kind == "mlp":
            shift = delta if qidx is None else gather_pos(delta.flatten(0, 1), qidx.repeat(S, 1)).view(S, -1, qidx.shape[1], delta.shape[-1])
            edit = Edit(mlp_input=lambda mid: mid + shift.to(ACC))
        else:
            column = reader.head + {"q": 0, "k": rp.n_heads, "v": rp.n_heads + rp.n_kv}[reader.kind]
            edit = Edit(inputs=Inputs(columns=torch.tensor([column]), streams=(X + delta.to(ACC))[:, None]))
        X = rp.block(layer, X, self.span, cache=c, qidx=qidx, edit=edit)
        if last:
            return self.metric(self.span.readout(X))
        return self.metric(rp.run(X, self.span, layer + 1, c))

    @torch.no_grad()
    def effects(self, edges=None, chunk_tokens: int = 8192, progress: Progress | None = None) -> Tensor:
        """m(clean) - m(patched) (means over prompts) for each edge index in `edges` (default all)."""
        idx = _selection(self.graph, edges)
        out = torch.empty(len(idx))
        B, T = self.task.clean.shape
        per = max(1, chunk_tokens // (B * T))
        by_reader: dict[int, list[int]] = {}
        for j, e in enumerate(idx.tolist()):
            by_reader.setdefault(int(self.graph.dst[e]), []).append(j)
        done, base = 0, self.m_clean.mean()
        for r, rows in by_reader.items():
            reader = self.graph.readers[r]
            for s in range(0, len(rows), per):
                part = rows[s : s + per]
                writers = self.graph.src[idx[part]].to(self.delta.device)
                delta = self.delta[:, :, writers].permute(2, 0, 1, 3)
                out[torch.tensor(part)] = (base - self.reader_pass(reader, delta).mean(1)).float().cpu()
                done += len(part)
                if progress:
                    progress(done, len(idx), "patching edges")
        return out


def forwards_per_prompt(graph: Graph) -> float:
    """Forwards one prompt costs the batched engine for every edge: each edge replays the model from its
    input's layer up (an edge into the logits: a final norm and an unembedding, counted as a layer)."""
    L = graph.n_layers
    above = torch.tensor([(L - r.layer) / L if r.layer is not None else 1 / max(L, 1) for r in graph.readers])
    return float(above[graph.dst].sum())


def edge_effects(model: Model, task: Task, edges=None, chunk_tokens: int = 8192, progress: Progress | None = None,
                 check: bool = True) -> EdgeScores:  # fmt: skip
    """Exact effects of `edges` (default: every edge) by the batched engine, as EdgeScores (edges not
    asked for score NaN)."""
    patcher = EdgePatcher(model, task)
    if check:
        patcher.check_null()
    graph = patcher.graph
    idx = _selection(graph, edges)
    scores = torch.full((graph.n_edges,), float("nan"))
    scores[idx] = patcher.effects(idx, chunk_tokens, progress)
    return EdgeScores(graph, scores, "exact", task.name, task.metric, len(task), float(patcher.m_clean.mean()),
                      float(patcher.m_corr.mean()))  # fmt: skip
