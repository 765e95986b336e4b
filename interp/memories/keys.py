"""Keys: the prefixes that make each FFN memory fire hardest (its trigger examples).

The memory coefficient of neuron i at a position is the MLP's post-activation there
(`blocks.{l}.mlp.hook_post`): GELU(x·k_i) for GELU MLPs, act(x·g_i)·(x·u_i) for gated MLPs
(checked against the HF weights in tests/memories/test_memories_values.py).

Both signs. Neuron i writes c_i · W_out[i]; that is also (-c_i) · (-W_out[i]), so a neuron holds
two memories: sign "+" (active where c_i > 0, value W_out[i]) and sign "-" (active where c_i < 0,
coefficient -c_i, value -W_out[i]). A memory is (layer, neuron, sign), and its coefficient is
sign · c_i; its trigger examples are the positions where that coefficient is largest, and only
positions where it is > 0 (where the memory is active) can be trigger examples.
For a gated MLP (SwiGLU) both sides are large: act(gate) · up is negative wherever up < 0 while
the gate is open. For a non-gated MLP (GELU, ReLU) the negative side is not a memory in Geva et
al.'s sense: ReLU never goes below 0, and GELU's minimum is about -0.17, reached at a
pre-activation of about -0.75, so its "strongest" negative triggers are the positions whose key
score sits near -0.75, not those most opposed to the key. Indexes of non-gated MLPs keep only "+"
(`signs_for`).

`merge_topk` is the streaming step: it folds one batch of coefficients into a running top-k kept
on the model's device, so memory is O(layers · signs · d_mlp · k) whatever the corpus size.
`merge_topk_sparse` gives the same result (up to ties) by first keeping only the coefficients
that beat each memory's current k-th best (few, once the first batches are in), so most of a
batch never reaches a top-k; on the CPU it is what makes two signs cost less than one did.
`KeyCollector` owns that state for several layers and hands out the forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import WorkbenchError
from interp.types import check_choice

Sign = Literal["+", "-"]
SIGNS: tuple[str, ...] = get_args(Sign)  # "+": coefficient > 0, value W_out[i]; "-": coefficient < 0, value -W_out[i]
SIGN_FACTOR = {"+": 1.0, "-": -1.0}


def check_sign(sign: str) -> str:
    """`sign` if it is "+" or "-", else a one-line WorkbenchError."""
    return check_choice(sign, SIGNS, "sign")


def signs_for(gated_mlp: bool) -> tuple[str, ...]:
    """The memory signs an index keeps: both for a gated MLP, "+" only otherwise (module doc)."""
    return SIGNS if gated_mlp else ("+",)


def memory_name(layer: int, neuron: int, sign: str) -> str:
    """How a memory is written for people: 'L21 N1298+'."""
    return f"L{layer} N{neuron}{sign}"


MEMORY_HELP = "LAYER:NEURON:SIGN, e.g. 21:1298:+ (sign + or -)"


def parse_memory(text: str) -> tuple[int, int, str]:
    """(layer, neuron, sign) from 'LAYER:NEURON:SIGN' (e.g. '21:1298:-'); the sign may be left
    out ('21:1298' = '+'). Ranges are checked where the model is known."""
    parts = text.strip().split(":")
    if len(parts) == 2:
        parts.append("+")
    try:
        layer, neuron = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise WorkbenchError(f"bad memory {text!r}: write {MEMORY_HELP}") from None
    if len(parts) != 3:
        raise WorkbenchError(f"bad memory {text!r}: write {MEMORY_HELP}")
    return layer, neuron, check_sign(parts[2])


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
    Leading dimensions (e.g. layers and signs stacked) are merged independently in the same calls.

    Invalid positions (padding, BOS) and coefficients <= 0 never enter; unfilled slots hold
    -inf and ref -1. One copy of the batch (the concatenation), masked in place, serves both results."""
    k = top_coef.shape[-2]
    cand = torch.cat([top_coef, coef.to(top_coef.dtype)], dim=-2)
    new_rows = cand[..., k:, :]
    if valid is not None:
        new_rows.masked_fill_(~valid[:, None], float("-inf"))
    active = new_rows.gt(0)
    positive = active.sum(-2)
    new_rows.masked_fill_(~active, float("-inf"))
    values, where = cand.topk(k, dim=-2)
    old = top_ref.gather(-2, where.clamp(max=k - 1))
    new = refs[(where - k).clamp(min=0)]
    ref = torch.where(where < k, old, new)
    ref = torch.where(torch.isfinite(values), ref, torch.full_like(ref, -1))
    return values, ref, positive


