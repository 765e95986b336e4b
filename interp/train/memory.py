"""Will a micro-batch fit? A lower bound on what one training micro-batch holds in memory,
checked against what the device has free before training starts -- so a batch that cannot fit is
refused at once instead of swapping (or sitting at 0%) for minutes.

The bound counts only what the forward and backward must hold at the same time: the float32
logits and the log-probabilities cross-entropy keeps for the backward (each batch x n_ctx x
d_vocab), and per layer the activations autograd saves (residual stream in and out, q, k, v and
z, the MLP's hidden layer twice). Weights, optimizer state and attention patterns come on top,
so a batch refused here could never have fit.
"""

from __future__ import annotations

import torch

from interp.errors import WorkbenchError
from interp.models import device as device_memory
from interp.models.inhouse import NativeSpec

FLOAT32 = 4  # bytes


def logits_bytes(spec: NativeSpec, batch: int) -> int:
    """The float32 logits and their log-softmax: 2 x batch x n_ctx x d_vocab floats."""
    return 2 * batch * spec.n_ctx * spec.d_vocab * FLOAT32


def micro_batch_bytes(spec: NativeSpec, batch: int) -> int:
    """A lower bound on the bytes one micro-batch's forward and backward hold at once."""
    per_token_layer = 2 * spec.d_model + 4 * spec.n_heads * spec.d_head
    if not spec.attn_only:
        per_token_layer += 2 * (spec.d_mlp or 4 * spec.d_model)
    return logits_bytes(spec, batch) + batch * spec.n_ctx * spec.n_layers * per_token_layer * FLOAT32


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(spec: NativeSpec, batch: int, device: torch.device, processes: int = 1) -> None:
    """Refuse a per-device batch whose micro-batch cannot fit in the device's free memory
    (shared by `processes` processes: data-parallel ranks on one CPU)."""
    have = device_memory.available_bytes(device)
    need = micro_batch_bytes(spec, batch) * processes
    if have is None or need <= have:
        return
    shared = f" for each of {processes} processes" if processes > 1 else ""
    raise WorkbenchError(
        f"a micro-batch of {batch} sequences x {spec.n_ctx} tokens needs at least {_gib(need // processes)}{shared} "
        f"({_gib(logits_bytes(spec, batch))} for the logits alone) but {device} has {_gib(have)} free; lower "
        "per_device_train_batch_size and raise gradient_accumulation_steps to keep the effective batch"
    )
