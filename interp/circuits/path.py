"""Path patching (Wang et al. 2022, appendix B), fast and batched over sender heads, on any Task.

Step 1: run the clean prompts with every attention head frozen at its clean output except the
sender, which takes its output from the corrupted run; MLPs and norms are recomputed.
Step 2 (receivers only): run the clean prompts again with the receiver heads' query/key/value
inputs taken from step 1 at the chosen positions; everything else is recomputed. The result is the
task's metric at END (IOI: the logit difference).

Why this is fast. With every head frozen, nothing moves between positions in step 1, so a sender's
effect at a position only flows through the MLPs at that same position: step 1 is an MLP-only pass
at the few positions that matter (END for the logits, the receiver position otherwise), batched over
all senders, one variant each (`frozen_pass`). In step 2 a receiver's output is recomputed over a
window from the patched position to END (`receiver_z`), and the model is replayed from the first
receiver layer over that window only, against the clean keys and values before it: the replayed
block of interp.circuits.replay, with the receivers' outputs overridden.

Positions are the task's named positions (IOI: IO, S1, S1+1, S2, END; every task has END).

GQA. A receiver is a *query* head. Its key/value input is patched for that head alone: its own k/v
are recomputed from the patched residual stream, while the other query heads sharing the same KV
head keep the clean k/v (the reference computes the receiver's output in a separate run and patches
its `hook_z`).

Low precision: the modules run in the model's dtype, sums in float32 (interp.circuits.replay); each
batch also carries a null variant (nothing patched) through the same kernels, and a variant's result
is the clean metric plus its difference from the null one, so the replay's own rounding cancels
instead of showing up as an effect. Every step is checked against the bridge (`check_null`: the
replay with nothing patched must give back the clean run, or the fast path refuses to run), and tests
compare the whole engine with the brute-force reference (interp.circuits.path_reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.circuits.replay import ACC, Edit, Keys, Replay, Span, gather_pos, reads_2d
from interp.data.task import READS, Task, end_logits, metric_fn, normalized, resid_metric
from interp.errors import WorkbenchError
from interp.types import COMPONENTS, Head, Progress

if TYPE_CHECKING:
    from interp.models import Model

Metric = Callable[[Tensor], Tensor]  # final residual at END [variant batch d_model] -> [variant batch]


@dataclass
class Receivers:
    """Where senders' paths end, when not at the logits."""

    heads: list[Head]  # receiver (layer, query head) pairs
    components: str = "q"  # which inputs to patch: any of "q", "k", "v" (e.g. "kv")
    position: str | None = "END"  # named task position whose inputs are patched; None patches every position

    def __post_init__(self):
        if not self.heads:
            raise WorkbenchError("path patching needs at least one receiver head")
        if not self.components or set(self.components) - set(COMPONENTS):
            raise WorkbenchError(f"receiver components {self.components!r}: use letters from 'qkv'")


@dataclass
class PathResult:
    """Per-sender, per-prompt metric values (IOI: logit differences) after patching each sender's path."""

    senders: list[Head]  # the sender heads, in the order of `patched`
    patched: Float[Tensor, "sender batch"]  # the metric with that sender's path patched
    clean: Float[Tensor, "batch"]  # the clean metric
    corrupted: Float[Tensor, "batch"]  # the corrupted metric

    def normalized(self) -> Float[Tensor, "sender"]:
        """(patched - clean) / (clean - corrupted) of the mean metric: 0 = no effect, -1 = all of it."""
        return normalized(self.patched.mean(1), self.clean.mean(), self.corrupted.mean())

    def grid(self, n_layers: int, n_heads: int) -> Float[Tensor, "layer head"]:
        """`normalized()` laid out as [layer, head] (NaN for heads that were not senders)."""
        out = torch.full((n_layers, n_heads), float("nan"))
        for (layer, head), v in zip(self.senders, self.normalized().tolist()):
            out[layer, head] = v
        return out


