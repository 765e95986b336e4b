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
through its W_Q[h] (W_K[g], W_V[g]) and the block's norm at that layer's residual stream (one
vector-Jacobian product per layer). Tests hold the result to finite differences of exact edge
patching and to TransformerLens's split-input gradients.

Cost: EAP-IG is one clean forward (no gradient; it gives the clean writers and the clean logits)
plus m forward+backward passes (the k = 0 pass *is* the corrupted run, so the corrupted writers are
read from it), batched over prompts (`batch_size` at a time); the m gradients are summed per input
and contracted with the activation differences once per batch. EAP is one forward+backward at the
clean run and one corrupted forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.circuits.graph import Graph, prune
from interp.circuits.readers import input_hook, layer_inputs, stack_writers, writer_hooks, writer_outputs
from interp.data.tasks import Task, as_task, end_logits, metric_fn
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

METHODS: tuple[str, ...] = ("eap-ig", "eap", "exact")
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
    batch_size: int = 16,
    progress: Progress | None = None,
) -> EdgeScores:
    """Score every edge of the model's graph on `task` (see the module docstring)."""
    task = as_task(task)
    check_method(method, steps)
    if at not in ("clean", "corrupted"):
        raise WorkbenchError(f"EAP takes its gradient at 'clean' or 'corrupted', not {at!r}")
    task.check(model)
    if method == "exact":
        from interp.circuits.edges import edge_effects

        return edge_effects(model, task, progress=progress)
    graph = Graph.of(model)
    alphas = ([1.0] if at == "clean" else [0.0]) if method == "eap" else [k / steps for k in range(steps)]
    W, R = len(graph.writers), len(graph.readers)
    dev = model.device
    S = torch.zeros(W, R, dtype=torch.float32, device=dev)
    inputs = layer_inputs(graph)
    prev = {name: graph.n_writers_before(graph.readers[int(idx[0])]) for name, _, _, idx in inputs}
    chunks = task.chunks(batch_size)
    total, done = len(chunks) * len(alphas), 0
    sums = torch.zeros(2, dtype=torch.float64)
    for part in chunks:
        # the embeddings of both runs (the forward stops right after them)
        x0 = {w: hooks.capture(model, t, [hooks.name("resid_pre", 0)])[hooks.name("resid_pre", 0)]
              for w, t in (("clean", part.clean), ("corrupted", part.corrupted))}  # fmt: skip
        if alphas == [1.0]:  # EAP at the clean run: the gradient pass is the clean run itself
            clean_end, metric = None, None
        else:
            clean_logits, a_clean = writer_outputs(model, part.clean, graph)
            clean_end = end_logits(clean_logits, part.end)
            metric = metric_fn(part, clean_end)
        grads: dict[str, Tensor] = {}
        for alpha in alphas:
            sink = {} if alpha in (0.0, 1.0) else None  # an end point is a real run: keep its writers
            grad, end = _input_gradients(model, part, metric, _interpolate(x0["clean"], x0["corrupted"], alpha), inputs,
                                         len(task), sink)  # fmt: skip
            if alpha == 1.0:
                a_clean, clean_end = stack_writers(sink, W), end
                metric = metric_fn(part, clean_end)
            elif alpha == 0.0:
                a_corr, corr_end = stack_writers(sink, W), end
            for name, g in grad.items():
                grads[name] = g if name not in grads else grads[name] + g
            done += 1
            if progress:
                progress(done, total, f"{method} gradients")
        if 0.0 not in alphas:
            corr_logits, a_corr = writer_outputs(model, part.corrupted, graph)
            corr_end = end_logits(corr_logits, part.end)
        sums += torch.stack([metric(clean_end).sum().cpu(), metric(corr_end).sum().cpu()]).double()
        # activation differences as one [writer, batch*pos*d_model] matrix, contracted per input group
        D = (a_clean - a_corr).float().permute(2, 0, 1, 3).reshape(W, -1)
        del a_clean, a_corr
        for name, kind, layer, idx in _grouped(graph, inputs):
            if kind == "attn":  # a layer's q, k and v inputs read the same writers: one product
                g = torch.cat([grads.pop(input_hook(k, layer)) for k in "qkv"], dim=2)
            else:
                g = grads.pop(name)[:, :, None]
            n = prev[name]
            S[:n, idx.to(dev)] += D[:n] @ g.permute(0, 1, 3, 2).reshape(-1, g.shape[2])  # [batch*pos*d, reader]
        del D
    scores = (S[graph.src.to(dev), graph.dst.to(dev)] / len(alphas)).cpu()
    return EdgeScores(graph, scores, method, task.name, task.metric, len(task), float(sums[0] / len(task)),
                      float(sums[1] / len(task)), steps if method == "eap-ig" else None,
                      at if method == "eap" else "clean")  # fmt: skip


