"""Keys: the prefixes that make each FFN neuron fire hardest (its trigger examples).

The memory coefficient of neuron i at a position is the MLP's post-activation there
(`blocks.{l}.mlp.hook_post`): GELU(x·k_i) for GELU MLPs, act(x·g_i)·(x·u_i) for gated MLPs
(checked against the HF weights in tests/memories/test_memories_values.py).

`merge_topk` is the pure streaming step: it folds one batch of coefficients into a running
top-k kept on the model's device, so memory is O(layers · d_mlp · k) whatever the corpus size.
`KeyCollector` owns that state for several layers and hands out the forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def coefficient_hook(layer: int) -> str:
    """The hook whose activation is the memory coefficient of every neuron of `layer`."""
    return f"blocks.{layer}.mlp.hook_post"


def merge_topk(
    top_coef: Float[Tensor, "*layer k neuron"],
    top_ref: Int[Tensor, "*layer k neuron"],
    coef: Float[Tensor, "*layer pos neuron"],
    refs: Int[Tensor, " pos"],
    valid: Bool[Tensor, " pos"] | None = None,
) -> tuple[Float[Tensor, "*layer k neuron"], Int[Tensor, "*layer k neuron"], Int[Tensor, "*layer neuron"]]:
    """The running top-k (per neuron, largest first) after seeing `coef` at positions `refs`,
    and how many valid positions of this batch had a positive coefficient, per neuron.
    Leading dimensions (e.g. several layers stacked) are merged independently in the same calls.

    Invalid positions (padding, BOS) never enter; unfilled slots hold -inf and ref -1.
    One copy of the batch (the concatenation), masked in place, serves both results."""
    k = top_coef.shape[-2]
    cand = torch.cat([top_coef, coef.to(top_coef.dtype)], dim=-2)
    new_rows = cand[..., k:, :]
    if valid is not None:
        new_rows.masked_fill_(~valid[:, None], float("-inf"))
    positive = new_rows.gt(0).sum(-2)
    values, where = cand.topk(k, dim=-2)
    old = top_ref.gather(-2, where.clamp(max=k - 1))
    new = refs[(where - k).clamp(min=0)]
    ref = torch.where(where < k, old, new)
    ref = torch.where(torch.isfinite(values), ref, torch.full_like(ref, -1))
    return values, ref, positive


def empty_topk(k: int, d_mlp: int, device=None) -> tuple[Tensor, Tensor]:
    return (
        torch.full((k, d_mlp), float("-inf"), device=device),
        torch.full((k, d_mlp), -1, dtype=torch.long, device=device),
    )


@dataclass
class LayerKeys:
    coef: Float[Tensor, "k neuron"]  # the k largest coefficients seen, per neuron
    ref: Int[Tensor, "k neuron"]  # their global positions (window * seq_len + pos), -1 = empty
    active: Int[Tensor, " neuron"]  # how many valid positions had coefficient > 0


class KeyCollector:
    """Running top-k trigger positions and activity counts for the chosen layers, on `device`.

    Call `set_batch(refs, valid)` before each forward pass over a batch, with the global
    position of every token of the batch (flattened batch-major) and which ones count, and
    `flush()` after it.

    `stacked` (default: on CUDA) defers the merges: the hooks only keep each layer's
    coefficients, and `flush()` merges all pending layers in one stacked `merge_topk` -- a
    dozen kernel launches per batch instead of a dozen per layer, which is what bounds a small
    batch on a GPU. Pending coefficients are flushed early past `max_pending_bytes`. On CPU
    the per-layer merge is as fast and needs no extra memory."""

    def __init__(self, layers: list[int], d_mlp: int, k: int, device=None, stacked: bool | None = None,
                 max_pending_bytes: int = 1 << 30):
        self.layers = list(layers)
        self.device = device
        self.stacked = torch.device(device or "cpu").type == "cuda" if stacked is None else stacked
        self.max_pending_bytes = max_pending_bytes
        self.state = {}
        for layer in self.layers:
            coef, ref = empty_topk(k, d_mlp, device)
            self.state[layer] = LayerKeys(coef, ref, torch.zeros(d_mlp, dtype=torch.long, device=device))
        self.n_positions = 0  # valid positions seen so far
        self._refs: Tensor | None = None
        self._valid: Tensor | None = None
        self._pending: dict[int, Tensor] = {}
        self._pending_bytes = 0

    def set_batch(self, refs: Int[Tensor, " pos"], valid: Bool[Tensor, " pos"]) -> None:
        self.flush()  # anything still pending belongs to the previous batch's positions
        self.n_positions += int(valid.sum())  # counted before the move: no device sync
        self._refs = refs.to(self.device, non_blocking=True)
        self._valid = valid.to(self.device, non_blocking=True)

    def observe(self, layer: int, coef: Float[Tensor, "batch pos neuron"]) -> None:
        flat = coef.detach().reshape(-1, coef.shape[-1])
        if self.stacked:
            if layer in self._pending:
                self.flush()
            self._pending[layer] = flat
            self._pending_bytes += flat.numel() * flat.element_size()
            if self._pending_bytes > self.max_pending_bytes:
                self.flush()
            return
        s = self.state[layer]
        s.coef, s.ref, positive = merge_topk(s.coef, s.ref, flat, self._refs, self._valid)
        s.active += positive

    def flush(self) -> None:
        """Merge the pending layers' coefficients (stacked mode; a no-op otherwise)."""
        if not self._pending:
            return
        layers = list(self._pending)
        states = [self.state[layer] for layer in layers]
        coef, ref, positive = merge_topk(torch.stack([s.coef for s in states]), torch.stack([s.ref for s in states]),
                                         torch.stack([self._pending[layer] for layer in layers]),
                                         self._refs, self._valid)
        active = torch.stack([s.active for s in states]) + positive
        for i, s in enumerate(states):
            s.coef, s.ref, s.active = coef[i], ref[i], active[i]
        self._pending.clear()
        self._pending_bytes = 0

    def hooks(self) -> list[tuple[str, object]]:
        def make(layer: int):
            def hook(activation: Tensor, hook=None) -> Tensor:
                self.observe(layer, activation)
                return activation

            return hook

        return [(coefficient_hook(layer), make(layer)) for layer in self.layers]

    # -- checkpointing (plain tensors, so a safetensors file holds the whole state) ----------
    def state_dict(self) -> dict[str, Tensor]:
        self.flush()
        out = {"n_positions": torch.tensor([self.n_positions])}
        for layer, s in self.state.items():
            out[f"{layer}.coef"], out[f"{layer}.ref"], out[f"{layer}.active"] = s.coef, s.ref, s.active
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        self.n_positions = int(tensors["n_positions"][0])
        for layer, s in self.state.items():
            dev = s.coef.device
            s.coef = tensors[f"{layer}.coef"].to(dev)
            s.ref = tensors[f"{layer}.ref"].to(dev)
            s.active = tensors[f"{layer}.active"].to(dev)
