"""Exact edge patching: the effect of corrupting one edge, every other edge left clean.

    effect(u -> v) = m(clean) - m(clean, with input v reading u's corrupted output)

(the mean over prompts; input v's residual copy becomes x_v + a_corr(u) - a_clean(u), nothing
else is touched, everything downstream of v is recomputed). This is the quantity EAP and
EAP-IG linearize (interp.circuits.attribute), in the same sign. Two implementations:

- `edge_effects_reference`: plainly written, one hooked bridge forward per edge (the input's own
  copy at `hook_{q,k,v}_input`, `hook_mlp_in` or `ln_final.hook_in` gets the difference added).
- `edge_effects`: the batched engine. Edges are grouped by the input they enter; all edges into
  one input run together as variants stacked in front of the batch, and only what an edge can
  change is recomputed, from the clean cache (`Replay`): for an input of layer l, the one head
  (q), the KV group's heads (k, v) or the MLP of layer l, then the blocks above l; the last block
  only at END. An edge into the logits costs a final norm and an unembedding at END.

Direct path patching (Wang et al. 2022; TransformerLens 4.3's `get_act_patch_direct_path`) is the
same intervention on head -> head q/k/v edges in the other direction: on the corrupted run, the
clean difference is added. `edge_effects(model, task.swapped(), ...)` computes it (as effects
relative to the swapped task's clean run, i.e. the corrupted one); TL's refuses k and v on GQA
models, which here are the edges into the shared KV head (interp.circuits.graph).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.circuits.attribute import EdgeScores
from interp.circuits.graph import Graph, Reader
from interp.circuits.metrics import resid_metric
from interp.circuits.readers import check_inputs, input_hook, split_inputs, supports_split, writer_outputs
from interp.circuits.replay import PatchCaches, Replay, gather_pos
from interp.data.tasks import Task, as_task, end_logits, metric_fn
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


def _scores(graph, effects, task, m_clean, m_corr, method, extra=None) -> EdgeScores:
    return EdgeScores(graph, effects, method, task.name, task.metric, len(task), m_clean, m_corr, extra=extra or {})


# -- the reference -----------------------------------------------------------------------------------


@torch.no_grad()
def edge_effects_reference(model: Model, task: Task, edges=None, progress: Progress | None = None) -> Tensor:
    """Exact effects of `edges` (indices into the graph's edge order; default all), one forward each."""
    task = as_task(task)
    graph = Graph.of(model)
    if supports_split(model):
        check_inputs(model)
    idx = _selection(graph, edges)
    clean_logits, a_clean = writer_outputs(model, task.clean, graph)
    _, a_corr = writer_outputs(model, task.corrupted, graph)
    clean_end = end_logits(clean_logits, task.end)
    metric = metric_fn(task, clean_end)
    base = metric(clean_end).mean()
    out = torch.empty(len(idx))
    split = supports_split(model)
    clean_resid = {} if split else hooks.capture(model, task.clean, _inputs_of(model), last=None)
    with split_inputs(model) if split else nullcontext():
        for j, e in enumerate(idx.tolist()):
            w, r = int(graph.src[e]), int(graph.dst[e])
            reader = graph.readers[r]
            delta = a_corr[:, :, w] - a_clean[:, :, w]
            edit = _split_edit(reader, delta) if split else _projection_edit(model, reader, delta, clean_resid)
            logits = model.run_with_hooks(task.clean, fwd_hooks=[edit])
            out[j] = base - metric(end_logits(logits, task.end)).mean()
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

    return input_hook(reader.kind, reader.layer), add


def _inputs_of(model: Model) -> list[str]:
    L = model.info.n_layers
    names = [hooks.name("resid_pre", layer) for layer in range(L)]
    return names + ([hooks.name("resid_mid", layer) for layer in range(L)] if not model.info.attn_only else [])


def _projection_edit(model: Model, reader: Reader, delta: Tensor, clean: dict[str, Tensor]):
    """For bridges without split inputs: recompute the one projection the input feeds (a head's q,
    a KV head's k or v, before rotary; the MLP's normalized input) from the clean residual + delta."""
    if reader.kind == "logits":
        return "ln_final.hook_in", lambda x, hook=None: x + delta
    block = model.bridge.blocks[reader.layer]
    if reader.kind == "mlp":
        return f"blocks.{reader.layer}.mlp.hook_in", lambda x, hook=None: block.ln2(clean[hooks.name("resid_mid", reader.layer)] + delta)
    a = block.attn
    W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[reader.kind]
    normed = block.ln1(clean[hooks.name("resid_pre", reader.layer)] + delta)
    new = normed @ W[reader.head] + (0 if b is None else b[reader.head])

    def put(x, hook=None):
        x = x.clone()
        x[:, :, reader.head] = new
        return x

    return hooks.name(reader.kind, reader.layer), put


# -- the batched engine -----------------------------------------------------------------------------


class EdgePatcher:
    """The clean cache, the writers' corrupted-minus-clean outputs and the metric of one task,
    ready to patch any set of edges in batches (see the module docstring)."""

    @torch.no_grad()
    def __init__(self, model: Model, task: Task, graph: Graph | None = None):
        self.model, self.task = model, as_task(task)
        self.graph = graph or Graph.of(model)
        self.rp = Replay.of(model)
        t = self.task
        names = set(self.rp.all_cache_names())
        clean_logits, cache = model.run_with_cache(t.clean, names_filter=lambda n: n in names)
        missing = sorted(names - set(cache.keys()))
        if missing:
            raise WorkbenchError(f"{model.info.name} does not expose the hooks exact edge patching replays "
                                 f"({missing[0]}); use interp.circuits.edges.edge_effects_reference")  # fmt: skip
        self.cache = PatchCaches(dict(cache.items()), {}, torch.empty(0), torch.empty(0))
        _, a_clean = writer_outputs(model, t.clean, self.graph)
        corr_logits, a_corr = writer_outputs(model, t.corrupted, self.graph)
        self.delta = a_corr - a_clean  # [batch pos writer d_model]
        del a_clean, a_corr
        clean_end = end_logits(clean_logits, t.end)
        self.metric = resid_metric(model.bridge, t, clean_end)
        self.end = t.end.to(model.device)
        self.m_clean = metric_fn(t, clean_end)(clean_end)  # [batch]
        self.m_corr = metric_fn(t, clean_end)(end_logits(corr_logits, t.end))
        self.final = self.cache.clean[hooks.final_resid(self.rp.n_layers)]

    @torch.no_grad()
    def check_null(self) -> None:
        """Every kind of input, patched with a zero difference, must give back the clean metric."""
        zero = torch.zeros_like(self.delta[:, :, :1]).permute(2, 0, 1, 3)
        kinds = {(r.kind, r.layer) for r in self.graph.readers}
        worst = 0.0
        for reader in self.graph.readers:
            key = (reader.kind, reader.layer)
            if key not in kinds:
                continue
            kinds.discard(key)
            got = self.reader_pass(reader, zero)[0]
            worst = max(worst, float((got - self.m_clean).abs().max()))
        if worst > 1e-3 * max(1.0, float(self.m_clean.abs().max())):
            raise WorkbenchError(f"exact edge patching cannot replay {self.model.info.name} (off by {worst:.3g}); "
                                 "use interp.circuits.edges.edge_effects_reference")  # fmt: skip

    def reader_pass(self, reader: Reader, delta: Float[Tensor, "variant batch pos d_model"]) -> Float[Tensor, "variant batch"]:
        """The metric per prompt with input `reader` shifted by each variant's `delta`."""
        rp, c = self.rp, self.cache.clean
        if reader.kind == "logits":  # the final residual stream at END alone
            S = len(delta)
            at_end = gather_pos(delta.flatten(0, 1), self.end.repeat(S)[:, None]).view(S, -1, delta.shape[-1])
            return self.metric(gather_pos(self.final, self.end[:, None])[:, 0] + at_end)
        layer = reader.layer
        if reader.kind == "mlp":
            new = rp.mlp(layer, c[hooks.name("resid_mid", layer)] + delta)
            return self.finish(layer + 1, self.resid_after(layer) - c[hooks.name("mlp_out", layer)] + new)
        normed = rp.ln1(layer, c[hooks.name("resid_pre", layer)] + delta)
        a = rp.attn(layer)
        B, T = delta.shape[1], delta.shape[2]
        pos = torch.arange(T, device=delta.device).expand(B, T)
        cos, sin = rp.cos_sin(self.cache, layer, pos)
        g = reader.head if reader.kind != "q" else rp.kv_of(reader.head)
        heads = [reader.head] if reader.kind == "q" else list(range(g * (rp.n_heads // rp.n_kv), (g + 1) * (rp.n_heads // rp.n_kv)))
        qc = rp.clean_qkv(self.cache, layer, "q")[:, :, heads][None]
        kc = rp.clean_qkv(self.cache, layer, "k")[:, :, g : g + 1][None]
        vc = c[hooks.name("v", layer)][:, :, g : g + 1][None]

        def proj(which: str, index: int) -> Tensor:
            W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[which]
            out = einops.einsum(normed, W[index], "s b p d_model, d_model e -> s b p e")[:, :, :, None]
            return out if b is None else out + b[index]

        if reader.kind == "q":
            qc = rp.rotate(proj("q", reader.head), cos, sin)
        elif reader.kind == "k":
            kc = rp.rotate(proj("k", g), cos, sin)
        else:
            vc = proj("v", g)
        z = rp.causal_attend(qc.expand(len(delta), *qc.shape[1:]), kc, vc, pos)  # [s b p heads e]
        dz = z - c[hooks.name("z", layer)][:, :, heads][None]
        mid = c[hooks.name("resid_mid", layer)] if rp.has_mlp else self.resid_after(layer)
        mid = mid + einops.einsum(dz, a.W_O[heads], "s b p h e, h e d_model -> s b p d_model")
        X = mid + rp.mlp(layer, mid) if rp.has_mlp else mid
        return self.finish(layer + 1, X)

    def resid_after(self, layer: int) -> Tensor:
        L = self.rp.n_layers
        return self.cache.clean[hooks.name("resid_pre", layer + 1)] if layer + 1 < L else self.final

    def finish(self, first: int, X: Tensor) -> Tensor:
        """Blocks `first`.. on X (the last one at END only), then the metric."""
        L = self.rp.n_layers
        for layer in range(first, L):
            X = self.rp.layer(self.cache, layer, X, end=self.end if layer == L - 1 else None)
        if first >= L:  # X is the final residual stream at every position
            X = gather_pos(X.flatten(0, 1), self.end.repeat(len(X))[:, None]).view(len(X), -1, 1, X.shape[-1])
        return self.metric(X[:, :, 0])

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


def edge_effects(model: Model, task: Task, edges=None, chunk_tokens: int = 8192, progress: Progress | None = None,
                 check: bool = True) -> EdgeScores:  # fmt: skip
    """Exact effects of `edges` (default: every edge) by the batched engine, as EdgeScores (edges
    not asked for score NaN)."""
    patcher = EdgePatcher(model, task)
    if check:
        patcher.check_null()
    graph = patcher.graph
    idx = _selection(graph, edges)
    scores = torch.full((graph.n_edges,), float("nan"))
    scores[idx] = patcher.effects(idx, chunk_tokens, progress)
    return _scores(graph, scores, patcher.task, float(patcher.m_clean.mean()), float(patcher.m_corr.mean()), "exact")