@dataclass
class PatchCaches:
    """What path patching reads from the two real runs: the clean run's cache (every hook the replay
    needs), the corrupted run's head outputs, and both runs' metric per prompt."""

    clean: dict[str, Tensor]  # hook name -> clean activation [batch pos ...]
    corrupted: dict[str, Tensor]  # hook name -> corrupted hook_z [batch pos head d_head]
    clean_metric: Float[Tensor, "batch"]
    corrupted_metric: Float[Tensor, "batch"]

    @classmethod
    @torch.no_grad()
    def collect(cls, model: Model, task: Task, extra: list[str] = ()) -> PatchCaches:
        """Run the clean and the corrupted prompts once each; the clean run keeps the replay's hooks
        and `extra` ones (e.g. attention patterns)."""
        wanted = set(Replay.of(model).all_cache_names()) | set(extra)
        clean_logits, clean = model.run_with_cache(task.clean, names_filter=lambda n: n in wanted)
        z_names = set(hooks.names("z", range(model.info.n_layers)))
        corr_logits, corr = model.run_with_cache(task.corrupted, names_filter=lambda n: n in z_names)
        missing = sorted(wanted - set(clean.keys()))
        if missing:
            raise WorkbenchError(
                f"{model.info.name} does not expose the hooks fast patching replays ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}); use interp.circuits.path_reference.path_patch_reference"
            )
        clean_end = end_logits(clean_logits, task.reads)
        m = metric_fn(task, clean_end)
        return cls(dict(clean.items()), dict(corr.items()), m(clean_end), m(end_logits(corr_logits, task.reads)))

    def subset(self, idx: Int[Tensor, "n"], n_pos: int, names: list[str]) -> PatchCaches:
        """The caches of prompts `idx` over their first `n_pos` positions (as `Task.subset` cuts them):
        the clean hooks `names` and every corrupted one (batch first, positions second; a tensor
        shared by every prompt, batch 1, is kept whole)."""
        B = len(self.clean_metric)

        def cut(x: Tensor) -> Tensor:
            return (x[idx.to(x.device)] if x.shape[0] == B else x)[:, :n_pos]

        return PatchCaches({n: cut(self.clean[n]) for n in names}, {n: cut(x) for n, x in self.corrupted.items()},
                           self.clean_metric[idx.to(self.clean_metric.device)],
                           self.corrupted_metric[idx.to(self.corrupted_metric.device)])  # fmt: skip


def all_heads(model: Model) -> list[Head]:
    return [(layer, h) for layer in range(model.info.n_layers) for h in range(model.info.n_heads)]


def frozen_pass(rp: Replay, cache: PatchCaches, senders: list[Head], P: Int[Tensor, "batch p"],
                targets: list[int]) -> dict[int, Float[Tensor, "variant batch p d_model"]]:  # fmt: skip
    """Step 1: the residual stream entering each target layer (n_layers = the final residual) at
    positions P, one variant per sender (sorted by layer), every head frozen at its clean output but
    that sender (corrupted); float32, on the target layer's device. Targets below a sender's layer get
    the clean residual for that variant. Each variant's change of the residual is summed in float32;
    an MLP's change is its output on the changed input minus its output on the clean one, both from
    the same call (a null row rides along), so a change too small to alter its input adds nothing."""
    clean = cache.clean
    layers = [layer for layer, _ in senders]
    D: Tensor | None = None  # each variant's change of the residual stream [variant batch p d_model]
    out = {}
    for layer in range(min(min(layers), min(targets)), max(targets) + 1):
        dev = rp.device_of(layer)
        Pl = P.to(dev)
        if D is None:
            D = torch.zeros(len(senders), *P.shape, clean[hooks.name("resid_pre", 0)].shape[-1], dtype=ACC, device=dev)
        D = D.to(dev)
        if layer in targets:
            out[layer] = rp.stream_at(cache.clean, layer, Pl) + D
        if layer == rp.n_layers:
            break
        act = sum(x <= layer for x in layers)  # senders are sorted: this layer's rows are first..act-1
        first = layers.index(layer) if layer in layers else act
        if layer in layers:
            heads = torch.tensor([h for _, h in senders[first:act]], device=dev)
            z = hooks.name("z", layer)
            dz = gather_pos(cache.corrupted[z].to(dev), Pl).to(ACC) - gather_pos(clean[z].to(dev), Pl).to(ACC)
            D[first:act] += rp.head_out(layer, heads, einops.rearrange(dz[:, :, heads], "b p n e -> n b p e"))
        if act and rp.has_mlp:
            mid = gather_pos(clean[hooks.name("resid_mid", layer)].to(dev), Pl).to(ACC)
            y = rp.mlp(layer, mid + torch.cat([D[:act], D.new_zeros(1, *D.shape[1:])]))  # last row: clean
            D[:act] += y[:act] - y[act:]
    return out


