"""Metrics: the IOI logit difference, the normalized patching metric, and any task's metric
read off the final residual stream (what the replay engines produce instead of logits)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.tasks import Task, metric_fn


def logit_diff_at(
    logits: Float[Tensor, "batch pos vocab"],
    io_ids: Int[Tensor, "batch"],
    s_ids: Int[Tensor, "batch"],
    end: Int[Tensor, "batch"],
) -> Float[Tensor, "batch"]:
    """logit(IO) - logit(S) at each prompt's own END position."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    last = logits[rows, end.to(logits.device)]
    return last[rows, io_ids.to(logits.device)] - last[rows, s_ids.to(logits.device)]


def logit_diff(logits: Float[Tensor, "batch pos vocab"], ds) -> Float[Tensor, "batch"]:
    """Per-prompt logit difference of an `IOIDataset` (logits may stack several copies of the batch)."""
    n = len(ds)
    reps = logits.shape[0] // n
    io, s, end = (x.repeat(reps) for x in (ds.io_ids, ds.s_ids, ds.positions["END"]))
    return logit_diff_at(logits, io, s, end)


def normalized(patched: Float[Tensor, "..."], clean: float | Tensor, corrupted: float | Tensor) -> Float[Tensor, "..."]:
    """(patched - clean) / (clean - corrupted): 0 when patching changes nothing, -1 when it
    brings the metric all the way to the corrupted value."""
    return (patched - clean) / (clean - corrupted)


def resid_metric(bridge, task: Task, clean_end: Float[Tensor, "batch vocab"] | None = None):
    """The task's metric as a function of the final residual stream at END, [..., batch, d_model]
    -> [..., batch]: final norm, unembedding, metric. For logit and logit-diff metrics only the
    needed columns of W_U are used (the same numbers, without the [..., batch, vocab] logits)."""
    W_U = bridge.W_U  # [d_model vocab]
    b_U = getattr(bridge, "b_U", None)
    full = metric_fn(task, clean_end)

    def column(x: Tensor, ids: Tensor) -> Tensor:
        ids = ids.to(x.device)
        out = torch.einsum("...bd,db->...b", x, W_U[:, ids].to(x.dtype))
        return out if b_U is None else out + b_U[ids].to(x.dtype)

    def metric(resid: Tensor) -> Tensor:
        x = bridge.ln_final(resid)
        if task.metric == "logit":
            return column(x, task.answers)
        if task.metric == "logit-diff":
            return column(x, task.answers) - column(x, task.distractors)
        logits = x @ W_U.to(x.dtype)
        return full(logits if b_U is None else logits + b_U.to(x.dtype))

    return metric
