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
by one batched matmul with the stacked W_Q/W_K/W_V rows. Two exact shortcuts: the pass stops at the
final residual stream and only END goes through the final norm and the unembedding (the metric
reads nothing else), and an MLP that no circuit edge leaves is not computed at all -- nobody reads
it through the circuit, so it returns its replacement (its difference is zero and weighs nothing).
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
The plainly written `ablated_reference` subtracts every excluded edge on its own, through the
bridge's split per-input copies (interp.circuits.readers), and tests hold both ways to it.
"""

from __future__ import annotations

from contextlib import contextmanager
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
        self._layout()

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
        can_skip = all(hasattr(self.model.bridge.blocks[layer].mlp, "hook_out") for layer in self._mlp_writer)
        self._mlp_rep = {layer: self.rep_w[w] for layer, w in self._mlp_writer.items()} if can_skip else {}

    @torch.no_grad()
    def run(self, keep: Bool[Tensor, "edge"]) -> Float[Tensor, "batch"]:
        """The metric per prompt with every edge outside `keep` ablated (one forward)."""
        keep = keep.detach().to("cpu", torch.bool)
        known, _ = self._distinct([keep])  # nothing ablated: the clean run; everything: the corrupted run
        if known[0] is not None:
            return known[0]
        fwd, got, skipped = self._plan(keep)
        with _skipped_mlps(self.model, skipped):  # nothing after the final residual stream is read
            hooks.run_until(self.model, self.task.clean, fwd, hooks.final_resid(self.graph.n_layers))
        return self.metric(_readout(self.model, got["x"]))

    def _plan(self, keep: Bool[Tensor, "edge"]) -> tuple[list, dict[str, Tensor], dict[int, Tensor]]:
        """The hooks of one ablated forward, where its logits' input at END will be put, and the
        MLPs not computed (their outputs): the circuit's structure is worked out on the CPU (no device
        round trips during the forward)."""
        g, model = self.graph, self.model
        dev = model.device
        M = torch.zeros(len(g.writers), len(g.readers), dtype=torch.bool)
        M[self._src, self._dst] = keep
        B, T = self.task.clean.shape
        diff = torch.empty(len(g.writers), B, T, model.info.d_model, dtype=self.rep_w.dtype, device=dev)
        fwd: list = []
        current: dict[str, Tensor] = {}
        up, groups = _Uploads(dev), []

        def remember(name: str):
            def hook(x, hook=None):
                current[name] = x

            return hook

        skipped = self._unread_mlps(M)
        zero = torch.zeros(len(g.writers), dtype=torch.bool)
        zero[[self._mlp_writer[layer] for layer in skipped]] = True
        for layer, ((idx, n), (midx, mn)) in enumerate(zip(self._attn_inputs, self._mlp_inputs)):
            pre = hooks.name("resid_pre", layer)
            mlp = _MLPInput(M[:mn, midx], n, diff, up, zero) if g.has_mlp and layer not in skipped else None
            group = _Group(M[:n, idx], diff, up, mlp.tail if mlp is not None else None, zero)
            if mlp is not None:
                mlp.settle(group)
            groups += [group] if mlp is None else [group, mlp]
            fwd += group.pre_hooks(pre, current)
            fwd += group.attention_hooks(layer, self._qkv(layer), self.base[input_hook("q", layer)], current, pre,
                                         [self.projected[hooks.name(k, layer)] for k in "qkv"], g.n_heads, g.n_kv)  # fmt: skip
            if mlp is not None and (mlp.active or mlp.inside):
                mid = hooks.name("resid_mid", layer)
                fwd += [(mid, remember(mid))] if mlp.active and not mlp.inside else []
                fwd.append((f"blocks.{layer}.mlp.hook_in", mlp.hook(model.bridge.blocks[layer], self.base[input_hook("mlp", layer)],
                                                                     current, mid, self.projected[f"blocks.{layer}.mlp.hook_in"])))  # fmt: skip
        final, got = _Group(M[:, self._logits_input], diff, up, zero=zero), {}
        fwd.append((hooks.final_resid(g.n_layers), final.end_hook(self._base_end, self._end_at, got)))
        groups.append(final)
        up.send()
        read = torch.zeros(len(g.writers), dtype=torch.bool)  # the writers whose differences some sum reads
        for group in groups:
            group.mark_read(read)
        # writer outputs minus their replacements, first, and only for the writers read
        fwd = [(name, h) for name, h in writer_diff_hooks(model, g, diff, self.rep_w)
               if bool(read[slice(*self._writer_span[name])].any())] + fwd  # fmt: skip
        return fwd, got, {layer: self._mlp_rep[layer] for layer in skipped}

    def _unread_mlps(self, M: Tensor) -> list[int]:
        """The layers whose MLP no circuit edge leaves ([writer reader] `M`): nobody reads it
        through the circuit, so it outputs exactly its replacement and is not computed."""
        if not self._mlp_rep:
            return []
        return [layer for layer, w in self._mlp_writer.items() if not bool(M[w].any())]

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


@contextmanager
def _skipped_mlps(model: Model, outputs: dict[int, Tensor]):
    """Inside the block, the MLPs of the layers in `outputs` are not computed: each returns its
    given output ([batch|1 pos|1 d_model], broadcast to its input's shape) through its hook_out, so
    the hooks on hook_mlp_out still see it."""
    blocks = model.bridge.blocks
    try:
        for layer, out in outputs.items():
            mlp = blocks[layer].mlp

            def skip(x, *args, mlp=mlp, out=out, **kwargs):
                return mlp.hook_out(out.to(x.dtype).expand(*x.shape[:-1], out.shape[-1]))

            object.__setattr__(mlp, "forward", skip)  # on the bridge itself (its __setattr__ would pass it to HF's)
        yield
    finally:
        for layer in outputs:
            blocks[layer].mlp.__dict__.pop("forward", None)


def _readout(model: Model, resid_end: Float[Tensor, "row d_model"]) -> Float[Tensor, "row vocab"]:
    """Logits from final residual streams at END only: the bridge's final norm and unembedding on
    those rows (the positions before END are never read out)."""
    return model.bridge.unembed(model.bridge.ln_final(resid_end[:, None]))[:, 0]


def _project(block, kind: str, normed: Tensor) -> Tensor:
    """q, k or v (before rotary) of normalized inputs [..., d_model] -> [..., head, d_head], every head."""
    a = block.attn
    W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[kind]
    out = torch.einsum("...d,hde->...he", normed, W.to(normed.dtype))
    return out if b is None else out + b.to(out.dtype)


def _signed(sub: Tensor, zero: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(inside [reader], signed weights [writer reader]) of inputs with the circuit's edges `sub`
    ([writer reader], True = kept, on the CPU): each input sums the smaller side, + its kept edges
    from the fully ablated input ("inside") or - its ablated edges from its current residual stream.
    Writers in `zero` ([writer]) output exactly their replacement (`_skipped_mlps`): no weight."""
    kept = sub.sum(0)
    inside = kept <= sub.shape[0] - kept
    w = torch.where(inside[None, :], sub.float(), -(~sub).float())
    if zero is not None:
        w[zero[: len(w)]] = 0
    return inside, w


class _Uploads:
    """The small CPU tensors (indices, signed weights) one forward's hooks read on the device, sent
    in one copy per dtype before the forward (each separate copy to an accelerator waits for it)."""

    def __init__(self, device: torch.device):
        self.device, self.cpu, self.dev = torch.device(device), [], []

    def add(self, t: Tensor) -> int:
        self.cpu.append(t)
        return len(self.cpu) - 1

    def send(self) -> None:
        if self.device.type == "cpu":
            self.dev = self.cpu
            return
        self.dev = [None] * len(self.cpu)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(self.cpu):
            by_dtype.setdefault(t.dtype, []).append(i)
        for ids in by_dtype.values():
            flat = torch.cat([self.cpu[i].reshape(-1) for i in ids]).to(self.device)
            for i, part in zip(ids, flat.split([self.cpu[i].numel() for i in ids])):
                self.dev[i] = part.view(self.cpu[i].shape)

    def __getitem__(self, i: int) -> Tensor:
        return self.dev[i]


class _Group:
    """The inputs of one layer's attention (q heads, then k and v heads), of the logits or the part of
    an MLP's input from the writers before its layer (`tail`), with the circuit's edges among the n
    writers before them (`sub` [writer reader], True = kept, on the CPU). Each input is rebuilt from
    the smaller side (`_signed`). An input left exactly at one end is not recomputed: the fully
    ablated one takes its cached projection, an untouched one keeps the bridge's own. The inputs with
    a non-empty sum (`active`, inside ones first) and the tail are summed by one matmul over the
    writers' differences (each layer reads them once); the active ones are normalized once and
    projected by one batched matmul."""

    def __init__(self, sub: Tensor, diff: Tensor, up: _Uploads, tail: Tensor | None = None, zero: Tensor | None = None):
        self.n, self.diff, self.up = sub.shape[0], diff, up
        inside, w = _signed(sub, zero)
        summed = w.ne(0).any(0)
        act_in, act_out = (summed & inside).nonzero().flatten(), (summed & ~inside).nonzero().flatten()
        self.active = torch.cat([act_in, act_out])  # [active] reader columns, inside ones first
        self.n_in, self.n_act = len(act_in), len(self.active)
        self.ablated = (inside & ~summed).nonzero().flatten()  # columns that take the fully ablated projection
        w = w[:, self.active]
        rows = w.ne(0).any(1).nonzero().flatten()
        gather = 3 * len(rows) < self.n  # gathering a few rows beats reading them all
        # the MLP's earlier part rides along only when every row is read anyway
        self.has_tail = tail is not None and self.n_act > 0 and not gather
        if self.has_tail:
            w = torch.cat([w, tail[:, None]], 1)
        self.rows = up.add(rows) if gather else None
        self.w = up.add((w[rows] if gather else w).to(diff.dtype))  # [rows|n active(+tail)]
        self.inside0 = bool(inside[0]) if len(inside) else True
        self.done: dict[str, Tensor] = {}

    def mark_read(self, read: Tensor) -> None:
        """Mark the writers whose differences `sums` reads."""
        if not (self.n_act or self.has_tail):
            return
        if self.rows is None:
            read[: self.n] = True
        else:
            read[self.up.cpu[self.rows]] = True

    def sums(self, at: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The signed sums of the active inputs (and the tail) [active(+1) batch pos d], or at the
        positions `at` only ((batch index, position) -> [active(+1) row d])."""
        part = self.diff[: self.n] if self.rows is None else self.diff[: self.n].index_select(0, self.up[self.rows])
        if at is not None:
            part = part[:, at[0], at[1]]
        w = self.up[self.w]
        return (w.T @ part.reshape(part.shape[0], -1)).view(w.shape[1], *part.shape[1:])

    def rebuilt(self, sums: Tensor, base: Tensor, current: Tensor) -> Tensor:
        """The active inputs' residual streams [active batch pos d], in place in `sums`."""
        if self.n_in:
            sums[: self.n_in] += base
        if self.n_in < self.n_act:
            sums[self.n_in : self.n_act] += current
        return sums[: self.n_act]

    def pre_hooks(self, pre: str, current: dict[str, Tensor]) -> list:
        """The hook on the layer's resid_pre, if it has anything to sum: remembers the residual stream
        and sums (every earlier writer is written by then)."""

        def hook(x, hook=None):
            current[pre] = x
            self.done["sums"] = self.sums()
            if self.has_tail:
                self.done["tail"] = self.done["sums"][-1]

        return [(pre, hook)] if self.n_act or self.has_tail else []

    def attention_hooks(self, layer, stacked, base, current, pre, projected, n_heads, n_kv) -> list:
        """The hooks on hook_q, hook_k and hook_v ([batch pos width d_head], before rotary) of the kinds
        with something to replace. The first to need it rebuilds, normalizes and projects every active
        input of the layer (one batched matmul)."""
        ln1, W, b = stacked
        up, spans = self.up, {"q": (0, n_heads), "k": (n_heads, n_kv), "v": (n_heads + n_kv, n_kv)}
        act, abl = self.active.tolist(), self.ablated.tolist()
        which = up.add(self.active)

        def project(dtype: torch.dtype) -> Tensor:
            if "p" not in self.done:
                normed = ln1(self.rebuilt(self.done.pop("sums"), base, current[pre]).to(dtype))
                p = torch.einsum("abtd,ade->abte", normed, W[up[which]].to(normed.dtype))
                self.done["p"] = p if b is None else p + b[up[which]][:, None, None, :].to(p.dtype)
            return self.done["p"]

        out = []
        for kind, proj in zip("qkv", projected):
            start, width = spans[kind]
            mine = [(j, c - start) for j, c in enumerate(act) if start <= c < start + width]
            ablated = [c - start for c in abl if start <= c < start + width]
            if not mine and not ablated:  # every input of this kind keeps the bridge's projection
                continue
            sel = up.add(torch.tensor([j for j, _ in mine], dtype=torch.long))
            heads = up.add(torch.tensor([h for _, h in mine], dtype=torch.long))
            gone = up.add(torch.tensor(ablated, dtype=torch.long))

            def hook(x, hook=None, mine=mine, ablated=ablated, sel=sel, heads=heads, gone=gone, projected=proj):
                if len(ablated) == x.shape[2]:  # the whole kind fully ablated
                    return projected.to(x.dtype, copy=True)
                x = x.clone()
                if ablated:
                    x[:, :, up[gone]] = projected.index_select(2, up[gone]).to(x.dtype)
                if mine:
                    x[:, :, up[heads]] = project(x.dtype).index_select(0, up[sel]).permute(1, 2, 0, 3).to(x.dtype)
                return x

            out.append((hooks.name(kind, layer), hook))
        return out

    def end_hook(self, base_end: Tensor, at: tuple[Tensor, Tensor], got: dict[str, Tensor]):
        """The hook on the final residual stream: puts the logits' input at each prompt's END
        ([batch d], positions `at`) into got["x"] (nothing else of it is read)."""

        def hook(x, hook=None):
            if self.n_act:
                got["x"] = self.rebuilt(self.sums(at), base_end, x[at])[0].to(x.dtype)
            else:
                got["x"] = base_end.to(x.dtype) if self.inside0 else x[at]

        return hook


class _MLPInput:
    """An MLP's input. When its layer's attention sum reads every earlier writer anyway, the MLP's
    edges from them are summed there (`tail`, that group's extra column) and only those from the
    layer's own heads here; otherwise its whole sum is made here (gathering its few rows)."""

    def __init__(self, sub: Tensor, n_before: int, diff: Tensor, up: _Uploads, zero: Tensor | None = None):
        inside, w = _signed(sub, zero)
        self.inside, self.w = bool(inside[0]), w[:, 0]
        self.active = bool(self.w.ne(0).any())
        self.tail = self.w[:n_before] if bool(self.w[:n_before].ne(0).any()) else None
        self.n_before, self.n, self.diff, self.up = n_before, len(self.w), diff, up

    def settle(self, attention: _Group) -> None:
        """Fix which writers this hook sums, once the attention group has taken the tail or not."""
        self.attention = attention
        lo = self.n_before if attention.has_tail else 0
        w = self.w[lo:]
        rows = w.ne(0).nonzero().flatten()
        self.rows = rows + lo if 3 * len(rows) < len(w) else torch.arange(lo, self.n)
        self.part = self.up.add(self.w[self.rows].to(self.diff.dtype)) if len(rows) else None
        self.contiguous = len(self.rows) == self.n - lo
        self.lo, self.idx = lo, self.up.add(self.rows)

    def mark_read(self, read: Tensor) -> None:
        """Mark the writers whose differences the hook reads."""
        if self.active and self.part is not None:
            read[self.rows] = True

    def hook(self, block, base, current, mid, projected):
        """The hook on the MLP's normalized input."""

        def hook(x, hook=None):
            if not self.active:
                return projected.to(x.dtype) if self.inside else x
            s = base if self.inside else current[mid]
            if self.attention.has_tail:
                s = s + self.attention.done.pop("tail")
            if self.part is not None:
                rows = self.diff[self.lo : self.n] if self.contiguous else self.diff.index_select(0, self.up[self.idx])
                s = s + (self.up[self.part] @ rows.reshape(rows.shape[0], -1)).view(s.shape)
            return block.ln2(s.to(x.dtype))

        return hook


class _Stacked:
    """Several circuits in one forward, stacked size-major along the batch (row s * B + b is prompt b
    under circuit s): `Ablator.run`'s hooks with a size axis, for accelerators, where a forward costs
    its kernel count. Each layer's inputs are rebuilt by one batched matmul over the sizes, with
    signed weights [size, writer, input] (`_signed`'s choice per size; the MLP's part from the
    writers before its layer rides along as one more column), base or current stream per (size,
    input) by a torch.where; once any size rebuilds an attention input of a layer, all of them are
    rebuilt for every size (one norm, one projection, no per-head selection), and only a layer
    with every (size, input) at an end swaps in the fully ablated projections by a torch.where. All
    of it is worked out on the CPU and uploaded in one copy per dtype: the forward never waits on
    the host. (MLPs are always computed here: the largest size of a curve reads them all.)"""

    def __init__(self, ab: Ablator, keeps: Bool[Tensor, "size edge"]):
        g, model = ab.graph, ab.model
        self.ab, self.g, self.model, dev = ab, g, model, model.device
        self.S, (self.B, self.T) = len(keeps), ab.task.clean.shape
        M = torch.zeros(self.S, len(g.writers), len(g.readers), dtype=torch.bool)
        M[:, ab._src, ab._dst] = keeps
        self.up, self.read = _Uploads(dev), torch.zeros(len(g.writers), dtype=torch.bool)
        self.diff = torch.empty(len(g.writers), self.S * self.B, self.T, model.info.d_model, dtype=ab.rep_w.dtype, device=dev)
        self.fwd: list = []
        self.done: dict[str, Tensor] = {}
        for layer, ((idx, n), (midx, mn)) in enumerate(zip(ab._attn_inputs, ab._mlp_inputs)):
            self._layer(layer, M[:, :n, idx], M[:, :mn, int(midx[0])] if g.has_mlp else None)
        self._logits(M[:, :, int(ab._logits_input[0])])
        self.up.send()
        self.fwd = self._diff_hooks() + self.fwd

    @torch.no_grad()
    def run(self) -> Float[Tensor, "size batch"]:
        S, B = self.S, self.B
        hooks.run_until(self.model, self.ab.task.clean.repeat(S, 1), self.fwd, hooks.final_resid(self.g.n_layers))
        return self.ab.metric(_readout(self.model, self.done.pop("end")).view(S, B, -1))

    # -- structure, on the CPU -----------------------------------------------------------------------
    @staticmethod
    def _ends(sub: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Inputs with edges `sub` [size, n, input] (True = kept): (inside [size input], signed weights
        [size n input], untouched [size input]: every edge kept, ablated [size input]: none kept)."""
        kept = sub.sum(1)
        inside = kept <= sub.shape[1] - kept  # `_signed`'s choice, for every size at once
        w = torch.where(inside[:, None], sub.float(), -(~sub).float())
        empty = ~w.ne(0).any(1)
        return inside, w, empty & ~inside, empty & inside

    def _mix(self, w: Tensor, lo: int = 0) -> tuple:
        """Upload the weights [size, k, column] of one batched sum over the differences of writers
        lo..lo+k (gathering the rows some weight reads when they are few); marks them read."""
        rows = w.ne(0).any(2).any(0).nonzero().flatten()
        gather = 3 * len(rows) < w.shape[1]
        self.read[rows + lo if gather else slice(lo, lo + w.shape[1])] = True
        k = w.shape[1]
        w = w[:, rows] if gather else w
        weights = self.up.add(w.transpose(1, 2).to(self.diff.dtype).contiguous())  # [size column k]
        return (self.up.add(rows + lo), weights, lo, lo) if gather else (None, weights, lo, lo + k)

    def _layer(self, layer: int, sub: Tensor, msub: Tensor | None) -> None:
        """A layer's hooks. If some size rebuilds some attention input, every attention input of the
        layer is rebuilt for every size (no per-head selection: one sum, one norm, one projection);
        if every (size, input) is at an end, only the fully ablated ones are swapped in. The MLP's
        input likewise."""
        n, S = sub.shape[1], self.S
        inside, w, untouched, ablated = self._ends(sub)
        attn = not bool((untouched | ablated).all())
        columns = w if attn else w[:, :, :0]
        m_active = tail = False
        if msub is not None:
            m_in, m_w, m_un, m_ab = (t.squeeze(-1) for t in self._ends(msub[:, :, None]))
            m_active = not bool((m_un | m_ab).all())
            tail = m_active and bool(m_w[:, :n].ne(0).any())
            if tail:
                columns = torch.cat([columns, m_w[:, :n, None]], 2)
        if columns.shape[2]:
            ins = self.up.add(inside.reshape(S, -1, 1, 1, 1))
            self.fwd.append((hooks.name("resid_pre", layer), self._pre_hook(layer, self._mix(columns), attn, ins, tail)))
        self._attention_hooks(layer, attn, ablated)
        if msub is None or not (m_active or bool(m_ab.any())):
            return
        mid = hooks.name("resid_mid", layer)
        heads = None
        if m_active:
            self.fwd.append((mid, self._remember(mid)))
            heads = self._mix(m_w[:, n:, None], n) if bool(m_w[:, n:].ne(0).any()) else None
        mask = self.up.add((m_in if m_active else m_ab).view(S, 1, 1, 1))
        self.fwd.append((f"blocks.{layer}.mlp.hook_in", self._mlp_hook(layer, heads, mask, m_active, tail)))

    def _logits(self, sub: Tensor) -> None:
        inside, w = (t.squeeze(-1) for t in self._ends(sub[:, :, None])[:2])
        mix = self._mix(w[:, :, None]) if bool(w.ne(0).any()) else None
        ins, dev = self.up.add(inside.view(-1, 1, 1)), self.model.device
        at = (torch.arange(self.S * self.B, device=dev), self.ab.task.end.to(dev).repeat(self.S))

        def hook(x, hook=None):
            r = torch.where(self.up[ins], self.ab._base_end, x[at].view(self.S, self.B, -1))
            if mix is not None:
                r = r + self._sums(mix, at)[:, 0]
            self.done["end"] = r.reshape(self.S * self.B, -1).to(x.dtype)

        self.fwd.append((hooks.final_resid(self.g.n_layers), hook))

    # -- the hooks --------------------------------------------------------------------------------
    def _sums(self, mix: tuple, at: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """sum_w weight[s, w, c] diff[w, rows of size s] -> [size column batch pos d] ([size column
        batch d] at the positions `at`)."""
        rows, w, lo, hi = mix
        part = self.diff[lo:hi] if rows is None else self.diff.index_select(0, self.up[rows])
        if at is not None:
            part = part[:, at[0], at[1]]
        out = torch.bmm(self.up[w], part.reshape(part.shape[0], self.S, -1).transpose(0, 1))
        return out.view(self.S, out.shape[1], self.B, *part.shape[2:])

    def _remember(self, name: str):
        def hook(x, hook=None):
            self.done[name] = x

        return hook

    def _pre_hook(self, layer: int, mix: tuple, attn: bool, ins: int, tail: bool):
        """On the layer's resid_pre: one batched sum; every attention input rebuilt, normalized and
        projected (one batched matmul with the stacked W_Q/W_K/W_V) into [size batch pos input
        d_head]; the MLP's tail kept."""
        base, (ln1, W, b) = self.ab.base[input_hook("q", layer)], self.ab._qkv(layer)
        S, B, n_cols = self.S, self.B, W.shape[0] if attn else 0

        def hook(x, hook=None):
            sums = self._sums(mix)  # [size column batch pos d]
            if tail:
                self.done["tail"] = sums[:, n_cols]
            if attn:
                cur = x.view(S, 1, B, *x.shape[1:])
                normed = ln1((sums[:, :n_cols] + torch.where(self.up[ins], base, cur)).to(x.dtype))
                p = torch.einsum("scbtd,cde->sbtce", normed, W.to(normed.dtype))
                self.done["p"] = p if b is None else p + b.to(p.dtype)

        return hook

    def _attention_hooks(self, layer: int, attn: bool, ablated: Tensor) -> None:
        """The hooks on hook_q, hook_k and hook_v: the rebuilt projections, or (when no size rebuilds
        any input of the layer) the fully ablated projection where an input has no circuit edge."""
        g, S, B, up = self.g, self.S, self.B, self.up
        for kind, start, width in (("q", 0, g.n_heads), ("k", g.n_heads, g.n_kv), ("v", g.n_heads + g.n_kv, g.n_kv)):
            gone = ablated[:, start : start + width]
            if not attn and not bool(gone.any()):
                continue
            gone_i = up.add(gone.view(S, 1, 1, width, 1))
            projected = self.ab.projected[hooks.name(kind, layer)]

            def hook(x, hook=None, start=start, width=width, gone_i=gone_i, projected=projected):
                if attn:
                    return self.done["p"][:, :, :, start : start + width].reshape(x.shape).to(x.dtype)
                return torch.where(up[gone_i], projected.to(x.dtype), x.view(S, B, *x.shape[1:])).reshape(x.shape)

            self.fwd.append((hooks.name(kind, layer), hook))

    def _mlp_hook(self, layer: int, heads: tuple | None, mask: int, active: bool, tail: bool):
        """The hook on the MLP's normalized input: rebuilt for every size, or (when no size rebuilds
        it) the fully ablated one where it has no circuit edge."""
        block, S, B = self.model.bridge.blocks[layer], self.S, self.B
        base, mid = self.ab.base[input_hook("mlp", layer)], hooks.name("resid_mid", layer)
        projected = self.ab.projected[f"blocks.{layer}.mlp.hook_in"]

        def hook(x, hook=None):
            x4 = x.view(S, B, *x.shape[1:])
            if not active:
                return torch.where(self.up[mask], projected.to(x.dtype), x4).reshape(x.shape)
            s = torch.where(self.up[mask], base, self.done.pop(mid).view(x4.shape))
            if tail:
                s = s + self.done.pop("tail")
            if heads is not None:
                s = s + self._sums(heads)[:, 0]
            return block.ln2(s.to(x.dtype)).reshape(x.shape)

        return hook

    def _diff_hooks(self) -> list:
        """Each read writer's output minus its replacement into `diff` (every size's rows at once)."""
        S, B, T = self.S, self.B, self.T
        diff, rep, out = self.diff, self.ab.rep_w, []
        d = diff.shape[-1]

        def single(i: int):
            def hook(x, hook=None):
                torch.sub(x.detach().reshape(S, B, T, d), rep[i], out=diff[i].view(S, B, T, d))

            return hook

        def heads(layer: int, lo: int, hi: int):
            W_O = self.model.bridge.blocks[layer].attn.W_O  # [head d_head d_model]

            def hook(z, hook=None):
                H = hi - lo
                o = diff[lo:hi]
                torch.bmm(z.detach().permute(2, 0, 1, 3).reshape(H, S * B * T, -1), W_O.to(z.dtype), out=o.view(H, -1, d))
                o.view(H, S, B, T, d).sub_(rep[lo:hi][:, None])

            return hook

        for name, (lo, hi) in self.ab._writer_span.items():
            if bool(self.read[lo:hi].any()):
                out.append((name, heads(int(name.split(".")[1]), lo, hi) if name.endswith("hook_z") else single(lo)))
        return out


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