def _into_window(base: Tensor, new: Tensor, every: bool) -> Tensor:
    """The window's values with the patched position(s) replaced: the first window entry (a named
    position starts the window) or, when every position is patched, all of them."""
    if every:
        return new[:, :, : base.shape[2]]
    out = base.expand(new.shape[0], *base.shape[1:]).clone()
    out[:, :, :1] = new
    return out


def receiver_z(rp: Replay, cache: PatchCaches, layer: int, head: int, comps: str, P: Tensor, resid: Tensor,
               span: Span, every: bool) -> Float[Tensor, "variant batch win d_head"]:  # fmt: skip
    """Step 2a: the receiver head's output over the span, its q/k/v inputs at P taken from `resid`
    (step 1's residual stream there), the clean ones elsewhere (all on the layer's device)."""
    g = rp.kv_of(head)
    column = {"q": head, "k": rp.n_heads + g, "v": rp.n_heads + rp.n_kv + g}
    cos, sin = rp.cos_sin(cache.clean, layer, P)
    dev = rp.device_of(layer)
    full, win = {}, {}
    for c in "qkv":
        i = head if c == "q" else g
        full[c] = rp.cached(cache.clean, layer, c).to(dev)[:, :, i : i + 1]  # clean, rotated [batch pos 1 e]
        win[c] = gather_pos(full[c], span.pos)[None]
        if c in comps:
            new = rp.project(layer, rp.ln1(layer, resid), torch.tensor([column[c]], device=dev))
            new = new if c == "v" else rp.rotate(new, cos, sin)
            win[c] = _into_window(win[c], new, every)
    S = resid.shape[0]
    q, k, v = (win[c].expand(S, *win[c].shape[1:]) for c in "qkv")
    rows = torch.arange(span.width, device=dev).expand(span.pos.shape[0], -1)
    return rp.attend(q, k, v, rows, span, Keys(full["k"], full["v"]), heads=torch.tensor([head]))[..., 0, :]


def _overrides(rp: Replay, span: Span, replaced: dict[Head, Tensor]) -> Callable[[int], Edit | None]:
    """Per layer, the edit that sets each receiver's output to its recomputed z (at END alone in a
    last layer computed at END only)."""

    def at(layer: int) -> Edit | None:
        mine = {h: z for (rl, h), z in replaced.items() if rl == layer}
        if not mine:
            return None

        def edit(z: Tensor) -> Tensor:
            z = z.clone()
            for h, zh in mine.items():
                zh = zh.to(z.device)
                if z.shape[2] != zh.shape[2]:  # queries at the reads (END) only
                    S, rows = zh.shape[0], span.rows.to(z.device)
                    zh = gather_pos(zh.flatten(0, 1), rows.repeat(S, 1)).view(S, -1, rows.shape[1], zh.shape[-1])
                z[:, :, :, h] = zh.to(z.dtype)
            return z

        return Edit(z=edit)

    return at


def receiver_final(rp: Replay, cache: PatchCaches, receivers: list[Head], comps: str, every: bool, P: Tensor,
                   end: Tensor, resid: dict[int, Tensor]) -> Float[Tensor, "variant batch d_model"]:  # fmt: skip
    """Step 2: each receiver's output recomputed from `resid` (step 1's residual at its layer), then the
    model replayed over the window P..END with those outputs; the final residual at END (`end`: the
    metric's reads, Task.reads; the window ends at the last of them, the residual is read at each)."""
    T = cache.clean[hooks.name("resid_pre", 0)].shape[1]
    end = end.to(P.device)
    span = Span.of(P[:, 0], reads_2d(end).amax(1), T, end)
    zs = {}
    for layer, h in receivers:
        dev = rp.device_of(layer)
        zs[(layer, h)] = receiver_z(rp, cache, layer, h, comps, P.to(dev), resid[layer].to(dev), span.to(dev), every)
    first = min(layer for layer, _ in receivers)
    S = next(iter(zs.values())).shape[0]
    X = gather_pos(cache.clean[hooks.name("resid_pre", first)].to(rp.device_of(first)), span.pos.to(rp.device_of(first)))
    return rp.run(X.to(ACC).expand(S, -1, -1, -1), span, first, cache.clean, lambda layer: rp.keys(cache.clean, layer),
                  _overrides(rp, span, zs))  # fmt: skip


