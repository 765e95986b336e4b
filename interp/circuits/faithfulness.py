"""How faithful a circuit is: the model with every edge outside it ablated, as MIB measures it.

A circuit C is a set of edges. m(C) is the mean metric on held-out prompts when every edge
outside C is ablated: its input reads the writer's *replacement* instead of the writer's current
output,

    x_v  ->  x_v - sum_{u -> v not in C} (a(u) - r(u)),

with r(u) the writer's output on the corrupted prompt of the same pair (counterfactual, the
default, MIB's "patching") or its mean over every real position of the scoring prompts (mean
ablation; the scoring prompts, so nothing of the held-out set leaks into it). Everything else is
recomputed. Then

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

with m(full) the clean run (no edge ablated) and m(empty) every edge ablated (the corrupted run,
under counterfactual ablation). The *curve* is f over circuits of MIB's sizes, {0.1, 0.2, 0.5, 1,
2, 5, 10, 20, 50, 100} % of the graph's edges, each circuit the top-n edges by score (n =
int(fraction x edges), as MIB's `evaluate_area_under_curve`), pruned to the edges on a path from
the embedding to the logits (as MIB does; `pruned=False` keeps the raw top-n). CPR is the area
under f and CMD the area under |1 - f|, both by the trapezoid rule over the fractions (x from
0.001 to 1, MIB's default linear x-axis). MIB ranks edges by signed score for CPR and by |score|
for CMD; `ranking` picks one (the CLI computes both). Intervals come from a bootstrap over the
held-out prompts (the whole curve recomputed per resample from the same per-prompt metrics).

One forward per circuit, on the bridge's own forward pass: hooks keep every writer's output minus
its replacement (writer-major, in place), and each input whose circuit edges differ from "all" is
rebuilt from whichever side is smaller -- base + the circuit's edges into it (base: the input with
everything ablated) or the current input - its ablated edges -- and only its projection (a head's
q, a KV head's k or v before rotary, an MLP's normalized input) is recomputed from it. An input with
no circuit edge takes the fully ablated projection, cached (under counterfactual ablation: the
corrupted run's own); an input with every edge kept keeps the bridge's. A curve is the corrupted
run, the clean run (the 100 % circuit changes nothing) and one forward per other size. The plainly
written `ablated_reference` subtracts every excluded edge on its own, through the bridge's split
per-input copies (interp.circuits.readers), and tests hold the two together.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.circuits.attribute import EdgeScores
from interp.circuits.graph import Graph
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

MIB_PERCENTS: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
ABLATIONS: tuple[str, ...] = ("counterfactual", "mean")


def areas(percents, f) -> tuple[float, float]:
    """(CPR, CMD): trapezoid areas under f and under |1 - f| over the fractions percents / 100."""
    x = [p / 100 for p in percents]
    cpr = sum(((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(len(x) - 1)), 0.0)
    cmd = sum(((x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2 for i in range(len(x) - 1)), 0.0)
    return cpr, cmd


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
        t, L = self.task, model.info.n_layers
        names = [hooks.name("resid_pre", layer) for layer in range(L)] + [hooks.final_resid(L)]
        names += [hooks.name("resid_mid", layer) for layer in range(L)] if self.graph.has_mlp else []
        projections = [hooks.name(k, layer) for layer in range(L) for k in "qkv"]
        projections += [f"blocks.{layer}.mlp.hook_in" for layer in range(L)] if self.graph.has_mlp else []
        names += projections if ablation == "counterfactual" else []
        ref_tokens = t.corrupted if ablation == "counterfactual" else t.clean
        ref_cache: dict[str, Tensor] = {}

        def keep(name: str):
            def hook(x, hook=None):
                ref_cache[name] = x.detach()

            return hook

        sink: dict[int, Tensor] = {}  # one run of the reference prompts: its inputs and its writers
        ref_logits = model.run_with_hooks(ref_tokens, fwd_hooks=[(n, keep(n)) for n in names] +
                                          writer_hooks(model, self.graph, sink.__setitem__))  # fmt: skip
        a_ref = stack_writers(sink, len(self.graph.writers))
        if ablation == "counterfactual":
            self.replacement = a_ref  # [batch pos writer d]
            clean_logits = model(t.clean)
        else:
            self.replacement = _means(model, as_task(mean_task), self.graph)[None, None]  # [1 1 writer d]
            clean_logits = ref_logits
        self.clean_end = end_logits(clean_logits, t.end)
        self.metric = metric_fn(t, self.clean_end)
        self.m_full = self.metric(self.clean_end)  # the whole graph is the clean run
        self.base = {}
        for name, kind, layer, idx in layer_inputs(self.graph):
            ref = {"mlp": hooks.name("resid_mid", layer), "logits": hooks.final_resid(L)}.get(kind, hooks.name("resid_pre", layer))
            x = ref_cache[ref]
            if ablation == "mean":  # the input with every earlier writer at its mean
                n = self.graph.n_writers_before(self.graph.readers[int(idx[0])])
                x = x - (a_ref[:, :, :n] - self.replacement[:, :, :n]).sum(2)
            self.base[name] = x
        # what each fully ablated input projects to (q/k/v before rotary, the MLP's normalized input):
        # the corrupted run's own under counterfactual ablation, computed from the base under mean
        self.projected = {}
        for layer in range(L):
            block, x = model.bridge.blocks[layer], self.base[input_hook("q", layer)]
            for k in "qkv":
                self.projected[hooks.name(k, layer)] = (
                    ref_cache[hooks.name(k, layer)] if ablation == "counterfactual" else _project(block, k, block.ln1(x)))
            if self.graph.has_mlp:
                name = f"blocks.{layer}.mlp.hook_in"
                self.projected[name] = ref_cache[name] if ablation == "counterfactual" else block.ln2(self.base[input_hook("mlp", layer)])
        self.m_corrupted = self.metric(end_logits(ref_logits, t.end)) if ablation == "counterfactual" else None
        self.rep_w = self.replacement.permute(2, 0, 1, 3).contiguous()  # [writer batch|1 pos|1 d]
        del a_ref

    @torch.no_grad()
    def run(self, keep: Bool[Tensor, "edge"]) -> Float[Tensor, "batch"]:
        """The metric per prompt with every edge outside `keep` ablated (one forward)."""
        g, model = self.graph, self.model
        dev = model.device
        M = torch.zeros(len(g.writers), len(g.readers), dtype=torch.bool, device=dev)
        M[g.src.to(dev), g.dst.to(dev)] = keep.to(dev)
        if bool(keep.all()):  # nothing ablated: the clean run
            return self.m_full
        B, T = self.task.clean.shape
        diff = torch.empty(len(g.writers), B, T, model.info.d_model, dtype=self.rep_w.dtype, device=dev)
        fwd = writer_diff_hooks(model, g, diff, self.rep_w)  # writer outputs minus their replacements
        current: dict[str, Tensor] = {}

        def remember(name: str):
            def hook(x, hook=None):
                current[name] = x

            return hook

        for layer in range(g.n_layers):
            block = model.bridge.blocks[layer]
            pre = hooks.name("resid_pre", layer)
            idx = torch.cat([g.layer_readers(layer, k) for k in "qkv"]).to(dev)
            n = g.n_writers_before(g.readers[int(idx[0])])
            group = _Group(M[:n, idx], diff, [k for k in "qkv" for _ in range(len(g.layer_readers(layer, k)))])
            fwd.append((pre, remember(pre)))
            cols = {"q": (0, g.n_heads), "k": (g.n_heads, g.n_kv), "v": (g.n_heads + g.n_kv, g.n_kv)}
            for k, (start, width) in cols.items():
                fwd.append((hooks.name(k, layer), group.attention_hook(
                    block, k, start, width, self.base[input_hook("q", layer)], current, pre, self.projected[hooks.name(k, layer)],
                    first=k == "q")))  # fmt: skip
            if g.has_mlp:
                mid = hooks.name("resid_mid", layer)
                fwd.append((mid, remember(mid)))
                ridx = g.layer_readers(layer, "mlp").to(dev)
                mlp = _Group(M[: g.n_writers_before(g.readers[int(ridx[0])]), ridx], diff, ["mlp"])
                fwd.append((f"blocks.{layer}.mlp.hook_in", mlp.mlp_hook(block, self.base[input_hook("mlp", layer)], current,
                                                                         mid, self.projected[f"blocks.{layer}.mlp.hook_in"])))  # fmt: skip
        ridx = g.layer_readers(0, "logits").to(dev)
        final = _Group(M[:, ridx], diff, ["logits"])
        fwd.append((input_hook("logits", None), final.logits_hook(self.base[input_hook("logits", None)])))
        logits = model.run_with_hooks(self.task.clean, fwd_hooks=fwd)
        return self.metric(end_logits(logits, self.task.end))


def _project(block, kind: str, normed: Tensor, which: Tensor | None = None) -> Tensor:
    """q, k or v (before rotary) of normalized inputs [..., d_model] -> [..., head, d_head], every
    head, or with `which` ([reader]) one head per leading row of `normed` ([reader, ...])."""
    a = block.attn
    W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[kind]
    if which is None:
        out = torch.einsum("...d,hde->...he", normed, W.to(normed.dtype))
        return out if b is None else out + b.to(out.dtype)
    out = torch.einsum("r...d,rde->r...e", normed, W[which].to(normed.dtype))
    return out if b is None else out + b[which].to(out.dtype).view(len(which), *([1] * (normed.dim() - 2)), -1)


class _Group:
    """The inputs of one layer's attention (q, k and v), of an MLP or of the logits, with the circuit's
    edges among the n writers before them (`sub` [writer reader], True = kept). Each input is rebuilt
    from the smaller side: the fully ablated input + its circuit edges ("inside"), or its current
    residual stream - its ablated edges. An input left exactly at one end is not recomputed: the
    fully ablated one takes its cached projection, an untouched one keeps the bridge's own; only
    inputs with a non-empty sum (`active`) are normalized and projected here."""

    def __init__(self, sub: Tensor, diff: Tensor, kinds: list[str]):
        self.n, self.diff, self.kinds = sub.shape[0], diff, kinds
        self.inside = sub.sum(0) <= (~sub).sum(0)  # [reader]
        weights = torch.where(self.inside[None, :], sub, ~sub)  # the edges each input sums
        self.active = weights.any(0).nonzero().flatten()
        w = weights[:, self.active].to(diff.dtype) * torch.where(self.inside[self.active], 1.0, -1.0).to(diff.dtype)
        self.rows = w.any(1).nonzero().flatten()
        self.gather = 3 * len(self.rows) < self.n  # gathering a few rows beats reading them all
        self.w = w[self.rows] if self.gather else w  # [rows|n active]
        self.done: dict[str, Tensor] = {}

    def signed_sum(self) -> Tensor:
        """[active batch pos d]: + the circuit's edges (inside inputs), - the ablated ones (others)."""
        part = self.diff[: self.n][self.rows] if self.gather else self.diff[: self.n]
        B, T, d = part.shape[1:]
        return (self.w.T @ part.reshape(part.shape[0], -1)).view(len(self.active), B, T, d)

    def rebuilt(self, base: Tensor, current: Tensor) -> Tensor:
        """The active inputs' residual streams [active batch pos d]."""
        start = torch.where(self.inside[self.active][:, None, None, None], base[None], current[None])
        return start + self.signed_sum()

    def attention_hook(self, block, kind, start, width, base, current, pre, projected, first):
        """The hook on hook_{kind} (kind's projections [batch pos width d_head], before rotary)."""
        cols = torch.arange(start, start + width, device=self.inside.device)
        act = {int(r): j for j, r in enumerate(self.active.tolist())}
        ablated = [int(c) - start for c in cols.tolist() if self.inside[c] and int(c) not in act]
        mine = [(act[int(c)], int(c) - start) for c in cols.tolist() if int(c) in act]
        heads = torch.tensor([h for _, h in mine], dtype=torch.long)

        def hook(x, hook=None):
            if first and len(self.active):  # the layer's active inputs, normalized once
                self.done["normed"] = block.ln1(self.rebuilt(base, current[pre]).to(x.dtype))
            if not ablated and not mine:
                return x
            x = x.clone()
            if ablated:
                x[:, :, ablated] = projected[:, :, ablated].to(x.dtype)
            if mine:
                normed = self.done["normed"][[j for j, _ in mine]]
                x[:, :, heads] = _project(block, kind, normed, heads).permute(1, 2, 0, 3).to(x.dtype)
            return x

        return hook

    def mlp_hook(self, block, base, current, mid, projected):
        """The hook on the MLP's normalized input."""

        def hook(x, hook=None):
            if len(self.active):
                return block.ln2(self.rebuilt(base, current[mid])[0].to(x.dtype))
            return projected.to(x.dtype) if bool(self.inside[0]) else x

        return hook

    def logits_hook(self, base):
        """The hook on the final norm's input (the final residual stream)."""

        def hook(x, hook=None):
            if len(self.active):
                return self.rebuilt(base, x)[0].to(x.dtype)
            return base.to(x.dtype).clone() if bool(self.inside[0]) else x

        return hook


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


