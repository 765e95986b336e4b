"""The ablation engine: the model with everything outside a circuit ablated (interp.circuits.ablate.plan),
run on the replayed block of interp.circuits.replay, many plans at once.

A plan departs from the clean run only from some layer and some position on, and everything before
them is the clean run's (a causal model reads only earlier positions). Every pass therefore replays
blocks over a span of positions, against the clean run's keys and values before it:

- plans that replace writers only (node plans: the IOI evaluation) are replayed from the first layer
  and the first position, per prompt, where they differ from a base run: the clean run or a plan run
  earlier and recorded (`run_many(bases=...)`, and those interp.circuits.ablate.bases finds worth
  recording); each picks the base it shares most of its work with.
  Head outputs are replaced in z (`Edit.z`), nothing is rebuilt;
- plans that ablate edges are replayed from the first block, over the positions from the first one
  where a writer's output differs from its replacement (under counterfactual ablation: where some clean
  prompt differs from its corrupted one; S2 under IOI's S2 -> IO). Per layer, each input with something
  to rebuild gets its own residual stream (interp.circuits.ablate.layout: base + kept differences, or X -
  ablated ones, one batched matmul over the writers' differences), the block projects it (`Inputs`), and
  the heads' and the MLP's differences from their replacements are kept for the inputs above. Exact
  shortcuts: an input with every edge kept reads X, one with none takes the fully ablated projection;
  an MLP no circuit edge leaves (or, under counterfactual ablation, none enters) is not computed: it
  writes its replacement; only END goes through the final norm and the unembedding.

Two strategies behind `run_many`: on an accelerator, where a forward costs its kernel count, plans are
stacked along the variant axis, as many as half the free memory holds; on the CPU, which is bound by
arithmetic, edge plans run one a pass (stacking cuts no FLOPs, and the union of every plan's rebuilt
inputs costs more than each plan's own), node plans (nothing rebuilt) stacked as on an accelerator.

The engine checks itself once: the clean run replayed must give back the bridge's clean metric. Where
it does not (a block the replay does not model), it refuses edge plans with a one-line error and runs
node plans through the plain reference (interp.circuits.ablate.reference) instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp.circuits.ablate import reference, runs
from interp.circuits.ablate.bases import extra_bases
from interp.circuits.ablate.edges import edge_pass
from interp.circuits.ablate.plan import AblationPlan, Replacement
from interp.circuits.replay import ACC, Edit, Keys, Replay, Span, gather_pos
from interp.circuits.types import Graph, check_mode
from interp.data.task import Task, metric_fn, resid_metric
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}  # the self-check, relative to the metric's scale; 3e-2 in 16-bit


@dataclass
class _Base:
    """A run node plans are replayed from: the residual stream entering each layer and each layer's
    keys, over whole sequences; the plan it ran (the clean run: the full plan) and its metric per prompt."""

    plan: AblationPlan
    resid: Callable[[int], Tensor]
    keys: Callable[[int], Keys]
    metric: Tensor


class Ablator:
    """A held-out task ready for ablated runs (see the module docstring): `run` / `run_many` give the
    metric per prompt of each plan; `m_full` is the clean run's, `m_corrupted` the corrupted run's
    (counterfactual ablation: every edge ablated)."""

    @torch.no_grad()
    def __init__(self, model: Model, task: Task, ablation: str = "counterfactual", mean_task: Task | None = None,
                 graph: Graph | None = None, replacement: Replacement | None = None):  # fmt: skip
        if replacement is None:
            check_mode("ablation", ablation)
            if ablation == "mean" and mean_task is None:
                raise WorkbenchError("mean ablation needs prompts to average over (the scoring prompts)")
        self.model, self.task, self.graph = model, task, graph or Graph.of(model)
        self.ablation = "given" if replacement is not None else ablation
        self.rp = Replay.of(model)
        counterfactual = self.ablation == "counterfactual"
        self.clean, corr, corr_end = runs.collect(model, task, counterfactual)
        self.metric = resid_metric(model.bridge, task, self.clean.end_logits)
        m = metric_fn(task, self.clean.end_logits)
        self.m_full = m(self.clean.end_logits)  # nothing ablated: the clean run
        self.m_corrupted = m(corr_end) if counterfactual else None
        if counterfactual:
            self.replacement, self.ablated = runs.from_corrupted(self.rp, corr)
        elif self.ablation == "mean":
            self.replacement = runs.means(model, mean_task)
            self.ablated = runs.from_means(self.rp, self.replacement)
        else:
            self.replacement, self.ablated = replacement, None
        self.t0 = self._first_difference() if counterfactual else 0
        self._checked: bool | None = None

    def _first_difference(self) -> int:
        """The first position at which some clean prompt differs from its corrupted one (at most the
        earliest END): before it every writer's output equals its replacement."""
        t = self.task
        differs = (t.clean != t.corrupted).any(0).nonzero().flatten()
        first = int(differs[0]) if len(differs) else t.clean.shape[1]
        return min(first, int(t.end.min()))

    # -- running plans ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, plan: AblationPlan | Tensor) -> Float[Tensor, " batch"]:
        """The metric per prompt of one plan (or kept-edge mask)."""
        return self.run_many([plan])[0]

    @torch.no_grad()
    def run_many(self, plans: list, stacked: bool | None = None, max_rows: int | None = None,
                 progress: Progress | None = None, bases: list[int] = ()) -> Float[Tensor, "plan batch"]:  # fmt: skip
        """The metric per prompt of each plan (AblationPlan or kept-edge mask) [plan batch]. The full
        plan is the clean run, an empty one under counterfactual ablation the corrupted run, and equal
        plans run once. `stacked` (default: on an accelerator, and for node plans everywhere) stacks
        plans along the variant axis, at most `max_rows` prompts x plans per pass (default: what half
        the free accelerator memory holds; 4 GiB on the CPU). `bases`: node plans to run first and
        replay the others from. `progress` hears after each pass (plans done, of all)."""
        plans = [p if isinstance(p, AblationPlan) else AblationPlan(edges=p) for p in plans]
        out, edge, node = self.groups(plans)
        done, total = sum(x is not None for x in out), len(plans)

        def tick(group_lists: list[list[int]], got: Tensor) -> None:
            nonlocal done
            for j, ids in enumerate(group_lists):
                for i in ids:
                    out[i] = got[j].to(self.m_full.device)
                done += len(ids)
            if progress:
                progress(done, total, "ablated runs")

        if (edge or node) and not self.check():
            if edge:
                raise WorkbenchError(f"the ablation engine cannot replay {self.model.info.name}'s blocks; use "
                                     "interp.circuits.ablate.reference.plan_reference (one hooked forward per circuit)")  # fmt: skip
            for ids in node:
                tick([ids], reference.plan_reference(self.model, self.task, plans[ids[0]], self.replacement)[None])
            return torch.stack([x.float() for x in out])
        accel = self.model.device.type != "cpu"
        per = max(1, (max_rows or self._fitting_rows()) // len(self.task))
        step = per if (accel if stacked is None else stacked) else 1
        for c in range(0, len(edge), step):
            chunk = edge[c : c + step]
            tick(chunk, self._edge_pass([plans[ids[0]] for ids in chunk]))
        if node:
            self._node_passes(plans, node, per if stacked is None or stacked else 1, tick, bases)
        if not out:
            return self.m_full.new_zeros(0, len(self.task)).float()
        return torch.stack([x.float() for x in out])  # float32 on the clean run's device

    def groups(self, plans: list[AblationPlan]) -> tuple[list[Tensor | None], list[list[int]], list[list[int]]]:
        """(the metric of each plan known without a run, else None; the groups of equal edge plans; of equal
        node plans), worked out on the CPU."""
        out: list[Tensor | None] = [None] * len(plans)
        todo: dict[bytes, list[int]] = {}
        for i, p in enumerate(plans):
            if p.is_full:
                out[i] = self.m_full
            elif p.is_empty and self.m_corrupted is not None:
                out[i] = self.m_corrupted
            else:
                todo.setdefault(p.key(), []).append(i)
        groups = list(todo.values())
        return out, [g for g in groups if plans[g[0]].ablates_edges], [g for g in groups if not plans[g[0]].ablates_edges]

    def check(self) -> bool:
        """Whether the replay of the clean run (its last two blocks, over the positions edge plans replay)
        gives back the bridge's clean metric (once per Ablator)."""
        if self._checked is None:
            start = torch.full((len(self.task),), self.t0, dtype=torch.long)  # two blocks over the edge plans' span
            got = self._replay([AblationPlan()], self._clean_base(), max(0, self.graph.n_layers - 2), start)[0]
            tol = TOLERANCE.get(self.model.dtype, 3e-2) * max(1.0, float(self.m_full.abs().max()))
            self._checked = bool((got.to(self.m_full) - self.m_full).abs().max() <= tol)
        return self._checked

    def _fitting_rows(self) -> int:
        """How many prompts x plans one pass holds in half the free accelerator memory (the writers'
        differences, a layer's rebuilt inputs and MLP activations per row); 4 GiB on the CPU."""
        info, g = self.model.info, self.graph
        T = self.task.clean.shape[1]
        # a layer's rebuilt inputs are counted twice: the weighted sum and its sum with the base (interp.circuits.
        # ablate.edges._summed) are alive together; MIB's ungrouped graph (3 inputs per head) ran out without it
        per_row = T * 4 * (info.d_model * (len(g.writers) + 4 * (g.n_heads + 2 * g.n_kv) + 8) + 4 * (info.d_mlp or 0))
        dev = torch.device(self.model.device)
        free = torch.cuda.mem_get_info(dev)[0] // 2 if dev.type == "cuda" else 4 * 2**30
        return max(1, int(free // per_row))

    # -- node plans ----------------------------------------------------------------------------------------
    def _clean_base(self) -> _Base:
        c, rp = self.clean, self.rp
        return _Base(AblationPlan(), c.resid, lambda layer: c.keys(rp, layer), self.m_full)

    def _node_passes(self, plans: list[AblationPlan], groups: list[list[int]], per: int, tick, bases) -> None:
        """Node plans from the base each shares most layers x positions with, stacked `per` a pass."""
        B, T, L = len(self.task), self.task.clean.shape[1], self.graph.n_layers
        end = self.task.end
        known = [self._clean_base()]
        for i in dict.fromkeys(bases):
            ids = next((g for g in groups if i in g), None)
            if ids is not None and not plans[i].ablates_edges:
                base = self._record(plans[i], known)
                known.append(base)
                tick([ids], base.metric[None])
                groups = [g for g in groups if g is not ids]
        extra = extra_bases([plans[ids[0]] for ids in groups], self.graph, end, T, [b.plan for b in known])
        for k in extra:  # plans that save the others more replay than their own recording costs
            known.append(self._record(plans[groups[k][0]], known))
            tick([groups[k]], known[-1].metric[None])
        groups = [g for k, g in enumerate(groups) if k not in extra]
        starts: dict[tuple, list[list[int]]] = {}
        for ids in groups:
            best = None
            for j, base in enumerate(known):
                layer, P = plans[ids[0]].first_difference(base.plan, self.graph, B, T)
                P = torch.minimum(P, end)
                cost = (L - min(layer, L - 1)) * float((end - P + 1).float().mean())
                if best is None or cost < best[0]:
                    best = (cost, j, min(layer, L - 1), P)
            starts.setdefault((best[1], best[2], tuple(best[3].tolist())), []).append(ids)
        for (j, layer, P), members in sorted(starts.items()):
            for k in range(0, len(members), per):
                chunk = members[k : k + per]
                tick(chunk, self._replay([plans[ids[0]] for ids in chunk], known[j], layer, torch.tensor(P)))

    def _record(self, plan: AblationPlan, known: list[_Base]) -> _Base:
        """Run one node plan over whole sequences, keeping what later replays read from it."""
        B, T = len(self.task), self.task.clean.shape[1]
        clean = known[0]
        layer0, _ = plan.first_difference(clean.plan, self.graph, B, T)
        layer0 = min(layer0, self.graph.n_layers - 1)
        span = Span.whole(self.task.end.to(self.model.device), T, self.task.reads.to(self.model.device))
        resid: dict[int, Tensor] = {}
        keys: dict[int, Keys] = {}
        X = clean.resid(layer0)[None].to(ACC)
        edits = self.writer_edits([plan], span, None)
        for layer in range(layer0, self.graph.n_layers):
            resid[layer] = X[0]
            edit = edits(layer) or Edit()
            edit.keys_seen = lambda k, v, layer=layer: keys.__setitem__(layer, Keys(k[0], v[0]))
            X = self.rp.block(layer, X, span, cache=self.clean.cache, keys=None, edit=edit)
        final = span.readout(gather_pos(X.to(self.rp.device_of(self.graph.n_layers))[0], span.rows)[None])
        return _Base(plan, lambda layer: resid[layer] if layer in resid else clean.resid(layer),
                     lambda layer: keys[layer] if layer in keys else clean.keys(layer), self.metric(final)[0].float().cpu())  # fmt: skip

    def _replay(self, plans: list[AblationPlan], base: _Base, layer0: int, P: Tensor) -> Tensor:
        """Node plans from `base`, from `layer0` and per-prompt positions P on ([plan batch])."""
        span = Span.of(P, self.task.end, self.task.clean.shape[1], self.task.reads).to(self.model.device)  # on the CPU
        dev = self.rp.device_of(layer0)
        X = gather_pos(base.resid(layer0).to(dev), span.pos.to(dev))[None].to(ACC)
        X = self.embed_replaced(plans, span, X) if layer0 == 0 else X
        final = self.rp.run(X, span, layer0, self.clean.cache, base.keys, self.writer_edits(plans, span, span.rows))
        return self.metric(final).float().cpu()

    # -- writers replaced at the source ---------------------------------------------------------------------
    def _masks(self, plans: list[AblationPlan], lo: int, hi: int, span: Span, rows: Tensor | None) -> Tensor | None:
        """[plan batch query writer] where writers lo..hi-1 are replaced, at the span's query rows (None
        when no plan replaces any of them anywhere: decided on the CPU)."""
        if not any(p.writers is not None and bool(p.writers[lo:hi].any()) for p in plans):
            return None
        B, T = len(self.task), self.task.clean.shape[1]
        m = torch.stack([p.writers[lo:hi] if p.writers is not None else torch.zeros(hi - lo, B, T, dtype=torch.bool)
                         for p in plans])  # fmt: skip
        pos = span.pos if rows is None else gather_pos(span.pos, rows.to(span.pos.device))
        m = m.to(pos.device).permute(0, 2, 3, 1)  # [plan batch pos writer]
        return torch.stack([gather_pos(x, pos) for x in m])

    def _at(self, x: Tensor, span: Span, rows: Tensor | None) -> Tensor:
        """A replacement [batch|1 pos|1 ...] at the span's query rows ([batch|1 query|1 ...])."""
        if x.shape[1] == 1:
            return x
        pos = span.pos if rows is None else gather_pos(span.pos, rows.to(span.pos.device))
        return gather_pos(x.to(pos.device), pos.expand(x.shape[0], -1) if x.shape[0] != pos.shape[0] else pos)

    def writer_edits(self, plans: list[AblationPlan], span: Span, last_rows: Tensor | None):
        """Per layer, the Edit replacing the plans' writers at the source (None where none is)."""
        g, rep, L = self.graph, self.replacement, self.graph.n_layers

        def at(layer: int) -> Edit | None:
            rows = last_rows if layer == L - 1 else None
            lo = g.first_head(layer)
            heads = self._masks(plans, lo, lo + g.n_heads, span, rows)
            mlp = self._masks(plans, g.mlp_writer(layer), g.mlp_writer(layer) + 1, span, rows) if g.has_mlp else None
            if heads is None and mlp is None:
                return None
            edit = Edit()
            if heads is not None:
                r = self._at(rep.z[layer], span, rows)
                edit.z = lambda z: torch.where(heads.to(z.device)[..., None], r.to(z.device, z.dtype), z)
            if mlp is not None:
                r = self._at(rep.mlp[layer], span, rows)
                edit.mlp_edit = lambda out: torch.where(mlp.to(out.device), r.to(out.device, ACC), out)
            return edit

        return at

    def embed_replaced(self, plans: list[AblationPlan], span: Span, X: Tensor) -> Tensor:
        """The embedding replaced at the source where the plans ask."""
        m = self._masks(plans, 0, 1, span, None)
        if m is None:
            return X
        return torch.where(m.to(X.device), self._at(self.replacement.embed, span, None).to(X.device, ACC), X)

    # -- edge plans -------------------------------------------------------------------------------------------
    def _edge_pass(self, plans: list[AblationPlan]) -> Tensor:
        return edge_pass(self, plans)