def receiver_pass(rp: Replay, cache: PatchCaches, receivers: list[Head], comps: str, every: bool, P: Tensor,
                  end: Tensor, resid: dict[int, Tensor], metric: Metric) -> Float[Tensor, "variant batch"]:  # fmt: skip
    """`metric` after step 2 for each variant of `resid`: the clean metric plus the variant's difference
    from a null variant (the receivers' inputs clean) replayed in the same batch."""
    resid = {layer: torch.cat([rp.stream_at(cache.clean, layer, P)[None], r.to(rp.device_of(layer))]) for layer, r in resid.items()}
    m = metric(receiver_final(rp, cache, receivers, comps, every, P, end, resid))
    return cache.clean_metric.to(m) + (m[1:] - m[:1])


@torch.no_grad()
def check_null(rp: Replay, cache: PatchCaches, receivers: list[Head], comps: str, every: bool, P: Tensor,
               end: Tensor, metric: Metric) -> None:  # fmt: skip
    """The window replay with nothing patched must give back the clean run: its final residual at END
    within rounding of the cached one (relative to that residual's largest entry: 1e-4 in float32,
    2^-5 in lower precision), and in float32 its metric within 1e-3."""
    layers = sorted({layer for layer, _ in receivers})
    got = receiver_final(rp, cache, receivers, comps, every, P, end,
                         {layer: rp.stream_at(cache.clean, layer, P)[None] for layer in layers})[0]  # fmt: skip
    want = rp.stream_at(cache.clean, rp.n_layers, reads_2d(end.to(P.device)))
    want = want[:, 0] if end.dim() == 1 else want
    rel = float(((got - want).abs().amax(-1) / want.abs().amax(-1).clamp_min(1e-30)).max())
    exact = rp.dtype == torch.float32
    err = float((metric(got[None])[0] - cache.clean_metric.to(got.device)).abs().max()) if exact else 0.0
    if rel > (1e-4 if exact else 2**-5) or err > 1e-3 * max(1.0, float(cache.clean_metric.abs().max())):
        raise WorkbenchError(
            f"fast path patching cannot replay this model's attention (off by {max(err, rel):.3g}); "
            "use interp.circuits.path_reference.path_patch_reference instead"
        )


@torch.no_grad()
def path_patch(
    model: Model,
    task: Task,
    senders: list[Head] | None = None,
    receivers: Receivers | None = None,
    chunk: int = 64,
    progress: Progress | None = None,
    caches: PatchCaches | None = None,
    grouped: bool | None = None,
) -> PathResult:
    """Path-patch every sender (default: every head) to the logits, or to `receivers`, on a task.
    `caches` (from `PatchCaches.collect`) lets several calls on the same prompts share one pair of runs.
    `grouped`: replay prompts in groups of similar window widths where that saves enough (`width_groups`;
    default: on the CPU, which is bound by arithmetic)."""
    rp = Replay.of(model)
    senders = list(senders) if senders is not None else all_heads(model)
    _check_heads(model, senders, "sender")
    if receivers is not None:
        _check_heads(model, receivers.heads, "receiver")
    cache = caches or PatchCaches.collect(model, task)
    if grouped is None:  # on an accelerator a replay costs its kernel count more than its padding
        grouped = task.clean.device.type == "cpu"
    groups = width_groups(task, receivers.position) if receivers is not None and grouped else None
    if groups is not None:  # prompts of similar windows together: less padding replayed (see width_groups)
        out = torch.empty(len(senders), len(task))
        names = rp.all_cache_names()
        for idx in groups:
            sub = task.subset(idx)
            part = path_patch(model, sub, senders, receivers, chunk, progress, cache.subset(idx, sub.clean.shape[1], names),
                              grouped=False)  # fmt: skip
            out[:, idx] = part.patched
        return PathResult(senders, out, cache.clean_metric.float().cpu(), cache.corrupted_metric.float().cpu())
    dev = task.clean.device
    end = task.reads.to(dev)  # where the metric reads: END ([batch]), or several positions ([batch read])
    one = (lambda x: x[:, :, 0]) if end.dim() == 1 else (lambda x: x)  # noqa: E731  (what the metric takes)
    B, T = task.clean.shape
    clean_end = end_logits(model(task.clean), task.reads) if task.metric == "kl" else None
    metric = resid_metric(model.bridge, task, clean_end)
    if receivers is None:
        P, targets = reads_2d(end), [rp.n_layers]
        null = metric(one(rp.stream_at(cache.clean, rp.n_layers, P)[None]))  # the replay's own clean metric
    else:
        pos = task.position(receivers.position)
        P = torch.arange(T, device=dev).expand(B, T) if pos is None else pos.to(dev)[:, None]
        if bool((reads_2d(end).amin(1) < P[:, 0]).any()):
            raise WorkbenchError(f"metric {task.metric!r} reads position {READS.get(task.metric, ('END',))[0]}, before "
                                 f"the receivers' position {receivers.position}: choose receivers at or before it")  # fmt: skip
        targets = sorted({layer for layer, _ in receivers.heads})
        every = receivers.position is None
        check_null(rp, cache, receivers.heads, receivers.components, every, P, end, metric)
    clean_metric = cache.clean_metric.float()  # results are float32 whatever the model's dtype
    out = clean_metric.new_empty(len(senders), B)
    last = max(targets)
    done = 0
    for idx in _batches(senders, targets, chunk):
        group = [senders[i] for i in idx]
        live = [j for j, (layer, _) in enumerate(group) if layer < last]  # others cannot reach any receiver
        res = clean_metric.expand(len(group), B).clone()
        if live:
            low = min(group[j][0] for j in live)
            if receivers is None:
                resid = frozen_pass(rp, cache, [group[j] for j in live], P, targets)
                effect = metric(one(resid[rp.n_layers])) - null  # the sums are float32; so is this difference
                res[live] = (clean_metric.to(effect.device) + effect).to(res)
            else:  # only the receivers above the batch's lowest sender: the replay starts at the first of them
                mine = [r for r in receivers.heads if r[0] > low]
                resid = frozen_pass(rp, cache, [group[j] for j in live], P, sorted({layer for layer, _ in mine}))
                got = receiver_pass(rp, cache, mine, receivers.components, every, P, end, resid, metric)
                res[live] = got.to(res)
        out[torch.tensor(idx)] = res
        done += len(idx)
        if progress:
            progress(done, len(senders), "path patching")
    return PathResult(senders, out.cpu(), clean_metric.cpu(), cache.corrupted_metric.float().cpu())