@dataclass
class Curve:
    """Faithfulness over circuit sizes on held-out prompts."""

    percents: list[float]  # circuit sizes, % of the graph's edges
    n_requested: list[int]  # top-n edges asked for
    n_edges: list[int]  # edges left after pruning
    faithfulness: list[float]  # f per size
    lo: list[float]  # bootstrap 2.5 % per size
    hi: list[float]  # bootstrap 97.5 %
    cpr: float  # area under f
    cmd: float  # area under |1 - f|
    cpr_ci: tuple[float, float]
    cmd_ci: tuple[float, float]
    m_full: float  # mean metric, nothing ablated
    m_empty: float  # mean metric, everything ablated
    m_circuit: list[float]  # mean metric per size
    ranking: str
    pruned: bool
    ablation: str
    n_heldout: int
    per_prompt: Tensor | None = field(default=None, repr=False)  # [size batch] metric values

    def at(self, percent: float) -> tuple[float, float, float]:
        """(f, lo, hi) at one of the sizes."""
        i = self.percents.index(percent)
        return self.faithfulness[i], self.lo[i], self.hi[i]

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("per_prompt")
        d["points"] = [{"percent": p, "faithfulness": f, "lo": lo, "hi": hi, "n_edges": n}
                       for p, f, lo, hi, n in zip(self.percents, self.faithfulness, self.lo, self.hi, self.n_edges)]  # fmt: skip
        return d


