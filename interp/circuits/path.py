"""Path patching (Wang et al. 2022, appendix B), fast and batched over sender heads.

Step 1: run the clean prompts with every attention head frozen at its clean output except the
sender, which takes its output from the corrupted (ABC) run; MLPs and norms are recomputed.
Step 2 (receivers only): run the clean prompts again with the receiver heads' query/key/value
inputs taken from step 1 at the chosen positions; everything else is recomputed. The result is
the logit difference at END.

Why this is fast. With every head frozen, nothing moves between positions in step 1, so a
sender's effect at a position only flows through the MLPs at that same position: step 1 is an
MLP-only pass at the few positions that matter (END for the logits, the receiver position
otherwise), batched over all senders. In step 2 only positions from the patched one up to END
can change, so the rest of the model runs on that window against the clean keys and values.

Any task. `path_patch` takes an `interp.data.tasks.Task` (an `IOIDataset` is read as the IOI
task): its metric at END (logit difference by default, any of the task metrics), its named
positions for receivers (IOI: IO, S1, S1+1, S2, END; every task has END).

GQA. A receiver is a *query* head. Its key/value input is patched for that head alone: its
own k/v are recomputed from the patched residual stream, while the other query heads sharing
the same KV head keep the clean k/v (`hook_k`/`hook_v` are per KV head, so the reference
implementation computes the receiver's output in a separate run and patches its `hook_z`).

Low precision and placement: see interp.circuits.replay (float32 sums, a null variant per batch,
tensors on each layer's device). Results are float32 whatever the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp.circuits.metrics import logit_diff, resid_metric
from interp.circuits.replay import PatchCaches, Replay
from interp.data.ioi import IOIDataset
from interp.data.tasks import Task, as_task, end_logits, metric_fn
from interp.errors import WorkbenchError
from interp.types import COMPONENTS, Head, Progress

if TYPE_CHECKING:
    from interp.models import Model


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
    corrupted: Float[Tensor, "batch"]  # the corrupted (IOI: ABC) metric

    def normalized(self) -> Float[Tensor, "sender"]:
        """(patched - clean) / (clean - corrupted) of the mean logit diffs: 0 = no effect, -1 = all of it."""
        c, r = self.clean.mean(), self.corrupted.mean()
        return (self.patched.mean(1) - c) / (c - r)

    def grid(self, n_layers: int, n_heads: int) -> Float[Tensor, "layer head"]:
        """`normalized()` laid out as [layer, head] (NaN for heads that were not senders)."""
        out = torch.full((n_layers, n_heads), float("nan"))
        for (layer, head), v in zip(self.senders, self.normalized().tolist()):
            out[layer, head] = v
        return out


def all_heads(model: Model) -> list[Head]:
    return [(layer, h) for layer in range(model.info.n_layers) for h in range(model.info.n_heads)]


@torch.no_grad()
def ioi_caches(model: Model, ds: IOIDataset) -> PatchCaches:
    """The clean cache path patching reads and the corrupted head outputs of an IOI dataset,
    with both runs' logit differences."""
    return PatchCaches.collect(model, ds.tokens, ds.corrupted_tokens, Replay.of(model).all_cache_names(),
                               lambda logits: logit_diff(logits, ds))


def logits_metric(task: Task):
    """The task's metric of a run's logits, for PatchCaches.collect (which runs the clean prompts
    first: the kl metric takes that first run as its reference)."""
    ref: dict[str, Tensor] = {}

    def metric(logits: Tensor) -> Tensor:
        end = end_logits(logits, task.end)
        ref.setdefault("clean", end)
        return metric_fn(task, ref["clean"])(end)

    return metric


@torch.no_grad()
def task_caches(model: Model, task: Task) -> PatchCaches:
    """`ioi_caches` for any task."""
    task = as_task(task)
    return PatchCaches.collect(model, task.clean, task.corrupted, Replay.of(model).all_cache_names(), logits_metric(task))


@torch.no_grad()
def path_patch(
    model: Model,
    ds: Task | IOIDataset,
    senders: list[Head] | None = None,
    receivers: Receivers | None = None,
    chunk: int = 64,
    progress: Progress | None = None,
    caches: PatchCaches | None = None,
) -> PathResult:
    """Path-patch every sender (default: every head) to the logits, or to `receivers`, on a task
    (or an IOIDataset). `caches` (from `task_caches`/`ioi_caches`) lets several calls on the same
    prompts share one pair of runs."""
    task = as_task(ds)
    rp = Replay.of(model)
    senders = list(senders) if senders is not None else all_heads(model)
    _check_heads(model, senders, "sender")
    if receivers is not None:
        _check_heads(model, receivers.heads, "receiver")
    cache = caches or task_caches(model, task)
    dev = task.clean.device
    end = task.end.to(dev)
    B, T = task.clean.shape
    if task.metric == "logit-diff":  # IOI's own expression, the numbers discovery was tuned on
        io, s = task.answers.to(dev), task.distractors.to(dev)

        def metric(resid_final: Tensor) -> Tensor:
            return rp.logit_diff(resid_final, io, s)
    else:
        clean_end = end_logits(model(task.clean), task.end) if task.metric == "kl" else None
        metric = resid_metric(model.bridge, task, clean_end)

    if receivers is None:
        P, targets = end[:, None], [rp.n_layers]
        null = metric(rp.clean_at(cache, rp.n_layers, P)[:, 0][None])  # the replay's own clean metric
    else:
        pos = task.position(receivers.position)
        P = torch.arange(T, device=dev).expand(B, T) if pos is None else pos.to(dev)[:, None]
        targets = sorted({layer for layer, _ in receivers.heads})
        every = receivers.position is None
        rp.check_null(cache, receivers.heads, receivers.components, every, P, end, metric)
    order = sorted(range(len(senders)), key=lambda i: senders[i][0])
    clean_metric = cache.clean_metric.float()  # results are float32 whatever the model's dtype
    out = clean_metric.new_empty(len(senders), B)
    last = max(targets)
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        group = [senders[i] for i in idx]
        live = [j for j, (layer, _) in enumerate(group) if layer < last]  # others cannot reach any receiver
        res = clean_metric.expand(len(group), B).clone()
        if live:
            resid = rp.frozen_pass(cache, [group[j] for j in live], P, targets)
            if receivers is None:
                effect = metric(resid[rp.n_layers][:, :, 0]) - null  # the sums are float32; so is this difference
                res[live] = (clean_metric.to(effect.device) + effect).to(res)
            else:
                got = rp.receiver_pass(cache, receivers.heads, receivers.components, every, P, end, resid, metric)
                res[live] = got.to(res)
        out[torch.tensor(idx)] = res
        if progress:
            progress(min(start + chunk, len(order)), len(order), "path patching")
    return PathResult(senders, out.cpu(), clean_metric.cpu(), cache.corrupted_metric.float().cpu())


def _check_heads(model: Model, heads: list[Head], what: str) -> None:
    for layer, h in heads:
        if not (0 <= layer < model.info.n_layers and 0 <= h < model.info.n_heads):
            raise WorkbenchError(
                f"{what} head ({layer}, {h}) is outside the model ({model.info.n_layers} layers x {model.info.n_heads} heads)"
            )
