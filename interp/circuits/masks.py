"""Learned edge masks (Edge Pruning, Bhaskar et al. 2024): a continuous gate per edge, trained so that the
model with the closed edges ablated keeps the full model's output while few edges stay open.

The gated model. Every input v reads its fully ablated stream plus each writer's difference from its
replacement, weighted by the edge's gate z_e in [0, 1]:

    x_v = x_v(empty) + sum_{u -> v} z_(u->v) (a(u) - r(u))

with a(u) the writer's output in this same gated run and r(u) its output on the corrupted prompt (the
faithfulness engine's counterfactual ablation, interp.circuits.ablate). With z binary this *is* the
engine's circuit (z = 1 kept, z = 0 ablated): `EdgeForward` runs the replayed block of
interp.circuits.replay (each input its own stream, `Inputs`), the same block the engine runs, and a test
holds the two equal on binary gates. That is what makes a learned circuit's faithfulness exact: it is
measured by the engine with nothing approximated.

The gates are hard concrete (Louizos et al. 2018, as Edge Pruning's `l0.py`): log_alpha per edge,
z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) (r - l) + l, 0, 1) with u uniform, beta = 2/3,
l = -0.1, r = 1.1; one sample per step shared by the step's prompts; the expected share of open edges is
mean P(z > 0) = mean sigmoid(log_alpha - beta log(-l / r)).

The objective, Edge Pruning's: the loss of the gated model's output at END against the full model's
(`loss="kl"`: KL(full || gated), their choice; `"metric"`: (m(gated) - m(full))^2, the task metric
itself, per prompt), plus a Lagrangian that drives the expected open share to a target, lambda_1 (s - t)
+ lambda_2 (s - t)^2, the lambdas trained by gradient *ascent* (Edge Pruning's `sparsity_lambda_edges_1/2`,
AdamW with maximize=True), the target ramped linearly from the starting share to `target` over the first
`warmup` of the steps (their `num_sparsity_warmup_steps`). With `lam` set instead, a fixed penalty
lam x (expected open share) (the form UGS and the L0 papers use) replaces the Lagrangian. Edge Pruning
starts every log_alpha at 10 (everything open) and trains 3,000 steps; we start from EAP-IG instead
(`warm_start`: the top `target` share of edges by |EAP-IG score| open, the rest closed, log-spaced by
rank), which is what lets a few hundred steps do.

The result is an EdgeScores whose scores are the learned log_alpha shifted to be non-negative (the
lowest edge 0): ranking by score or by |score| is ranking by log_alpha, which is how Edge Pruning's
deterministic mask picks its edges (`deterministic_z_from_log_alpha`: the top ones by log_alpha). The
curve machinery then takes the top n at every size, as for any other method.

Cost, in prompt-forwards (a backward counts two, interp.circuits.cost): EAP-IG's for the warm start, one
forward of the clean and corrupted prompts stacked (the engine's setup), then `steps` forward+backward
passes of `batch` prompts: 3 x steps x batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp.circuits.ablate import Ablator
from interp.circuits.ablate.edges import at_span
from interp.circuits.ablate.runs import attention_output
from interp.circuits.replay import ACC, Edit, Inputs, Span
from interp.circuits.types import EdgeScores, Graph
from interp.data.task import Task, resid_metric
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

LEFT, RIGHT, BETA = -0.1, 1.1, 2 / 3  # the hard concrete's stretch and temperature (Edge Pruning's l0.py)
MIN_PROMPTS = 8  # fewer scoring prompts than this: nothing to train on
MIN_EDGES = 16  # a graph smaller than this: nothing to prune
LOSSES = ("kl", "metric")


@dataclass
class MaskConfig:
    """How the masks are trained (defaults: a few hundred Adam steps from EAP-IG; see the module docstring)."""

    steps: int = 300  # optimizer steps (forward+backward passes of `batch` prompts)
    lr: float = 0.1  # Adam's learning rate for the log-alphas and the Lagrangian's lambdas
    target: float = 0.05  # share of edges open at the end (MIB's headline size: 5 %)
    warmup: float = 0.5  # share of the steps over which the target ramps down to `target`
    batch: int = 16  # prompts a step (the scoring prompts in turn)
    loss: str = "kl"  # 'kl' (KL(full || gated) at END, Edge Pruning's) or 'metric' ((m - m(full))^2)
    lam: float | None = None  # a fixed penalty on the expected open share instead of the Lagrangian
    warm_steps: int = 5  # EAP-IG steps of the warm start (0: no warm start, every log_alpha at 3)
    seed: int = 0
    history: list = field(default_factory=list)  # filled in: (loss, expected open share) per step


def check(config: MaskConfig) -> None:
    """Refuse bad settings before any model work."""
    if config.steps < 1:
        raise WorkbenchError(f"learned masks need at least 1 training step (got {config.steps})")
    if not 0 < config.target < 1:
        raise WorkbenchError(f"the target share of open edges must lie in (0, 1) (got {config.target})")
    if config.loss not in LOSSES:
        raise WorkbenchError(f"unknown mask loss {config.loss!r}; choose {', '.join(LOSSES)}")
    if config.batch < 1:
        raise WorkbenchError(f"a batch of {config.batch} prompts: choose at least 1")


def check_size(graph: Graph, task: Task) -> None:
    """Refuse a model or task too small to train masks on (one line)."""
    if len(task) < MIN_PROMPTS:
        raise WorkbenchError(f"learned edge masks need at least {MIN_PROMPTS} scoring prompts to train on (got "
                             f"{len(task)}); score more prompts, or use eap-ig")  # fmt: skip
    if graph.n_edges < MIN_EDGES:
        raise WorkbenchError(f"{graph.n_edges} edges are too few to learn a mask over (at least {MIN_EDGES}); "
                             "use exact")  # fmt: skip


# -- hard concrete gates -------------------------------------------------------------------------------


def sample_gates(log_alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One hard-concrete sample per edge, in [0, 1] (exactly 0 or 1 with positive probability)."""
    u = torch.rand(log_alpha.shape, generator=generator).to(log_alpha.device).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / BETA)
    return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def open_probability(log_alpha: Tensor) -> Tensor:
    """P(z > 0) per edge: the expected L0."""
    return torch.sigmoid(log_alpha - BETA * math.log(-LEFT / RIGHT))