def circuits_at(scores: EdgeScores, percents=MIB_PERCENTS, ranking: str = "abs", pruned: bool = True):
    """(requested n, circuit mask) for each size."""
    E = scores.graph.n_edges
    out = []
    for p in percents:
        n = int(p / 100 * E)
        out.append((n, scores.circuit(n, ranking, pruned)))
    return out


def faithfulness_curve(
    model: Model,
    scores: EdgeScores,
    heldout: Task,
    percents=MIB_PERCENTS,
    ranking: str = "abs",
    pruned: bool = True,
    ablation: str = "counterfactual",
    mean_task: Task | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ablator: Ablator | None = None,
    progress: Progress | None = None,
) -> Curve:
    """f at each size (see the module docstring), with bootstrap intervals over held-out prompts."""
    percents = [float(p) for p in percents]
    if not percents or any(not 0 <= p <= 100 for p in percents) or percents != sorted(percents):
        raise WorkbenchError("circuit sizes must be increasing percentages in 0..100")
    ab = ablator or Ablator(model, heldout, ablation, mean_task, scores.graph)
    sizes = circuits_at(scores, percents, ranking, pruned)
    per = []
    for i, (_, keep) in enumerate(sizes):
        per.append(ab.run(keep).float().cpu())
        if progress:
            progress(i + 1, len(sizes), "faithfulness")
    per_t = torch.stack(per)  # [size batch]
    full = ab.m_full.float().cpu()
    empty = ab.m_corrupted.float().cpu() if ab.m_corrupted is not None else ab.run(torch.zeros(scores.graph.n_edges, dtype=torch.bool)).float().cpu()
    gap = float(full.mean() - empty.mean())
    if abs(gap) < 1e-9 * max(1.0, float(full.abs().mean())):
        raise WorkbenchError("the clean and fully ablated runs give the same metric on the held-out prompts; "
                             "faithfulness is undefined (the task does not separate them on this model)")  # fmt: skip
    f = ((per_t.mean(1) - empty.mean()) / gap).tolist()
    cpr, cmd = areas(percents, f)
    g = torch.Generator().manual_seed(seed)
    B = per_t.shape[1]
    idx = torch.randint(B, (n_boot, B), generator=g)
    pb, fb, eb = per_t[:, idx].mean(2), full[idx].mean(1), empty[idx].mean(1)  # [size boot], [boot]
    fboot = (pb - eb) / (fb - eb)
    lo, hi = fboot.nanquantile(0.025, dim=1).tolist(), fboot.nanquantile(0.975, dim=1).tolist()
    areas_b = torch.tensor([areas(percents, fboot[:, j].tolist()) for j in range(n_boot)])
    q = lambda x: (float(x.nanquantile(0.025)), float(x.nanquantile(0.975)))  # noqa: E731
    return Curve(percents, [n for n, _ in sizes], [int(k.sum()) for _, k in sizes], f, lo, hi, cpr, cmd,
                 q(areas_b[:, 0]), q(areas_b[:, 1]), float(full.mean()), float(empty.mean()),
                 per_t.mean(1).tolist(), ranking, pruned, ablation, B, per_t)  # fmt: skip


def faithfulness(model: Model, keep: Bool[Tensor, "edge"], heldout: Task, ablation: str = "counterfactual",
                 mean_task: Task | None = None) -> float:  # fmt: skip
    """f of one circuit on the held-out prompts."""
    ab = Ablator(model, heldout, ablation, mean_task)
    full = float(ab.m_full.mean())
    empty = float(ab.m_corrupted.mean()) if ab.m_corrupted is not None else float(
        ab.run(torch.zeros_like(keep)).mean())
    m = float(ab.run(keep).mean())
    return (m - empty) / (full - empty) if not math.isclose(full, empty) else float("nan")
