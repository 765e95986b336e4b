"""The ablation engine behind faithfulness (interp.circuits.faithfulness): the model with every
edge outside a circuit ablated.

One forward per circuit (`Ablator.run`), on the bridge's own forward pass: hooks keep every writer's
output minus its replacement (writer-major, in place), and each input whose circuit edges differ
from "all" is rebuilt from whichever side is smaller -- base + the circuit's edges into it (base:
the input with everything ablated) or the current input - its ablated edges -- and only its
projection (a head's q, a KV head's k or v before rotary, an MLP's normalized input) is recomputed
from it. An input with no circuit edge takes the fully ablated projection, cached (under
counterfactual ablation: the corrupted run's own); an input with every edge kept keeps the
bridge's. Each layer reads the writers' differences once: one matmul sums every rebuilt attention
input of the layer together with its MLP input's part from the writers before the layer (the
layer's own heads are added at the MLP); the rebuilt inputs are normalized together and projected
by one batched matmul with the stacked W_Q/W_K/W_V rows. Exact shortcuts: the pass stops at the
final residual stream and only END goes through the final norm and the unembedding (the metric
reads nothing else); an MLP that no circuit edge leaves is not computed at all -- nobody reads
it through the circuit, so it returns its replacement (its difference is zero and weighs nothing);
a q/k/v linear whose every head is rebuilt or fully ablated skips its matmul, and in float32 a
layer's output projection is the sum of the per-head outputs the differences need anyway; under
counterfactual ablation, before the first position where any clean prompt differs from its
corrupted one (S2 under IOI's S2 -> IO) every run agrees, so differences, sums and rebuilt
projections cover the positions from there on only.
The circuit's structure is worked out on the CPU before the forward and sent to the device in one
copy per dtype, so the forward never waits on the host.

A curve (`Ablator.run_many`) is the corrupted run, the clean run (the 100 % circuit changes
nothing; both in one batch, the Ablator's reference run) and the other sizes (an empty circuit is
the corrupted run; sizes that prune to the same circuit run once), in one of two ways, picked by
device:
- on an accelerator, where a forward costs its kernel count, every size in ONE forward, stacked
  size-major along the batch (`_Stacked`): each layer's inputs are rebuilt for every size by one
  batched matmul with signed weights [size, input, writer] over that size's rows of the writers'
  differences, base or current per (size, input) by a torch.where, so a curve launches about two
  forwards' kernels; at most `max_rows` prompts x sizes per forward (default: what half the free
  device memory holds), in chunks of sizes beyond;
- on the CPU, which is bound by arithmetic (stacking cuts no FLOPs, and the union of every size's
  rebuilt inputs costs more than each size's own), one forward per size.
The hooks live in interp.circuits.rebuild (one circuit a forward) and interp.circuits.stacked. The plainly written `ablated_reference`
subtracts every excluded edge on its own, through the bridge's split per-input copies
(interp.circuits.readers), and tests hold both ways to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.circuits.graph import Graph, Node
from interp.circuits.readers import (
    check_inputs,
    input_hook,
    layer_inputs,
    split_inputs,
    stack_writers,
    writer_diff_hooks,
    writer_hooks,
    writer_outputs,
)
from interp.circuits.rebuild import (
    _Group,
    _MLPInput,
    _project,
    _readout,
    _replaced_forwards,
    _skipped_mlps,
    _stubbed,
    _Uploads,
    _windowed,
    _windowed_mlps,
)
from interp.circuits.stacked import _Stacked
from interp.data.tasks import Task, as_task, end_logits, metric_fn
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

ABLATIONS: tuple[str, ...] = ("counterfactual", "mean")


class Ablator:
    """A held-out task ready for ablate-outside forwards: the replacement outputs and the inputs
    with everything ablated, the metric, and the clean/empty metric per prompt."""

    @torch.no_grad()
    def __init__(self, model: Model, task: Task, ablation: str = "counterfactual", mean_task: Task | None = None,
                 graph: Graph | None = None):  # fmt: skip
        if ablation not in ABLATIONS:
            raise WorkbenchError(f"unknown ablation {ablation!r}; choose 'counterfactual' or 'mean'")
        if ablation == "mean" and mean_task is None:
            raise WorkbenchError("mean ablation needs prompts to average over (the scoring prompts)")
        self.model, self.task, self.ablation = model, as_task(task), ablation
        self.graph = graph or Graph.of(model)
        self.t0 = self._first_difference() if ablation == "counterfactual" else 0
        ref_cache, ref_logits, clean_logits, a_ref = self._reference_run()
        if ablation == "counterfactual":
            self.replacement = a_ref  # [batch pos writer d]
        else:
            self.replacement = _means(model, as_task(mean_task), self.graph)[None, None]  # [1 1 writer d]
        self.clean_end = clean_logits
        self.metric = metric_fn(self.task, self.clean_end)
        self.m_full = self.metric(self.clean_end)  # the whole graph is the clean run
        self._fully_ablated_inputs(ref_cache, a_ref)
        self.m_corrupted = self.metric(ref_logits) if ablation == "counterfactual" else None
        self.rep_w = self.replacement.permute(2, 0, 1, 3).contiguous()  # [writer batch|1 pos|1 d]
        self._rep_window = self.rep_w[:, :, self.t0 :].contiguous() if self.t0 else self.rep_w
        self._attn_before = {layer: ref_cache[hooks.name("attn_out", layer)][:, : self.t0]
                             for layer in range(model.info.n_layers)} if self.t0 else {}  # fmt: skip
        self._layout()

    def _first_difference(self) -> int:
        """The first position at which some clean prompt differs from its corrupted one (at most the
        earliest END). Before it every activation of the clean, the corrupted and any ablated run is
        the same (a causal model reads only earlier positions), so every writer's difference is
        exactly zero there: the one-circuit forwards rebuild inputs from this position on only."""
        t = self.task
        differs = (t.clean != t.corrupted).any(0).nonzero().flatten()
        first = int(differs[0]) if len(differs) else t.clean.shape[1]
        return min(first, int(t.end.min()))

    def _reference_run(self):
        """One run of the reference prompts keeping their inputs, projections and writers: (cache,
        reference logits at END, clean logits at END, writers [batch pos writer d]); the pass stops at
        the final residual stream and only END is read out. Under counterfactual ablation
        the reference is the corrupted run and the clean prompts ride in the same batch (one forward
        instead of two); under mean ablation the reference is the clean run."""
        model, t, L = self.model, self.task, self.model.info.n_layers
        names = [hooks.name("resid_pre", layer) for layer in range(L)] + [hooks.final_resid(L)]
        names += [hooks.name("resid_mid", layer) for layer in range(L)] if self.graph.has_mlp else []
        projections = [hooks.name(k, layer) for layer in range(L) for k in "qkv"]
        projections += [f"blocks.{layer}.mlp.hook_in" for layer in range(L)] if self.graph.has_mlp else []
        both = self.ablation == "counterfactual"
        names += projections if both else []
        names += [hooks.name("attn_out", layer) for layer in range(L)] if both and self.t0 else []
        B = len(t.clean)
        ref_tokens = torch.cat([t.corrupted, t.clean]) if both else t.clean
        ref_cache: dict[str, Tensor] = {}

        final: dict[str, Tensor] = {}

        def keep(name: str):
            def hook(x, hook=None):
                ref_cache[name] = x.detach()[:B]
                if name == hooks.final_resid(L):
                    final["x"] = x.detach()

            return hook

        sink: dict[int, Tensor] = {}
        hooks.run_until(model, ref_tokens, [(n, keep(n)) for n in names] +
                        writer_hooks(model, self.graph, sink.__setitem__, rows=B), hooks.final_resid(L))  # fmt: skip
        a_ref = stack_writers(sink, len(self.graph.writers))
        end = t.end.to(final["x"].device).repeat(2 if both else 1)
        logits = _readout(model, final["x"][torch.arange(len(end), device=end.device), end])  # [batch vocab], END only
        return ref_cache, logits[:B], (logits[B:] if both else logits[:B]), a_ref

    def _fully_ablated_inputs(self, ref_cache: dict[str, Tensor], a_ref: Tensor) -> None:
        """`base`: each input with every edge into it ablated; `projected`: what that input projects
        to (q/k/v before rotary, the MLP's normalized input) -- the corrupted run's own under
        counterfactual ablation, computed from the base under mean ablation."""
        model, L, mean = self.model, self.model.info.n_layers, self.ablation == "mean"
        self.base = {}
        for name, kind, layer, idx in layer_inputs(self.graph):
            ref = {"mlp": hooks.name("resid_mid", layer), "logits": hooks.final_resid(L)}.get(kind, hooks.name("resid_pre", layer))
            x = ref_cache[ref]
            if mean:  # the input with every earlier writer at its mean
                n = self.graph.n_writers_before(self.graph.readers[int(idx[0])])
                x = x - (a_ref[:, :, :n] - self.replacement[:, :, :n]).sum(2)
            self.base[name] = x
        self.projected = {}
        for layer in range(L):
            block, x = model.bridge.blocks[layer], self.base[input_hook("q", layer)]
            for k in "qkv":
                self.projected[hooks.name(k, layer)] = _project(block, k, block.ln1(x)) if mean else ref_cache[hooks.name(k, layer)]
            if self.graph.has_mlp:
                name = f"blocks.{layer}.mlp.hook_in"
                self.projected[name] = block.ln2(self.base[input_hook("mlp", layer)]) if mean else ref_cache[name]

    def _layout(self) -> None:
        """Where each layer's inputs sit among the readers, how many writers come before them, and
        the writers each of writer_diff_hooks' hooks fills (worked out once, on the CPU)."""
        g, L = self.graph, self.model.info.n_layers
        self._src, self._dst = g.src.cpu(), g.dst.cpu()

        def first(idx: Tensor) -> int:
            return g.n_writers_before(g.readers[int(idx[0])])

        attn = [torch.cat([g.layer_readers(layer, k) for k in "qkv"]) for layer in range(L)]
        self._attn_inputs = [(idx, first(idx)) for idx in attn]
        mlp = [g.layer_readers(layer, "mlp") for layer in range(L)] if g.has_mlp else []
        self._mlp_inputs = [(idx, first(idx)) for idx in mlp] if g.has_mlp else [(None, 0)] * L
        self._logits_input = g.layer_readers(0, "logits")
        dev = self.model.device
        self._end_at = (torch.arange(len(self.task.end), device=dev), self.task.end.to(dev))  # each prompt's END
        self._base_end = self.base[input_hook("logits", None)][self._end_at]
        self._stacked: dict[int, tuple] = {}
        where = g.writer_index()
        self._writer_span = {hooks.name("resid_pre", 0): (0, 1)}
        for layer in range(L):
            h0 = where[Node("head", layer, 0)]
            self._writer_span[hooks.name("z", layer)] = (h0, h0 + g.n_heads)
            if g.has_mlp:
                m = where[Node("mlp", layer)]
                self._writer_span[hooks.name("mlp_out", layer)] = (m, m + 1)
        self._mlp_writer = {layer: where[Node("mlp", layer)] for layer in range(L)} if g.has_mlp else {}
        # the output projection can be skipped where its input's per-head products are summed exactly
        # as the bridge would (float32; in bf16 nine rounded products are not the bridge's one matmul)
        self._o_windowed = all(getattr(getattr(b.attn, "o", None), "original_component", None) is not None
                               for b in self.model.bridge.blocks)  # fmt: skip
        self._o_from_heads = self.rep_w.dtype in (torch.float32, torch.float64) and self._o_windowed
        can_skip = all(hasattr(self.model.bridge.blocks[layer].mlp, "hook_out") for layer in self._mlp_writer)
        self._mlp_rep = {layer: self.rep_w[w] for layer, w in self._mlp_writer.items()} if can_skip else {}

    @torch.no_grad()
    def run(self, keep: Bool[Tensor, "edge"]) -> Float[Tensor, "batch"]:
        """The metric per prompt with every edge outside `keep` ablated (one forward)."""
        keep = keep.detach().to("cpu", torch.bool)
        known, _ = self._distinct([keep])  # nothing ablated: the clean run; everything: the corrupted run
        if known[0] is not None:
            return known[0]
        fwd, got, skipped, stubs = self._plan(keep)
        computed = {layer: self.rep_w[w][:, : self.t0] for layer, w in self._mlp_writer.items()
                    if layer not in skipped} if self.t0 else {}  # fmt: skip
        forwards = {**_skipped_mlps(self.model, skipped), **_windowed_mlps(self.model, computed, self.t0), **_stubbed(stubs)}
        with _replaced_forwards(forwards):
            hooks.run_until(self.model, self.task.clean, fwd, hooks.final_resid(self.graph.n_layers))
        return self.metric(_readout(self.model, got["x"]))

    def _plan(self, keep: Bool[Tensor, "edge"]) -> tuple[list, dict[str, Tensor], dict[int, Tensor], dict]:
        """The hooks of one ablated forward, where its logits' input at END will be put, the MLPs not
        computed (their outputs) and the linears whose matmul is skipped (`_stubbed`: a q/k/v linear
        whose every head is replaced; in float32, the output projection of a layer whose head outputs
        are computed anyway, which then returns their sum): the circuit's structure is worked out on
        the CPU (no device round trips during the forward)."""
        g, model = self.graph, self.model
        dev = model.device
        M = torch.zeros(len(g.writers), len(g.readers), dtype=torch.bool)
        M[self._src, self._dst] = keep
        B, T = self.task.clean.shape
        t0 = self.t0  # writers' differences from the first differing position on (zero before it)
        diff = torch.empty(len(g.writers), B, T - t0, model.info.d_model, dtype=self.rep_w.dtype, device=dev)
        fwd: list = []
        current: dict[str, Tensor] = {}
        up, groups, stubs = _Uploads(dev), [], {}

        def remember(name: str):
            def hook(x, hook=None):
                current[name] = x

            return hook

        skipped = self._unread_mlps(M)
        zero = torch.zeros(len(g.writers), dtype=torch.bool)
        zero[[self._mlp_writer[layer] for layer in skipped]] = True
        for layer, ((idx, n), (midx, mn)) in enumerate(zip(self._attn_inputs, self._mlp_inputs)):
            pre = hooks.name("resid_pre", layer)
            mlp = _MLPInput(M[:mn, midx], n, diff, up, zero, t0) if g.has_mlp and layer not in skipped else None
            group = _Group(M[:n, idx], diff, up, mlp.tail if mlp is not None else None, zero, t0)
            if mlp is not None:
                mlp.settle(group)
            groups += [group] if mlp is None else [group, mlp]
            fwd += group.pre_hooks(pre, current)
            fwd += group.attention_hooks(layer, self._qkv(layer), self.base[input_hook("q", layer)], current, pre,
                                         [self.projected[hooks.name(k, layer)] for k in "qkv"], g.n_heads, g.n_kv,
                                         model.bridge.blocks[layer].attn, stubs)  # fmt: skip
            if mlp is not None and (mlp.active or mlp.inside):
                mid = hooks.name("resid_mid", layer)
                fwd += [(mid, remember(mid))] if mlp.active and not mlp.inside else []
                fwd.append((f"blocks.{layer}.mlp.hook_in", mlp.hook(model.bridge.blocks[layer], self.base[input_hook("mlp", layer)],
                                                                     current, mid, self.projected[f"blocks.{layer}.mlp.hook_in"])))  # fmt: skip
        final, got = _Group(M[:, self._logits_input], diff, up, zero=zero, t0=t0), {}
        fwd.append((hooks.final_resid(g.n_layers), final.end_hook(self._base_end, self._end_at, got)))
        groups.append(final)
        up.send()
        read = torch.zeros(len(g.writers), dtype=torch.bool)  # the writers whose differences some sum reads
        for group in groups:
            group.mark_read(read)
        # writer outputs minus their replacements, first, and only for the writers read; in float32
        # a layer's attention output is then the sum of its head outputs (no second matmul)
        heads_read = [layer for layer in range(g.n_layers) if bool(read[slice(*self._writer_span[hooks.name("z", layer)])].any())]
        sums: dict[int, Tensor | None] = dict.fromkeys(heads_read if self._o_from_heads else [])
        if t0 and self._o_windowed:  # every other output projection: its matmul from t0 on only
            for layer in range(g.n_layers):
                if layer not in sums:
                    o = model.bridge.blocks[layer].attn.o
                    stubs[o] = _windowed(o, self._attn_before[layer], t0)
        for layer in sums:
            o = model.bridge.blocks[layer].attn.o

            def attn_out(z, layer=layer, bias=o.original_component.bias):
                out = sums.pop(layer) if bias is None else sums.pop(layer) + bias
                return torch.cat([self._attn_before[layer].to(out.dtype), out], 1) if t0 else out

            stubs[o] = attn_out
        fwd = [(name, h) for name, h in writer_diff_hooks(model, g, diff, self._rep_window, sums, t0)
               if bool(read[slice(*self._writer_span[name])].any())] + fwd  # fmt: skip
        return fwd, got, {layer: self._mlp_rep[layer] for layer in skipped}, stubs

    def _unread_mlps(self, M: Tensor) -> list[int]:
        """The layers whose MLP is not computed, because it would write exactly its replacement
        ([writer reader] `M`): no circuit edge leaves it (nobody reads it through the circuit), or,
        under counterfactual ablation, none enters it (it reads the corrupted run's own input, so it
        writes the corrupted run's own output)."""
        if not self._mlp_rep:
            return []
        fed = self.ablation == "counterfactual"
        return [layer for layer, w in self._mlp_writer.items()
                if not bool(M[w].any()) or (fed and not bool(M[:, int(self._mlp_inputs[layer][0][0])].any()))]  # fmt: skip

    @torch.no_grad()
    def run_many(self, keeps: list[Tensor], stacked: bool | None = None, max_rows: int | None = None,
                 progress: Progress | None = None) -> Float[Tensor, "size batch"]:  # fmt: skip
        """The metric per prompt for each circuit of `keeps` ([size batch]). The full circuit is the
        clean run, an empty one under counterfactual ablation the corrupted run, and circuits that
        are equal run once. `stacked` (default: on any device but the CPU) runs the rest in one
        forward with the circuits stacked along the batch (`_Stacked`), at most `max_rows` prompts x
        circuits per forward (default: what half the free accelerator memory holds; chunks of
        circuits otherwise); else one forward per circuit (`run`). `progress` hears after each forward
        (circuits done, of all)."""
        keeps = [k.detach().to("cpu", torch.bool) for k in keeps]
        out, groups = self._distinct(keeps)
        stacked = self.model.device.type != "cpu" if stacked is None else stacked
        per = max(1, (max_rows or self._fitting_rows()) // len(self.task)) if stacked else 1
        for c in range(0, len(groups), per):
            chunk = groups[c : c + per]
            if stacked:
                got = _Stacked(self, torch.stack([keeps[ids[0]] for ids in chunk])).run()
            else:
                got = self.run(keeps[chunk[0][0]])[None]
            for j, ids in enumerate(chunk):
                for i in ids:
                    out[i] = got[j]
            if progress:
                progress(len(keeps) - sum(len(ids) for ids in groups[c + per :]), len(keeps), "faithfulness")
        if not out:
            return self.m_full.new_zeros(0, len(self.task))
        return torch.stack(out)

    def _distinct(self, keeps: list[Tensor]) -> tuple[list[Tensor | None], list[list[int]]]:
        """(the metric of each circuit known without a forward, else None; the indices of each
        distinct circuit left to run)."""
        out: list[Tensor | None] = [None] * len(keeps)
        todo: dict[bytes, list[int]] = {}
        for i, k in enumerate(keeps):
            if bool(k.all()):
                out[i] = self.m_full
            elif self.m_corrupted is not None and not bool(k.any()):
                out[i] = self.m_corrupted
            else:
                todo.setdefault(k.numpy().tobytes(), []).append(i)
        return out, list(todo.values())

    def _fitting_rows(self) -> int:
        """How many prompts x circuits one stacked forward holds in half the free accelerator memory
        (every writer's difference, a layer's rebuilt inputs and MLP activations per row); 4 GiB on
        the CPU."""
        info, g = self.model.info, self.graph
        T, size = self.task.clean.shape[1], self.rep_w.element_size()
        per_row = T * size * (info.d_model * (len(g.writers) + 4 * (g.n_heads + 2 * g.n_kv) + 8) + 4 * (info.d_mlp or 0))
        dev = torch.device(self.model.device)
        free = torch.cuda.mem_get_info(dev)[0] // 2 if dev.type == "cuda" else 4 * 2**30
        return max(1, int(free // per_row))

    def _qkv(self, layer: int) -> tuple:
        """(ln1, W [q heads + k heads + v heads, d_model, d_head], b or None) of one layer, stacked once
        per Ablator (the weights are read when first needed and must not change while it lives)."""
        if layer not in self._stacked:
            block = self.model.bridge.blocks[layer]
            a = block.attn
            W = torch.cat([a.W_Q, a.W_K, a.W_V], 0)
            bs = [a.b_Q, a.b_K, a.b_V]
            b = None if all(x is None for x in bs) else torch.cat(
                [x if x is not None else torch.zeros(w.shape[0], w.shape[2], dtype=w.dtype, device=w.device)
                 for x, w in zip(bs, (a.W_Q, a.W_K, a.W_V))], 0)  # fmt: skip
            self._stacked[layer] = (block.ln1, W, b)
        return self._stacked[layer]


@torch.no_grad()
def _means(model: Model, task: Task, graph: Graph) -> Float[Tensor, "writer d_model"]:
    """Each writer's output averaged over every real position (up to END) of `task`'s clean prompts."""
    _, a = writer_outputs(model, task.clean, graph)
    real = torch.arange(a.shape[1], device=a.device)[None, :] <= task.end.to(a.device)[:, None]  # [batch pos]
    return (a * real[:, :, None, None]).sum((0, 1)) / real.sum()


@torch.no_grad()
def ablated_reference(model: Model, task: Task, keep: Bool[Tensor, "edge"], ablation: str = "counterfactual",
                      mean_task: Task | None = None) -> Float[Tensor, "batch"]:  # fmt: skip
    """The same as `Ablator.run`, written plainly: every excluded edge subtracted on its own, in a
    Python loop over edges, from the writers' outputs captured in the same forward."""
    task = as_task(task)
    graph = Graph.of(model)
    check_inputs(model)
    _, corr = writer_outputs(model, task.corrupted, graph)
    rep = corr if ablation == "counterfactual" else _means(model, mean_task, graph)[None, None].expand_as(corr)
    sink: dict[int, Tensor] = {}
    excluded: dict[int, list[int]] = {}
    for e in (~keep).nonzero().flatten().tolist():
        excluded.setdefault(int(graph.dst[e]), []).append(int(graph.src[e]))

    def live(w: int) -> Tensor:
        first = max(k for k in sink if k <= w)
        return sink[first][:, :, w - first]

    fwd = list(writer_hooks(model, graph, sink.__setitem__))
    for name, kind, _, idx in layer_inputs(graph):

        def hook(x, hook=None, idx=idx, kind=kind):
            x = x.clone()
            for j, r in enumerate(idx.tolist()):
                for w in excluded.get(r, []):
                    d = live(w) - rep[:, :, w]
                    if kind in ("q", "k", "v"):
                        x[:, :, j] -= d
                    else:
                        x -= d
            return x

        fwd.append((name, hook))
    with split_inputs(model):
        logits = model.run_with_hooks(task.clean, fwd_hooks=fwd)
    clean_end = end_logits(model(task.clean), task.end)
    return metric_fn(task, clean_end)(end_logits(logits, task.end))