def warm_start(scores: Tensor, target: float) -> Tensor:
    """log_alpha from EAP-IG scores: log(target / q) for the edge at rank quantile q by |score| (the top
    `target` share positive, the rest negative, spaced by log rank), shifted so that the share open at
    the start, mean P(z > 0), is about twice the target."""
    E = len(scores)
    rank = torch.empty(E)
    rank[torch.argsort(scores.abs(), descending=True, stable=True)] = torch.arange(E, dtype=torch.float32)
    la = torch.log(torch.tensor(target)) - torch.log((rank + 0.5) / E)
    lo, hi = -20.0, 20.0  # bisection on the shift
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(open_probability(la + mid).mean()) < 2 * target else (lo, mid)
    return la + (lo + hi) / 2


# -- the gated forward ---------------------------------------------------------------------------------


class EdgeForward:
    """The model on one batch of prompts with every edge gated (see the module docstring): `outputs(z)`
    gives the final residual stream at END [batch d_model] for gates z [edge], differentiably."""

    def __init__(self, model: Model, task: Task, graph: Graph):
        self.ab = ab = Ablator(model, task, "counterfactual", graph=graph)
        if not ab.check():
            raise WorkbenchError(f"the replayed block does not reproduce {model.info.name}; learned masks cannot run on it")
        self.graph, self.rp, self.task = graph, ab.rp, task
        dev = model.device
        B, T = task.clean.shape
        start = torch.full((B,), ab.t0, dtype=torch.long)
        self.span = Span.of(start, task.end, T, task.reads).to(dev)  # to END, read where the metric reads (Task.reads)
        self.keys = ab.t0 > 0  # the span starts after 0: earlier keys come from the clean run
        sp, rep, abl = self.span, ab.replacement, ab.ablated
        with torch.no_grad():
            self.X0 = at_span(ab.clean.resid(0), sp)[None].to(dev, ACC)  # the clean embedding [1 B W d]
            self.embed_diff = (self.X0[0] - at_span(rep.embed, sp).to(dev, ACC))[:, :, None]  # [B W 1 d]
            self.base_attn = [at_span(abl.attention[layer], sp).to(dev, ACC) for layer in range(graph.n_layers)]
            self.r_z = [at_span(rep.z[layer], sp).to(dev) for layer in range(graph.n_layers)]
            self.offset = [attention_output(self.rp, layer, self.r_z[layer]) for layer in range(graph.n_layers)]
            if graph.has_mlp:
                self.base_mlp = [at_span(abl.mlp_in[layer], sp).to(dev, ACC) for layer in range(graph.n_layers)]
                self.r_mlp = [at_span(rep.mlp[layer], sp).to(dev, ACC) for layer in range(graph.n_layers)]
            rows = torch.arange(B, device=dev)
            final = abl.final.to(dev, ACC)
            self.base_final = final[rows[:, None], self.span.rows + self.span.start[:, None]] if final.shape[1] != 1 else final[:, :1]
        self.src, self.dst = graph.src.to(dev), graph.dst.to(dev)
        self.m_full = ab.m_full

    def outputs(self, z: Tensor) -> Float[Tensor, "batch d_model"]:
        """The final residual stream at END under gates z [edge] (floats in [0, 1]; 1 keeps the edge)."""
        g, rp, dev = self.graph, self.rp, self.X0.device
        M = torch.zeros(len(g.writers), len(g.readers), dtype=ACC, device=dev).index_put((self.src, self.dst), z.to(ACC))
        groups: list[tuple[int, Tensor]] = [(0, self.embed_diff)]  # (first writer, differences [B W n d])
        stacked: list = [None, 0]  # every group so far along the writer axis, and how many groups it holds

        def writers_so_far() -> Tensor:  # every group so far, stacked along the writer axis [B W n d]
            if stacked[1] < len(groups):
                new = [d for _, d in groups[stacked[1] :]]
                stacked[0] = torch.cat(new if stacked[0] is None else [stacked[0], *new], dim=2)
                stacked[1] = len(groups)
            return stacked[0]

        def read(base: Tensor, readers: Tensor, pattern: str) -> Tensor:
            """base + each earlier writer's difference weighted by its edge's gate, as one product over
            the writers so far (one kernel a read, not one a writer group: the step was launch-bound)."""
            D = writers_so_far()
            return base + torch.einsum(pattern, D, M[: D.shape[2], readers])

        def add(lo: int, d: Tensor) -> None:  # writers come in order, so the stack's axis is the writer index
            assert lo == sum(x.shape[2] for _, x in groups), "writer groups out of order"
            groups.append((lo, d))

        def keep_heads(lo: int):
            return lambda per: add(lo, per[0])

        X = self.X0
        for layer in range(g.n_layers):
            cols = g.attention_readers(layer).to(dev)
            streams = read(self.base_attn[layer][None], cols, "bwnd,nc->cbwd")  # [C B W d]
            edit = Edit(inputs=Inputs(columns=torch.arange(len(cols), device=dev), streams=streams[None]),
                        relative_to=self.r_z[layer], offset=self.offset[layer],
                        heads=keep_heads(g.first_head(layer)))  # fmt: skip
            if g.has_mlp:
                r = g.layer_readers(layer, "mlp").to(dev)
                edit.mlp_input = lambda mid, layer=layer, r=r: read(self.base_mlp[layer][:, :, None], r, "bwnd,nc->bwcd")[:, :, 0][None]
                edit.mlp_seen = lambda out, layer=layer: add(g.mlp_writer(layer), (out[0] - self.r_mlp[layer])[:, :, None])
            X = rp.block(layer, X, self.span, cache=self.ab.clean.cache,
                         keys=self.ab.clean.keys(rp, layer) if self.keys else None, edit=edit)  # fmt: skip
        at = (torch.arange(len(self.task), device=dev)[:, None], self.span.rows.to(dev))
        logits_reader = torch.tensor([len(g.readers) - 1], device=dev)
        D = writers_so_far()[at[0], at[1]]  # at the reads only (END; [B read n d])
        out = (self.base_final[:, :, None] + torch.einsum("bwnd,nc->bwcd", D, M[: D.shape[2], logits_reader]))[:, :, 0]
        return self.span.readout(out[None])[0]