GROUP_SAVING = 0.15  # prompts are replayed in groups only when that cuts the padded window by this share


def width_groups(task: Task, position: str | None, most: int = 3, min_prompts: int = 8) -> list[Tensor] | None:
    """Prompts in up to `most` groups of similar window widths (from the receivers' `position` to the
    last position the metric reads), when replaying the groups apart pads at least GROUP_SAVING less
    than one batch padded to the widest window; else None. Each group's prompts are replayed exactly
    as in one batch (a prompt's result depends on its own positions only), over a narrower window."""
    if position is None or len(task) < 2 * min_prompts:
        return None
    width = reads_2d(task.reads).amax(1).cpu() - task.position(position).cpu() + 1
    order = torch.argsort(width, stable=True)
    w = width[order].tolist()
    n = len(w)

    def cost(cuts: tuple[int, ...]) -> int:  # padded positions when groups end (exclusive) at cuts
        bounds = (0, *cuts, n)
        return sum((b - a) * w[b - 1] for a, b in zip(bounds, bounds[1:]))

    options = [()] + [c for k in range(1, most) for c in combinations(range(min_prompts, n - min_prompts + 1), k)
                      if all(b - a >= min_prompts for a, b in zip(c, c[1:]))]  # fmt: skip
    best = min(options, key=cost)
    if not best or cost(best) > (1 - GROUP_SAVING) * cost(()):
        return None
    bounds = (0, *best, n)
    return [order[a:b].sort().values for a, b in zip(bounds, bounds[1:])]


def _batches(senders: list[Head], targets: list[int], chunk: int) -> list[list[int]]:
    """Sender indices in batches of at most `chunk`, by layer, a batch never spanning a target layer:
    each batch's receivers are those above its lowest sender, so a batch of later senders replays
    from a later layer."""
    order = sorted(range(len(senders)), key=lambda i: senders[i][0])
    out: list[list[int]] = []
    key = None
    for i in order:
        k = sum(t <= senders[i][0] for t in targets)  # how many target layers lie at or below the sender
        if not out or k != key or len(out[-1]) >= chunk:
            out.append([])
        out[-1].append(i)
        key = k
    return out


def _check_heads(model: Model, heads: list[Head], what: str) -> None:
    for layer, h in heads:
        if not (0 <= layer < model.info.n_layers and 0 <= h < model.info.n_heads):
            raise WorkbenchError(
                f"{what} head ({layer}, {h}) is outside the model ({model.info.n_layers} layers x {model.info.n_heads} heads)"
            )
