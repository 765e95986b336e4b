"""Edge scores: EAP, EAP-IG, and exact edge patching, all in one sign convention.

The score of an edge e = (writer u -> input v) estimates how much the mean metric falls when e
alone is corrupted, i.e. when v reads u's corrupted output instead of its clean one:

    exact(e)  = m(clean) - m(clean with e corrupted)             one patched forward per edge
    EAP(e)    = (a_clean(u) - a_corr(u)) . dm/dx_v               gradient at the clean run
    EAP-IG(e) = (a_clean(u) - a_corr(u)) . mean_k dm/dx_v(k/m)   k = 0 .. m-1

summed over positions and averaged over prompts; x_v is v's own copy of the residual stream
(interp.circuits.readers), a(u) is u's write into it. Positive scores are edges that carry the
clean behaviour. This is the sign MIB uses (its attribution metric is the negated logit
difference, so its EAP-IG scores come out the same way).

EAP (Syed, Rager and Conmy 2023; `get_scores_eap` in Hanna's EAP-IG code) takes the gradient on
the clean run: one clean forward and backward, one corrupted forward. `at="corrupted"` takes it on
the corrupted run instead, which is TransformerLens 4.3's `attribution_patch` (denoising form,
(a_clean - a_corrupt) . grad at the corrupted run): our score equals TL's summed over positions.

EAP-IG (Hanna, Pezzelle and Belinkov 2024, `get_scores_eap_ig`): the input embeddings are
interpolated, x0(k) = x0_corr + (k/m)(x0_clean - x0_corr) for k = 0, ..., m-1 (the corrupted end
included, the clean one not, exactly as their code does), the model runs on each with the clean
tokens, and the gradients at every input are averaged over the m steps. Steps=1 is therefore the
gradient at the corrupted run. Summed over the edges leaving the embedding, EAP-IG scores tend to
m(clean) - m(corrupted) as m grows (the completeness of integrated gradients; patching every edge
out of the embedding at once *is* the corrupted run), which plain EAP only approximates.

How the gradient at an input's own copy is had without copying the residual stream: one ordinary
forward and backward gives the gradients at every head's q (per query head), k and v (per KV head)
before rotary, at each MLP's normalized input and at the final norm's input; each is pulled back
through its W_Q[h] (W_K[g], W_V[g]) and the block's norm at that layer's residual stream, with the
norm's vector-Jacobian product written out (`_Pullback`; held once per model to autograd through
the norm module itself, which it falls back to). Tests hold the result to finite differences of
exact edge patching and to TransformerLens's split-input gradients.

Cost: EAP-IG is one clean forward (no gradient; it gives the clean writers and the clean logits)
plus m forward+backward passes' worth of rows (the k = 0 pass *is* the corrupted run, so the
corrupted writers are read from it). The steps are stacked along the batch: one forward+backward
runs up to `batch_size` rows, i.e. max(1, batch_size // prompts) steps of a chunk of at most
`batch_size` prompts, so with batch_size >= m x prompts all m steps are one pass (on a GPU that
that is m times fewer passes, and so kernel launches). Within a pass the pull-back is summed over the stacked
steps before its one contraction with W per layer, and contracted with the activation differences
(one matrix product per layer into a column block of the scores) at once, or, when a chunk's steps
take several passes, once after the last. EAP is one forward+backward at the clean run and one
corrupted forward. Nothing in the loops waits on the device (no .item(), no host copies).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from einops import einsum
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.circuits.graph import Graph, prune
from interp.circuits.readers import stack_writers, writer_hooks, writer_outputs
from interp.data.tasks import Task, as_task, end_logits, metric_fn
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

METHODS: tuple[str, ...] = ("eap-ig", "eap", "exact")
_ANALYTIC: dict[int, bool] = {}  # id(model) -> whether its norms' analytic pull-back matched autograd
RANKINGS: tuple[str, ...] = ("abs", "signed")


@dataclass
class EdgeScores:
    """One score per edge of `graph` (in its edge order), with where they came from."""

    graph: Graph
    scores: Float[Tensor, "edge"]  # float32, on the CPU
    method: str  # "eap", "eap-ig" or "exact"
    task: str
    metric: str
    n_prompts: int  # scoring prompts
    clean_metric: float  # mean metric on the clean prompts
    corrupted_metric: float  # mean metric on the corrupted prompts
    steps: int | None = None  # EAP-IG steps
    at: str = "clean"  # EAP: where the gradient was taken
    extra: dict = field(default_factory=dict)

    def order(self, ranking: str = "abs") -> Tensor:
        """Edge indices, strongest first: by |score| ('abs') or by score ('signed', positive first)."""
        if ranking not in RANKINGS:
            raise WorkbenchError(f"unknown ranking {ranking!r}; choose 'abs' or 'signed'")
        key = self.scores.abs() if ranking == "abs" else self.scores
        return torch.argsort(key, descending=True, stable=True)

    def circuit(self, n: int, ranking: str = "abs", pruned: bool = True) -> Bool[Tensor, "edge"]:
        """The top `n` edges (optionally only those on a path from the embedding to the logits)."""
        if not 0 <= n <= self.graph.n_edges:
            raise WorkbenchError(f"a circuit of {n} edges: choose 0..{self.graph.n_edges}")
        keep = torch.zeros(self.graph.n_edges, dtype=torch.bool)
        keep[self.order(ranking)[:n]] = True
        return prune(self.graph, keep) if pruned else keep

    def top(self, k: int = 20, ranking: str = "abs") -> list[tuple[str, str, float]]:
        """The k strongest edges as (src, dst, score)."""
        out = []
        for i in self.order(ranking)[:k].tolist():
            e = self.graph.edge(i)
            out.append((e.src.name, e.dst.name, float(self.scores[i])))
        return out


def check_method(method: str, steps: int) -> None:
    if method not in METHODS:
        raise WorkbenchError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    if method == "eap-ig" and steps < 1:
        raise WorkbenchError(f"EAP-IG needs at least 1 step (got {steps})")


def attribute(
    model: Model,
    task: Task,
    method: str = "eap-ig",
    steps: int = 5,
    at: str = "clean",
    batch_size: int = 80,
    progress: Progress | None = None,
) -> EdgeScores:
    """Score every edge of the model's graph on `task` (see the module docstring). `batch_size` is
    the most rows one forward+backward runs: prompts x EAP-IG steps stacked along the batch
    (default 80: 16 prompts x 5 steps in one pass)."""
    task = as_task(task)
    check_method(method, steps)
    if at not in ("clean", "corrupted"):
        raise WorkbenchError(f"EAP takes its gradient at 'clean' or 'corrupted', not {at!r}")
    if batch_size < 1:
        raise WorkbenchError(f"a batch of {batch_size} rows: choose at least 1")
    task.check(model)
    if method == "exact":
        from interp.circuits.edges import edge_effects

        return edge_effects(model, task, progress=progress)
    graph = Graph.of(model)
    alphas = ([1.0] if at == "clean" else [0.0]) if method == "eap" else [k / steps for k in range(steps)]
    dev = model.device
    pull = _Pullback(model, graph)
    St = torch.zeros(len(graph.readers), len(graph.writers), dtype=torch.float32, device=dev)  # [reader, writer]
    chunks = [_on(part, dev) for part in task.chunks(min(batch_size, len(task)))]
    plans = [_stacks(alphas, max(1, batch_size // len(part))) for part in chunks]
    total, done = sum(len(p) for p in plans), [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total, f"{method} gradients")

    sums = sum(_chunk_scores(model, graph, pull, part, alphas, plan, St, len(task), tick) for part, plan in zip(chunks, plans))
    scores = (St[graph.dst.to(dev), graph.src.to(dev)] / len(alphas)).cpu()
    sums = sums.cpu()
    return EdgeScores(graph, scores, method, task.name, task.metric, len(task), float(sums[0] / len(task)),
                      float(sums[1] / len(task)), steps if method == "eap-ig" else None,
                      at if method == "eap" else "clean")  # fmt: skip


def _chunk_scores(model: Model, graph: Graph, pull: _Pullback, part: Task, alphas: list[float],
                  plan: list[list[float]], St: Tensor, n_total: int, tick) -> Tensor:  # fmt: skip
    """Add one chunk of prompts' scores into St [reader, writer] (pass by pass, `plan`'s steps
    stacked in each) and return the sums of its clean and corrupted metrics [2] (float64)."""
    W, P = len(graph.writers), len(part)
    x0 = hooks.capture(model, torch.cat([part.clean, part.corrupted]), [hooks.name("resid_pre", 0)])
    x0_clean, x0_corr = x0[hooks.name("resid_pre", 0)].split(P)
    # the run without a gradient: the clean one (EAP-IG, EAP at corrupted) or the corrupted one
    plain = part.corrupted if alphas == [1.0] else part.clean
    logits, a_plain = writer_outputs(model, plain, graph)
    plain_end = end_logits(logits, part.end)
    del logits
    metric = None if alphas == [1.0] else metric_fn(part, plain_end)  # None: kl's reference is the pass's own run
    acc: dict[tuple[int | None, str], Tensor] = {}
    D = sums = None
    for i, group in enumerate(plan):
        sink: dict[int, Tensor] = {}
        x = torch.cat([_interpolate(x0_clean, x0_corr, a) for a in group])
        run = _gradient_pass(model, part, metric, x, len(group), n_total, sink if i == 0 else None)
        if i == 0:  # the pass's first P rows are an end point (alpha 0 or 1): a real run
            end, a_pass = run.end[0], stack_writers(sink, W)
            if metric is None:
                clean_end, corr_end = end, plain_end
                metric = metric_fn(part, clean_end)
                a_clean, a_corr = a_pass, a_plain
            else:
                clean_end, corr_end = plain_end, end
                a_clean, a_corr = a_plain, a_pass
            sums = torch.stack([metric(clean_end).sum(), metric(corr_end).sum()]).double()
            # activation differences as one [writer, batch*pos*d_model] matrix
            D = (a_clean.float() - a_corr.float()).permute(2, 0, 1, 3).reshape(W, -1)
            del a_clean, a_corr, a_pass, a_plain, sink
        for key, cols, n, G in pull.pullback(run):
            if len(plan) == 1:  # contract at once: only one layer's gradients are alive
                _contract(St, cols, n, G, D)
            elif key in acc:
                acc[key] += G
            else:
                acc[key] = G
        del run
        tick()
    for key, G in acc.items():
        cols, n = pull.where[key]
        _contract(St, cols, n, G, D)
    return sums


def _stacks(alphas: list[float], per: int) -> list[list[float]]:
    """The steps in consecutive groups of at most `per`, each group one forward+backward."""
    return [alphas[i : i + per] for i in range(0, len(alphas), per)]


def _on(part: Task, dev) -> Task:
    """The task with everything its metric reads on `dev` (no host-device copies inside the loops)."""
    move = lambda x: None if x is None else x.to(dev)  # noqa: E731
    return replace(part, end=part.end.to(dev), answers=part.answers.to(dev), distractors=move(part.distractors),
                   sides=move(part.sides), candidates=move(part.candidates))  # fmt: skip


def _contract(St: Tensor, cols: slice, n: int, G: Tensor, D: Tensor) -> None:
    """St[cols, :n] += G [reader, batch*pos*d_model] . D[:n] [writer, batch*pos*d_model]."""
    g = G.reshape(G.shape[0], -1) if G.dim() > 1 else G.reshape(1, -1)
    St[cols, :n].addmm_(g, D[:n].T)


def _interpolate(clean: Tensor, corrupted: Tensor, alpha: float) -> Tensor:
    """corrupted + alpha (clean - corrupted), exactly the endpoints at alpha 0 and 1."""
    if alpha == 1.0:
        return clean
    if alpha == 0.0:
        return corrupted
    return corrupted + alpha * (clean - corrupted)


@dataclass
class _Pass:
    """One forward+backward of s stacked steps: the gradients at each projection's output (`grad`)
    and the outputs themselves (`value`), the residual streams the norms read, the logits at END."""

    grad: dict[str, Tensor]
    value: dict[str, Tensor]
    resid: dict[str, Tensor]
    end: Tensor  # [step batch vocab]
    steps: int


def _gradient_pass(model: Model, task: Task, metric, x0: Tensor, steps: int, n_total: int,
                   sink: dict | None = None) -> _Pass:  # fmt: skip
    """d(sum of the metric / n_total) at every head's q (per query head), k and v (per KV head)
    before rotary, at each MLP's normalized input and at the final norm's input, with the
    embedding set to x0 ([steps*batch pos d_model]: `steps` copies of the batch, step-major).
    The first batch's writers go into `sink` when given. `metric` None: the metric is built from
    this run's own logits (the clean run: kl's reference is itself)."""
    L = model.info.n_layers
    captured: dict[str, Tensor] = {}
    resid: dict[str, Tensor] = {}
    leaf = x0.detach().requires_grad_(True)

    def set_embedding(x, hook=None):
        return leaf

    def keep(name: str):
        def hook(x, hook=None):  # a new autograd node (a view, no copy): its gradient is this input's
            y = x.view_as(x)  # alone, even where the bridge hands the hook a tensor something else reads
            captured[name] = y
            return y

        return hook

    def remember(name: str):
        def hook(x, hook=None):
            resid[name] = x.detach()

        return hook

    grab = [hooks.name(k, layer) for layer in range(L) for k in ("q", "k", "v")]
    grab += [f"blocks.{layer}.mlp.hook_in" for layer in range(L)] if not model.info.attn_only else []
    grab.append("ln_final.hook_in")
    seen = [hooks.name("resid_pre", layer) for layer in range(L)]
    seen += [hooks.name("resid_mid", layer) for layer in range(L)] if not model.info.attn_only else []
    fwd = [(hooks.name("resid_pre", 0), set_embedding)] + [(n, remember(n)) for n in seen] + [(n, keep(n)) for n in grab]
    if sink is not None:
        fwd += writer_hooks(model, Graph.of(model), sink.__setitem__, rows=len(task))
    with torch.enable_grad():
        logits = model.run_with_hooks(task.clean.repeat(steps, 1), fwd_hooks=fwd)
        end = end_logits(logits, task.end).view(steps, len(task), -1)
        del logits
        metric = metric or metric_fn(task, end[0].detach())
        total = metric(end).sum() / n_total
        missing = [n for n in grab + seen if n not in captured and n not in resid]
        if missing:
            raise WorkbenchError(f"the bridge never ran hook {missing[0]}; edge attribution cannot run on {model.info.name}")
        grads = torch.autograd.grad(total, [captured[n] for n in grab], allow_unused=True)
    got = {n: torch.zeros_like(captured[n]) if g is None else g for n, g in zip(grab, grads)}
    return _Pass(got, {n: captured[n].detach() for n in grab}, resid, end.detach(), steps)


class _Pullback:
    """From one pass's gradients at the projections to the gradient at every input's own copy of
    the residual stream, summed over the pass's stacked steps: [reader, batch*pos, d_model] per
    layer and input kind, with the reader columns and the writer prefix it is contracted with.

    A layer's q, k and v gradients g_r (per query / KV head r) are carried back through W_r and the
    norm analytically. With x the residual stream, inv = 1/rms (RMSNorm; 1/std of the centred x for
    LayerNorm), xhat = x inv, w the norm's weight and u_r = w * (W_r g_r) the cotangent at xhat,
    the norm's vector-Jacobian product is inv (u_r - mean(u_r) - xhat mean(u_r xhat)) (RMSNorm
    without the mean(u_r) term). Summed over the steps s this is

        W'_r (sum_s inv_s g_r,s) - [LN] (sum_s inv_s g_r,s) . m_r - sum_s inv_s dot_r,s xhat_s

    with W'_r = w * W_r folded once per call, m_r = W_r^T w / d_model, and dot_r = mean(u_r xhat)
    = g_r . (h_r - c_r) / d_model read off the projection's own output h_r (its constant part c_r,
    the biases, taken away): one contraction with W' per layer on the prompt batch instead of one
    per step, and no [step, batch, pos, reader, d_model] tensor. An MLP's input is the same with W
    the identity. `reference` is the plain autograd version (tests hold the two together)."""

    def __init__(self, model: Model, graph: Graph):
        info, cfg = model.info, model.bridge.cfg
        self.model, self.graph, self.d = model, graph, info.d_model
        self.norm = None if info.normalization is None else ("LN" if info.normalization.startswith("LN") else "RMS")
        self.where: dict[tuple[int | None, str], tuple[slice, int]] = {}
        self.attn, self.mlp = [], []
        for layer in range(info.n_layers):
            block = model.bridge.blocks[layer]
            idx = torch.cat([graph.layer_readers(layer, k) for k in "qkv"])
            first, r = int(idx[0]), len(idx)
            if not torch.equal(idx, torch.arange(first, first + r)):
                raise WorkbenchError("the graph's q, k and v inputs of a layer are not consecutive")  # a graph.py change
            self.where[(layer, "attn")] = (slice(first, first + r), graph.n_writers_before(graph.readers[first]))
            a = block.attn
            Wc = torch.cat([a.W_Q, a.W_K, a.W_V]).detach().float()  # [reader d_model d_head]
            w, b, eps = _norm_form(block.ln1, self.norm, cfg, Wc.device)
            bias = [getattr(a, f"b_{k}", None) for k in "QKV"]
            c = torch.cat([x.detach().float() for x in bias]) if all(x is not None for x in bias) else torch.zeros_like(Wc[:, 0])
            if b is not None:
                c = c + einsum(b, Wc, "d, r d e -> r e")
            m = einsum(w, Wc, "d, r d e -> r e") / self.d if self.norm == "LN" else None
            Wt = (Wc * w[None, :, None]).transpose(1, 2).contiguous().to(a.W_Q.dtype)  # [reader d_head d_model]
            self.attn.append((Wt, c if bool(c.any()) else None, m, eps))
            if graph.has_mlp:
                self.where[(layer, "mlp")] = (slice(first + r, first + r + 1), graph.n_writers_before(graph.readers[first + r]))
                self.mlp.append(_norm_form(block.ln2, self.norm, cfg, Wc.device))
        R = len(graph.readers)
        self.where[(None, "logits")] = (slice(R - 1, R), len(graph.writers))

    def pullback(self, run: _Pass):
        """`gradients`, once per model first held to `reference` on a real pass: a norm or bias the
        analytic form misreads (another parametrisation) falls back to the reference, with a warning."""
        key = id(self.model)
        if key not in _ANALYTIC:
            fast, slow = list(self.gradients(run)), list(self.reference(run))
            tol = 1e-3 if self.model.dtype == torch.float32 else 5e-2
            _ANALYTIC[key] = all(float((f[3] - r[3]).norm()) <= tol * float(r[3].norm()) + 1e-12 for f, r in zip(fast, slow))
            if not _ANALYTIC[key]:
                warnings.warn(f"{self.model.info.name}: the analytic norm pull-back disagrees with autograd; "
                              "edge attribution takes the slower autograd path", stacklevel=3)  # fmt: skip
            return iter(fast if _ANALYTIC[key] else slow)
        return self.gradients(run) if _ANALYTIC[key] else self.reference(run)

    def _stats(self, x: Tensor, eps: float) -> tuple[Tensor | None, Tensor]:
        """(inv [rows pos], xhat [rows pos d_model]) in float32; (None, x) without a norm."""
        if self.norm is None:
            return None, x.float()
        xf = x.float()
        if self.norm == "LN":
            xf = xf - xf.mean(-1, keepdim=True)
        inv = (xf.square().mean(-1) + eps).rsqrt()
        return inv, xf * inv[..., None]  # not in place: x.float() may be the pass's own residual stream

    def gradients(self, run: _Pass):
        """(key, reader columns, writer prefix, gradient [reader, batch*pos, d_model]) per input group."""
        s, d = run.steps, self.d
        for layer in range(len(self.attn)):
            Wt, c, m, eps = self.attn[layer]
            inv, xhat = self._stats(run.resid[hooks.name("resid_pre", layer)], eps)
            names = [hooks.name(k, layer) for k in "qkv"]
            g = torch.cat([run.grad[n] for n in names], dim=2).float()  # [rows pos reader d_head]
            A = g if inv is None else g * inv[:, :, None, None]
            A = A.view(s, -1, *A.shape[2:]).sum(0)  # [batch*pos reader d_head]
            G = torch.bmm(A.transpose(0, 1).to(Wt.dtype), Wt).float()  # [reader batch*pos d_model]
            if inv is not None:
                dot = (g * torch.cat([run.value[n] for n in names], dim=2)).sum(-1)
                if c is not None:
                    dot -= einsum(g, c, "n p r e, r e -> n p r")
                F = (dot * (inv / d)[..., None]).view(s, -1, dot.shape[-1])
                G -= einsum(F, xhat.view(s, -1, d), "s n r, s n d -> r n d")
                if m is not None:
                    G -= einsum(A, m, "n r e, r e -> r n")[..., None]
            yield ((layer, "attn"), *self.where[(layer, "attn")], G)
            if self.mlp:
                w, b, eps = self.mlp[layer]
                inv, xhat = self._stats(run.resid[hooks.name("resid_mid", layer)], eps)
                name = f"blocks.{layer}.mlp.hook_in"
                g = run.grad[name].float()
                A = g if inv is None else g * inv[..., None]
                G = A.view(s, -1, d).sum(0) * w  # [batch*pos d_model]
                if inv is not None:
                    dot = (g * run.value[name]).sum(-1)
                    if b is not None:
                        dot -= g @ b
                    if self.norm == "LN":
                        G -= G.mean(-1, keepdim=True)
                    F = (dot * inv / d).view(s, -1, 1)
                    G -= (F * xhat.view(s, -1, d)).sum(0)
                yield ((layer, "mlp"), *self.where[(layer, "mlp")], G[None])
        yield ((None, "logits"), *self.where[(None, "logits")], run.grad["ln_final.hook_in"].float().view(s, -1, d).sum(0)[None])

    def reference(self, run: _Pass):
        """`gradients` the plain way: each step's cotangents through W_Q[h] (W_K[g], W_V[g]) and
        autograd through the block's own norm module, row by row, then summed over the steps."""
        s, d = run.steps, self.d
        for layer in range(len(self.attn)):
            block = self.model.bridge.blocks[layer]
            a = block.attn
            cot = [einsum(run.grad[hooks.name(k, layer)], W, "b p h e, h d e -> b p h d")
                   for k, W in (("q", a.W_Q), ("k", a.W_K), ("v", a.W_V))]  # fmt: skip
            back = _norm_vjp(block.ln1, run.resid[hooks.name("resid_pre", layer)], torch.cat(cot, dim=2))
            G = back.reshape(s, -1, back.shape[2], d).sum(0).transpose(0, 1)
            yield ((layer, "attn"), *self.where[(layer, "attn")], G)
            if self.mlp:
                g = run.grad[f"blocks.{layer}.mlp.hook_in"][:, :, None]
                back = _norm_vjp(block.ln2, run.resid[hooks.name("resid_mid", layer)], g)[:, :, 0]
                yield ((layer, "mlp"), *self.where[(layer, "mlp")], back.reshape(s, -1, d).sum(0)[None])
        yield ((None, "logits"), *self.where[(None, "logits")], run.grad["ln_final.hook_in"].float().view(s, -1, d).sum(0)[None])


def _norm_form(norm, kind: str | None, cfg, device) -> tuple[Tensor, Tensor | None, float]:
    """(weight [d_model], bias or None, eps) of a block's norm, in float32 (weight 1 without one)."""
    mod = getattr(norm, "original_component", norm)
    pick = lambda *names: next((getattr(mod, n) for n in names if getattr(mod, n, None) is not None), None)  # noqa: E731
    w, b = pick("weight", "w"), pick("bias", "b")
    eps = pick("eps", "variance_epsilon")
    eps = float(eps if eps is not None else getattr(cfg, "eps", 1e-5))
    d = cfg.d_model
    w = torch.ones(d, device=device) if w is None or kind is None else w.detach().float()
    b = None if b is None or kind != "LN" or not bool(b.detach().any()) else b.detach().float()
    return w, b, eps


def _norm_vjp(norm, x: Tensor, cot: Tensor) -> Tensor:
    """cot [batch pos r d] pulled back through `norm` at x [batch pos d], for each of the r rows."""
    with torch.enable_grad():
        rep = x[:, :, None].expand(-1, -1, cot.shape[2], -1).detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(norm(rep), rep, cot.to(rep.dtype))
    return g.float()