# -- training ------------------------------------------------------------------------------------------


def learn(model: Model, task: Task, config: MaskConfig | None = None, warm: EdgeScores | None = None,
          progress: Progress | None = None) -> EdgeScores:  # fmt: skip
    """Train the gates on `task` (see the module docstring) and return the learned log-alphas as EdgeScores.
    `warm`: scores to start from (default: EAP-IG with `config.warm_steps` steps; none at 0)."""
    config = config or MaskConfig()
    check(config)
    graph = Graph.of(model)
    check_size(graph, task)
    task.check(model)
    started = time.perf_counter()
    if warm is None and config.warm_steps > 0:
        from interp.circuits.attribute import eap_ig

        warm = eap_ig(model, task, config.warm_steps)
    dev = model.device
    batches = [EdgeForward(model, part.on(dev), graph) for part in task.chunks(min(config.batch, len(task)))]
    losses = [_loss(model, fw, config.loss) for fw in batches]
    init = warm_start(warm.scores, config.target) if warm is not None else torch.full((graph.n_edges,), 3.0)
    log_alpha = init.to(dev, ACC).clone().requires_grad_(True)
    lambdas = torch.zeros(2, device=dev, requires_grad=True)
    opt = torch.optim.Adam([{"params": [log_alpha]}, {"params": [lambdas], "maximize": True}], lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    start_share = float(open_probability(log_alpha.detach()).mean())
    ramp = max(1, int(config.warmup * config.steps))
    config.history.clear()
    with torch.enable_grad():
        for step in range(config.steps):
            i = step % len(batches)
            z = sample_gates(log_alpha, gen)
            loss = losses[i](batches[i].outputs(z))
            share = open_probability(log_alpha).mean()
            if config.lam is not None:
                reg = config.lam * share
            else:
                t = config.target + (start_share - config.target) * max(0.0, 1 - (step + 1) / ramp)
                reg = lambdas[0] * (share - t) + lambdas[1] * (share - t).square()
            opt.zero_grad(set_to_none=True)
            (loss + reg).backward()
            opt.step()
            config.history.append((float(loss.detach()), float(share.detach())))
            if progress:
                progress(step + 1, config.steps, "mask training")
    learned = log_alpha.detach().float().cpu()
    clean = sum(float(fw.ab.m_full.sum()) for fw in batches) / len(task)
    corr = sum(float(fw.ab.m_corrupted.sum()) for fw in batches) / len(task)
    extra = {"loss": config.loss, "target": config.target, "lam": config.lam, "train_steps": config.steps,
             "lr": config.lr, "batch": config.batch, "warm_start": warm.method if warm is not None else None,
             "open_share": float(open_probability(learned).mean()), "seconds": time.perf_counter() - started,
             "forward_backward_passes": config.steps, "log_alpha_min": float(learned.min())}  # fmt: skip
    return EdgeScores(graph, learned - learned.min(), "edge-pruning", task.name, task.metric, len(task), clean, corr,
                      config.warm_steps, extra=extra)  # fmt: skip


def _loss(model: Model, fw: EdgeForward, kind: str):
    """The batch's loss as a function of the gated final residual stream at END [batch d_model]."""
    if kind == "kl":  # the task's -KL(full || .) metric, negated
        neg_kl = resid_metric(model.bridge, fw.task.with_metric("kl"), fw.ab.clean.end_logits)
        return lambda x: -neg_kl(x[None])[0].mean()
    m = resid_metric(model.bridge, fw.task, fw.ab.clean.end_logits)
    full = fw.m_full.detach().to(ACC)
    return lambda x: (m(x[None])[0].to(ACC) - full.to(x.device)).square().mean()


def forwards(config: MaskConfig, n: int) -> float:
    """Prompt-forwards to learn masks on n scoring prompts (module docstring): EAP-IG's warm start, the
    engine's setup, then steps x (forward + backward) of a batch."""
    warm = n * (1 + 3 * config.warm_steps) if config.warm_steps else 0
    return warm + 2 * n + 3 * config.steps * min(config.batch, n)
