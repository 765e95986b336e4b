"""Edge scores: EAP, EAP-IG, and exact edge patching, all in one sign convention.

The score of an edge e = (writer u -> input v) estimates how much the mean metric falls when e
alone is corrupted, i.e. when v reads u's corrupted output instead of its clean one:

    exact(e)  = m(clean) - m(clean with e corrupted)             one patched forward per edge
    EAP(e)    = (a_clean(u) - a_corr(u)) . dm/dx_v               gradient at the clean run
    EAP-IG(e) = (a_clean(u) - a_corr(u)) . mean_k dm/dx_v(k/m)   k = 0 .. m-1

summed over positions and averaged over prompts; x_v is v's own copy of the residual stream
(interp.bridge.split_inputs), a(u) is u's write into it. Positive scores are edges that carry the
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
norm's vector-Jacobian product written out (interp.circuits.pullback; held once per model to
autograd through the norm module itself, which it falls back to). Tests hold the result to finite
differences of exact edge patching and to TransformerLens's split-input gradients.

Both register in interp.circuits.methods (`eap`, `eap-ig`), beside exact patching, and so does EAP-IG
over activations (`eap-ig-act`, MIB's EAP-IG-activations: `eap_ig_activations` at the end of this module).

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

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from interp import hooks
from interp.circuits.capture import head_out, stack_writers, writer_hooks, writer_outputs
from interp.circuits.pullback import GradientPass, Pullback
from interp.circuits.types import EdgeScores, Graph
from interp.data.task import Task, end_logits, metric_fn
from interp.errors import WorkbenchError
from interp.types import Progress, check_mode

if TYPE_CHECKING:
    from interp.models import Model


def eap_ig(model: Model, task: Task, steps: int = 5, batch_size: int = 80,
           progress: Progress | None = None) -> EdgeScores:  # fmt: skip
    """EAP-IG scores of every edge on `task` (see the module docstring). `batch_size` is the most rows
    one forward+backward runs: prompts x steps stacked along the batch (default 80: 16 prompts x 5
    steps in one pass)."""
    if steps < 1:
        raise WorkbenchError(f"EAP-IG needs at least 1 step (got {steps})")
    return _gradient_scores(model, task, "eap-ig", [k / steps for k in range(steps)], batch_size, progress, steps=steps)


def eap(model: Model, task: Task, at: str = "clean", batch_size: int = 80, progress: Progress | None = None) -> EdgeScores:
    """EAP scores of every edge on `task`, the gradient taken at the clean run (or at the corrupted
    one: TransformerLens's attribution_patch)."""
    check_mode("gradient position", at)
    return _gradient_scores(model, task, "eap", [1.0] if at == "clean" else [0.0], batch_size, progress, at=at)


def _gradient_scores(model: Model, task: Task, method: str, alphas: list[float], batch_size: int,
                     progress: Progress | None, steps: int | None = None, at: str = "clean") -> EdgeScores:  # fmt: skip
    def chunk(graph, pull, part, plan, St, n_total, tick):
        return _chunk_scores(model, graph, pull, part, alphas, plan, St, n_total, tick)

    return _scores_by_chunks(model, task, method, alphas, chunk, batch_size, progress, steps, at)


def _scores_by_chunks(model: Model, task: Task, method: str, jobs: list, chunk, batch_size: int,
                      progress: Progress | None, steps: int | None, at: str = "clean") -> EdgeScores:  # fmt: skip
    """The gradient methods' one driver: the prompts in chunks of at most `batch_size`, each chunk's `jobs`
    (EAP-IG's alphas, eap-ig-act's (component, alpha) pairs) stacked into passes of at most `batch_size`
    rows; `chunk(graph, pull, part, plan, St, n_total, tick)` adds a chunk's scores into St [reader,
    writer] and returns its clean and corrupted metric sums; the scores are St's edges over len(jobs)."""
    if batch_size < 1:
        raise WorkbenchError(f"a batch of {batch_size} rows: choose at least 1")
    task.check(model)
    graph = Graph.of(model)
    dev = model.device
    pull = Pullback(model, graph)
    St = torch.zeros(len(graph.readers), len(graph.writers), dtype=torch.float32, device=dev)  # [reader, writer]
    chunks = [part.on(dev) for part in task.chunks(min(batch_size, len(task)))]
    plans = [_stacks(jobs, max(1, batch_size // len(part))) for part in chunks]
    total, done = sum(len(p) for p in plans), [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total, f"{method} gradients")

    sums = sum(chunk(graph, pull, part, plan, St, len(task), tick) for part, plan in zip(chunks, plans))
    scores = (St[graph.dst.to(dev), graph.src.to(dev)] / len(jobs)).cpu()
    sums = sums.cpu()
    return EdgeScores(graph, scores, method, task.name, task.metric, len(task), float(sums[0] / len(task)),
                      float(sums[1] / len(task)), steps, at)  # fmt: skip


def _chunk_scores(model: Model, graph: Graph, pull: Pullback, part: Task, alphas: list[float],
                  plan: list[list[float]], St: Tensor, n_total: int, tick) -> Tensor:  # fmt: skip
    """Add one chunk of prompts' scores into St [reader, writer] (pass by pass, `plan`'s steps
    stacked in each) and return the sums of its clean and corrupted metrics [2] (float64)."""
    W, P = len(graph.writers), len(part)
    x0 = hooks.capture(model, torch.cat([part.clean, part.corrupted]), [hooks.name("resid_pre", 0)])
    x0_clean, x0_corr = x0[hooks.name("resid_pre", 0)].split(P)
    # the run without a gradient: the clean one (EAP-IG, EAP at corrupted) or the corrupted one
    plain = part.corrupted if alphas == [1.0] else part.clean
    logits, a_plain = writer_outputs(model, plain, graph)
    plain_end = end_logits(logits, part.reads)
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
        _gather(pull, run, acc, St, D, at_once=len(plan) == 1)
        del run
        tick()
    _flush(pull, acc, St, D)
    return sums


def _gather(pull: Pullback, run: GradientPass, acc: dict, St: Tensor, D: Tensor, at_once: bool) -> None:
    """One pass's gradients at every input: contracted with D into St at once (a single pass: only one
    layer's gradients are alive at a time), or summed into `acc` over the passes for `_flush`."""
    for key, cols, n, G in pull.pullback(run):
        if at_once:
            _contract(St, cols, n, G, D)
        elif key in acc:
            acc[key] += G
        else:
            acc[key] = G


def _flush(pull: Pullback, acc: dict, St: Tensor, D: Tensor) -> None:
    """Contract the gradients summed over several passes with D into St."""
    for key, G in acc.items():
        cols, n = pull.where[key]
        _contract(St, cols, n, G, D)


def _stacks(alphas: list[float], per: int) -> list[list[float]]:
    """The steps in consecutive groups of at most `per`, each group one forward+backward."""
    return [alphas[i : i + per] for i in range(0, len(alphas), per)]


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


def _gradient_pass(model: Model, task: Task, metric, x0: Tensor, steps: int, n_total: int,
                   sink: dict | None = None, extra: list = ()) -> GradientPass:  # fmt: skip
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
    grab += [hooks.name("mlp_normed", layer) for layer in range(L)] if not model.info.attn_only else []
    grab.append(hooks.name("final_in"))
    seen = [hooks.name("resid_pre", layer) for layer in range(L)]
    seen += [hooks.name("resid_mid", layer) for layer in range(L)] if not model.info.attn_only else []
    fwd = [(hooks.name("resid_pre", 0), set_embedding)] + [(n, remember(n)) for n in seen] + [(n, keep(n)) for n in grab]
    if sink is not None:
        fwd += writer_hooks(model, Graph.of(model), sink.__setitem__, rows=len(task))
    fwd += list(extra)  # more forward hooks (eap_ig_activations: a component's output interpolated)
    with torch.enable_grad():
        logits = model.run_with_hooks(task.clean.repeat(steps, 1), fwd_hooks=fwd)
        end = end_logits(logits, task.reads)
        end = end.view(steps, len(task), *end.shape[1:])
        del logits
        metric = metric or metric_fn(task, end[0].detach())
        total = metric(end).sum() / n_total
        missing = [n for n in grab + seen if n not in captured and n not in resid]
        if missing:
            raise WorkbenchError(f"the bridge never ran hook {missing[0]}; edge attribution cannot run on {model.info.name}")
        grads = torch.autograd.grad(total, [captured[n] for n in grab], allow_unused=True)
    got = {n: torch.zeros_like(captured[n]) if g is None else g for n, g in zip(grab, grads)}
    return GradientPass(got, {n: captured[n].detach() for n in grab}, resid, end.detach(), steps)


# -- EAP-IG over activations --------------------------------------------------------------------------


def eap_ig_activations(model: Model, task: Task, steps: int = 5, batch_size: int = 80,
                       progress: Progress | None = None) -> EdgeScores:  # fmt: skip
    """EAP-IG over activations (MIB's EAP-IG-activations; `get_scores_ig_activations` in Hanna's EAP-IG
    code, read for its definition): integrated gradients along the path between the corrupted and the
    clean *outputs* of each component instead of the input embeddings.

    The components are the embedding, each layer's attention (all its heads at once) and each MLP,
    C = 1 + 2 x layers of them. For component c and k = 1, ..., m (the clean end included, the
    corrupted one not), the model runs on the clean prompts with c's output *set* to
    a_corr(c) + (k/m)(a_clean(c) - a_corr(c)) -- a constant: nothing flows back through c, so the inputs
    of c itself get no gradient in that run -- and everything after it recomputed. Every such run's
    gradients at every input are averaged over all C x m runs, and

        score(u -> v) = (a_clean(u) - a_corr(u)) . mean_{c, k} dm/dx_v(c, k)

    summed over positions and averaged over prompts (our sign: see the module docstring). An
    attention layer is interpolated in z, before W_O (the same as per head after it: W_O is linear).

    Cost: one forward of the clean and corrupted prompts stacked, then C x m forward+backward passes'
    worth of rows, stacked along the batch as EAP-IG's steps are (at most `batch_size` rows a pass)."""
    if steps < 1:
        raise WorkbenchError(f"EAP-IG over activations needs at least 1 step (got {steps})")
    jobs = [(c, k / steps) for c in components(Graph.of(model)) for k in range(1, steps + 1)]

    def chunk(graph, pull, part, plan, St, n_total, tick):
        return _activation_chunk(model, graph, pull, part, plan, St, n_total, tick)

    return _scores_by_chunks(model, task, "eap-ig-act", jobs, chunk, batch_size, progress, steps)


def components(graph: Graph) -> list[tuple[str, int | None]]:
    """What EAP-IG over activations interpolates, in forward order: the embedding, then per layer its
    attention (every head) and its MLP."""
    out: list[tuple[str, int | None]] = [("embed", None)]
    for layer in range(graph.n_layers):
        out += [("attn", layer)] + ([("mlp", layer)] if graph.has_mlp else [])
    return out


def _component_site(kind: str, layer: int | None) -> str:
    return {"embed": hooks.name("resid_pre", 0), "attn": hooks.name("z", layer), "mlp": hooks.name("mlp_out", layer)}[kind]


def _activation_chunk(model: Model, graph: Graph, pull: Pullback, part: Task, plan: list[list], St: Tensor,
                      n_total: int, tick) -> Tensor:  # fmt: skip
    """Add one chunk of prompts' EAP-IG-over-activations scores into St [reader, writer] and return the
    sums of its clean and corrupted metrics [2] (float64)."""
    P = len(part)
    sites = [_component_site(*c) for c in components(graph)]
    got: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(x, hook=None):
            got[name] = x.detach()

        return hook

    with torch.no_grad():
        logits = model.run_with_hooks(torch.cat([part.clean, part.corrupted]), fwd_hooks=[(n, keep(n)) for n in sites])
        clean_end, corr_end = end_logits(logits, part.reads).split(P)
        del logits
        clean = {n: x[:P] for n, x in got.items()}
        corr = {n: x[P:] for n, x in got.items()}
        metric = metric_fn(part, clean_end)
        sums = torch.stack([metric(clean_end).sum(), metric(corr_end).sum()]).double()
        a_clean, a_corr = (_writers(model, graph, run) for run in (clean, corr))
        D = (a_clean.float() - a_corr.float()).permute(2, 0, 1, 3).reshape(len(graph.writers), -1)
        del a_clean, a_corr
    embed = hooks.name("resid_pre", 0)
    acc: dict[tuple[int | None, str], Tensor] = {}
    for group in plan:
        fixed: dict[str, dict[int, Tensor]] = {}  # site -> {stacked step: its interpolated output}
        for g, ((kind, layer), alpha) in enumerate(group):
            site = _component_site(kind, layer)
            fixed.setdefault(site, {})[g] = _interpolate(clean[site], corr[site], alpha)
        x0 = torch.cat([fixed.get(embed, {}).get(g, clean[embed]) for g in range(len(group))])
        extra = [(site, _set_rows(rows, P)) for site, rows in fixed.items() if site != embed]
        run = _gradient_pass(model, part, metric, x0, len(group), n_total, extra=extra)
        _gather(pull, run, acc, St, D, at_once=len(plan) == 1)
        del run
        tick()
    _flush(pull, acc, St, D)
    return sums


def _writers(model: Model, graph: Graph, run: dict[str, Tensor]) -> Tensor:
    """Every writer's output [batch pos writer d_model] from a run's embedding, z and MLP outputs."""
    out = [run[hooks.name("resid_pre", 0)][:, :, None]]
    for layer in range(graph.n_layers):
        out.append(head_out(model, layer, run[hooks.name("z", layer)]))
        if graph.has_mlp:
            out.append(run[hooks.name("mlp_out", layer)][:, :, None])
    return torch.cat(out, dim=2)


def _set_rows(rows: dict[int, Tensor], P: int):
    """A forward hook setting the stacked steps `rows` (each P prompts) to fixed values: constants, so no
    gradient flows back through them; the other steps pass through untouched."""

    def hook(x, hook=None):
        parts = list(x.split(P))
        for g, value in rows.items():
            parts[g] = value.to(x.dtype)
        return torch.cat(parts)

    return hook