def _grouped(graph: Graph, inputs):
    """The input hooks with each layer's q, k and v merged into one 'attn' group (reader indices
    concatenated in graph order), named by the layer's q hook."""
    out = []
    for name, kind, layer, idx in inputs:
        if kind == "q":
            out.append((name, "attn", layer, torch.cat([graph.layer_readers(layer, k) for k in "qkv"])))
        elif kind not in ("k", "v"):
            out.append((name, kind, layer, idx))
    return out


def _interpolate(clean: Tensor, corrupted: Tensor, alpha: float) -> Tensor:
    """corrupted + alpha (clean - corrupted), exactly the endpoints at alpha 0 and 1."""
    if alpha == 1.0:
        return clean
    if alpha == 0.0:
        return corrupted
    return corrupted + alpha * (clean - corrupted)


def _input_gradients(model: Model, task: Task, metric, x0: Tensor, inputs, n_total: int,
                     sink: dict | None = None) -> tuple[dict[str, Tensor], Tensor]:  # fmt: skip
    """d(sum of the metric / n_total)/d(each input's own residual copy), with the embedding set to
    x0, and the logits at END; writers' outputs go into `sink` when given. `metric` None: the
    metric is built from this run's own logits (the clean run: kl's reference is itself).

    One ordinary forward and backward (no per-input copies are built): the gradient is taken at
    each head's q (per query head), k and v (per KV head) before rotary, at the MLP's normalized
    input and at the final norm's input, then carried back through W_Q[h] (W_K[g], W_V[g]) and the
    block's norm at that layer's residual stream with one vector-Jacobian product per layer. That
    is the gradient with respect to that input's own copy (tests hold it to finite differences of
    exact edge patching and to TransformerLens's split-input gradients)."""
    L = model.info.n_layers
    captured: dict[str, Tensor] = {}
    resid: dict[str, Tensor] = {}

    def set_embedding(x, hook=None):
        return x0.detach().clone().requires_grad_(True)

    def keep(name: str):
        def hook(x, hook=None):  # a fresh tensor: its gradient is this input's alone, even where the
            y = x.clone()  # bridge hands the hook a tensor something else also reads
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
        fwd += writer_hooks(model, Graph.of(model), sink.__setitem__)
    with torch.enable_grad():
        logits = model.run_with_hooks(task.clean, fwd_hooks=fwd)
        end = end_logits(logits, task.end)
        metric = metric or metric_fn(task, end.detach())
        total = metric(end).sum() / n_total
        missing = [n for n in grab + seen if n not in captured and n not in resid]
        if missing:
            raise WorkbenchError(f"the bridge never ran hook {missing[0]}; edge attribution cannot run on {model.info.name}")
        grads = torch.autograd.grad(total, [captured[n] for n in grab], allow_unused=True)
        got = {n: torch.zeros_like(captured[n]) if g is None else g for n, g in zip(grab, grads)}
    with torch.no_grad():
        out: dict[str, Tensor] = {"ln_final.hook_in": got["ln_final.hook_in"].float()}
        for layer in range(L):
            block = model.bridge.blocks[layer]
            a = block.attn
            cot = [einops.einsum(got[hooks.name(k, layer)], W, "b p h e, h d e -> b p h d")
                   for k, W in (("q", a.W_Q), ("k", a.W_K), ("v", a.W_V))]  # fmt: skip
            sizes = [c.shape[2] for c in cot]
            back = _norm_vjp(block.ln1, resid[hooks.name("resid_pre", layer)], torch.cat(cot, dim=2))
            for k, part in zip("qkv", back.split(sizes, dim=2)):
                out[input_hook(k, layer)] = part
            if not model.info.attn_only:
                mid = _norm_vjp(block.ln2, resid[hooks.name("resid_mid", layer)], got[f"blocks.{layer}.mlp.hook_in"][:, :, None])
                out[input_hook("mlp", layer)] = mid[:, :, 0]
    return out, end.detach()


def _norm_vjp(norm, x: Tensor, cot: Tensor) -> Tensor:
    """cot [batch pos r d] pulled back through `norm` at x [batch pos d], for each of the r rows."""
    with torch.enable_grad():
        rep = x[:, :, None].expand(-1, -1, cot.shape[2], -1).detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(norm(rep), rep, cot.to(rep.dtype))
    return g.float()