def count_signs(
    coef: Float[Tensor, "pos neuron"], valid: Bool[Tensor, " pos"] | None, signs: tuple[str, ...]
) -> Int[Tensor, "sign neuron"]:
    """Per sign, how many valid positions have that sign's coefficient > 0: two float
    mat-vecs over sign(c) (exact: every partial sum is an integer far below 2^24)."""
    pos = coef.shape[0]
    if pos >= 1 << 23:  # beyond exact float32 counting: the plain way
        ok = valid[:, None] if valid is not None else True
        return torch.stack([((coef > 0) if s == "+" else (coef < 0)).logical_and(ok).sum(0) for s in signs])
    w = valid.float() if valid is not None else torch.ones(pos, device=coef.device)
    sgn = coef.sign().float()
    net, nonzero = w @ sgn, w @ sgn.abs()  # (#pos - #neg), (#pos + #neg)
    return torch.stack([(nonzero + net if s == "+" else nonzero - net).div(2).round().long() for s in signs])


def merge_topk_sparse(
    top_coef: Float[Tensor, "*layer sign k neuron"],
    top_ref: Int[Tensor, "*layer sign k neuron"],
    coef: Float[Tensor, "*layer pos neuron"],
    refs: Int[Tensor, " pos"],
    valid: Bool[Tensor, " pos"] | None = None,
    signs: tuple[str, ...] = ("+", "-"),
    max_new: int | None = None,
) -> tuple[Float[Tensor, "*layer sign k neuron"], Int[Tensor, "*layer sign k neuron"], Int[Tensor, "*layer sign neuron"]]:
    """`merge_topk(top_coef, top_ref, signed(coef, signs), refs, valid)` through a threshold:
    only coefficients above a memory's current k-th best (and above 0) can enter, so they are
    gathered (nonzero) and merged into the few memories that have any. A memory with more than
    `max_new` (default 2k) candidates in this batch -- every memory in the first batches, later
    a memory whose trigger token comes in a burst -- gets the dense merge, for its own column
    only. Leading dimensions (layers stacked) work as in `merge_topk`. Same values as
    `merge_topk`; refs may differ only among equal values. Three host syncs per sign."""
    *lead, n_signs, k, n = top_coef.shape
    pos = coef.shape[-2]
    blocks = top_coef.reshape(-1, n_signs, k, n)
    block_refs = top_ref.reshape(-1, n_signs, k, n)
    coef3 = coef.reshape(-1, pos, n)
    cap = max_new if max_new is not None else 2 * k
    values, refs_out = blocks.clone(), block_refs.clone()
    for s, sign in enumerate(signs):
        thr = blocks[:, s, k - 1].clamp(min=0)[:, None, :]  # [block, 1, neuron]
        enter = coef3 > thr if sign == "+" else coef3 < -thr
        if valid is not None:
            enter &= valid[None, :, None]
        b, p, nn = enter.nonzero(as_tuple=True)
        if len(b) == 0:
            continue
        column = b * n + nn  # a memory: (block, neuron) of this sign
        counts = torch.bincount(column, minlength=blocks.shape[0] * n)
        old_coef = values[:, s].permute(1, 0, 2).reshape(k, -1).clone()  # [k, block * neuron], a copy
        old_ref = refs_out[:, s].permute(1, 0, 2).reshape(k, -1).clone()
        over = counts > cap
        if bool(over.any()):  # these memories' columns, merged densely
            cols = over.nonzero().squeeze(-1)
            memory = coef3[cols // n, :, cols % n].T  # [pos, column]
            memory = memory if sign == "+" else -memory
            old_coef[:, cols], old_ref[:, cols], _ = merge_topk(old_coef[:, cols], old_ref[:, cols], memory, refs, valid)
            keep = ~over[column]
            b, p, nn, column = b[keep], p[keep], nn[keep], column[keep]
            counts = counts.masked_fill(over, 0)
        if len(column):
            m = int(counts.max())
            order = column.argsort(stable=True)
            b, p, nn, column = b[order], p[order], nn[order], column[order]
            cols = counts.nonzero().squeeze(-1)  # memories with candidates, ascending like column
            col_of = torch.full_like(counts, -1)
            col_of[cols] = torch.arange(len(cols), device=cols.device)
            slot = torch.arange(len(column), device=column.device) - (counts.cumsum(0) - counts)[column]
            new_coef = torch.full((m, len(cols)), float("-inf"), dtype=values.dtype, device=values.device)
            new_ref = torch.full((m, len(cols)), -1, dtype=refs_out.dtype, device=refs_out.device)
            got = coef3[b, p, nn].to(values.dtype)
            new_coef[slot, col_of[column]] = got if sign == "+" else -got
            new_ref[slot, col_of[column]] = refs[p].to(refs_out.dtype)
            best, where = torch.cat([old_coef[:, cols], new_coef]).topk(k, dim=0)
            old_coef[:, cols] = best
            old_ref[:, cols] = torch.cat([old_ref[:, cols], new_ref]).gather(0, where)
        values[:, s] = old_coef.reshape(k, -1, n).permute(1, 0, 2)
        refs_out[:, s] = old_ref.reshape(k, -1, n).permute(1, 0, 2)
    active = torch.stack([count_signs(c, valid, signs) for c in coef3])
    return values.reshape(top_coef.shape), refs_out.reshape(top_ref.shape), active.reshape(*lead, n_signs, n)


def empty_topk(k: int, d_mlp: int, device=None, n_signs: int | None = None) -> tuple[Tensor, Tensor]:
    """An empty running top-k: [k, d_mlp], or [n_signs, k, d_mlp] when `n_signs` is given."""
    shape = (k, d_mlp) if n_signs is None else (n_signs, k, d_mlp)
    return (
        torch.full(shape, float("-inf"), device=device),
        torch.full(shape, -1, dtype=torch.long, device=device),
    )


def signed(coef: Float[Tensor, "pos neuron"], signs: tuple[str, ...]) -> Float[Tensor, "sign pos neuron"]:
    """Each sign's memory coefficients (sign · c) stacked: [c] or [c, -c]."""
    return torch.stack([coef if s == "+" else -coef for s in signs])


@dataclass
class LayerKeys:
    coef: Float[Tensor, "sign k neuron"]  # the k largest coefficients seen, per memory (sign, neuron)
    ref: Int[Tensor, "sign k neuron"]  # their global positions (window * seq_len + pos), -1 = empty
    active: Int[Tensor, "sign neuron"]  # how many valid positions had that sign's coefficient > 0


class KeyCollector:
    """Running top-k trigger positions and activity counts, for the chosen layers and `signs`
    (default both), on `device`.

    Call `set_batch(refs, valid)` before each forward pass over a batch, with the global
    position of every token of the batch (flattened batch-major) and which ones count, and
    `flush()` after it.

    `stacked` (default: on CUDA) defers the merges: the hooks only keep each layer's
    coefficients, and `flush()` merges all pending layers and signs in one stacked call -- a
    few dozen kernel launches per batch instead of a few dozen per layer, which is what bounds a
    small batch on a GPU. Pending coefficients are flushed early past `max_pending_bytes`.
    Otherwise (the CPU default) each layer is merged as it comes. Either way the merge is
    `merge_topk_sparse` (`sparse=False`: the dense `merge_topk`, twice the work for two signs).
    Measured on an H200 (synthetic SwiGLU coefficients, 30 x 1536 neurons, top-25, past 40k
    positions, float32): one stacked flush of 4096 / 8192 positions took 9.5 / 17.5 ms dense
    with one sign, 20.5 / 38.1 ms dense with two, 11.8 / 15.2 ms sparse with two."""

    def __init__(self, layers: list[int], d_mlp: int, k: int, device=None, stacked: bool | None = None,
                 max_pending_bytes: int = 1 << 30, signs: tuple[str, ...] = SIGNS, sparse: bool = True):
        self.layers = list(layers)
        self.signs = tuple(check_sign(s) for s in signs)
        self.device = device
        self.stacked = torch.device(device or "cpu").type == "cuda" if stacked is None else stacked
        self.sparse = sparse
        self.max_pending_bytes = max_pending_bytes
        self.state = {}
        for layer in self.layers:
            coef, ref = empty_topk(k, d_mlp, device, len(self.signs))
            active = torch.zeros(len(self.signs), d_mlp, dtype=torch.long, device=device)
            self.state[layer] = LayerKeys(coef, ref, active)
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
        if self.sparse:
            s.coef, s.ref, positive = merge_topk_sparse(s.coef, s.ref, flat, self._refs, self._valid, self.signs)
        else:
            s.coef, s.ref, positive = merge_topk(s.coef, s.ref, signed(flat, self.signs), self._refs, self._valid)
        s.active += positive

    def flush(self) -> None:
        """Merge the pending layers' coefficients (stacked mode; a no-op otherwise)."""
        if not self._pending:
            return
        layers = list(self._pending)
        states = [self.state[layer] for layer in layers]
        top, ref = torch.stack([s.coef for s in states]), torch.stack([s.ref for s in states])
        if self.sparse:
            pending = torch.stack([self._pending[layer] for layer in layers])
            coef, ref, positive = merge_topk_sparse(top, ref, pending, self._refs, self._valid, self.signs)
        else:
            pending = torch.stack([signed(self._pending[layer], self.signs) for layer in layers])
            coef, ref, positive = merge_topk(top, ref, pending, self._refs, self._valid)
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
