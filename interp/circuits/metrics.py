"""IOI metrics: the logit difference and the normalized patching metric (pure tensor math)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


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
