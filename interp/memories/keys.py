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
    coef: Float[Tensor, "*layer pos neuron"], valid: Bool[Tensor, " pos"] | None, signs: tuple[str, ...],
    matvec: bool | None = None,
) -> Int[Tensor, "*layer sign neuron"]:
    """Per sign, how many valid positions have that sign's coefficient > 0 (leading dimensions,
    e.g. stacked layers, counted in the same calls). `matvec` (the CPU default): two float
    mat-vecs over sign(c) (exact: every partial sum is an integer far below 2^24), what is
    fastest on a CPU; otherwise two comparisons summed over positions, which read the
    coefficients in their own dtype (a third of the bytes of the mat-vecs' float copies)."""
    pos = coef.shape[-2]
    if matvec is None:
        matvec = coef.device.type == "cpu"
    if not matvec or pos >= 1 << 23:  # (beyond exact float32 counting: the plain way too)
        ok = valid[:, None] if valid is not None else None
        sides = [(coef > 0) if s == "+" else (coef < 0) for s in signs]
        return torch.stack([(side if ok is None else side.logical_and_(ok)).sum(-2) for side in sides], dim=-2)
    w = valid.float() if valid is not None else torch.ones(pos, device=coef.device)
    sgn = coef.sign().float()
    net, nonzero = w @ sgn, w @ sgn.abs_()  # (#pos - #neg), (#pos + #neg)
    return torch.stack([(nonzero + net if s == "+" else nonzero - net).div_(2).round_().long() for s in signs], dim=-2)


def dense_batch_merge(
    state: Float[Tensor, "block sign k neuron"],
    state_refs: Int[Tensor, "block sign k neuron"],
    coef: Float[Tensor, "block pos neuron"],
    refs: Int[Tensor, " pos"],
    signs: tuple[str, ...],
) -> tuple[Tensor, Tensor]:
    """Every memory's top-k after the batch, from the batch's own top-k per memory (taken in the
    coefficients' dtype, the "-" side as the smallest c) merged with the state's: what the
    sparse merge does when most memories have too many candidates (the first batches).
    Invalid positions must hold 0 (they never enter: only coefficients > 0 do)."""
    k = state.shape[-2]
    values, out_refs = [], []
    for s, sign in enumerate(signs):
        got, where = coef.topk(min(k, coef.shape[-2]), dim=-2, largest=sign == "+")  # [block k neuron]
        got = got if sign == "+" else -got
        got = got.to(state.dtype).masked_fill_(got <= 0, float("-inf"))
        best, pick = torch.cat([state[:, s], got], dim=-2).topk(k, dim=-2)
        ref = torch.cat([state_refs[:, s], refs[where].to(state_refs.dtype)], dim=-2).gather(-2, pick)
        values.append(best)
        out_refs.append(torch.where(torch.isfinite(best), ref, torch.full_like(ref, -1)))
    return torch.stack(values, 1), torch.stack(out_refs, 1)


def merge_topk_sparse(
    top_coef: Float[Tensor, "*layer sign k neuron"],
    top_ref: Int[Tensor, "*layer sign k neuron"],
    coef: Float[Tensor, "*layer pos neuron"],
    refs: Int[Tensor, " pos"],
    valid: Bool[Tensor, " pos"] | None = None,
    signs: tuple[str, ...] = ("+", "-"),
    max_new: int | None = None,
    matvec: bool | None = None,
) -> tuple[Float[Tensor, "*layer sign k neuron"], Int[Tensor, "*layer sign k neuron"], Int[Tensor, "*layer sign neuron"]]:
    """`merge_topk(top_coef, top_ref, signed(coef, signs), refs, valid)` through a threshold:
    only coefficients above a memory's current k-th best (and above 0) can enter, so they are
    gathered (one nonzero for every sign and layer) and merged into the few memories that have
    any. A memory with more than `max_new` (default 2k) candidates in this batch -- a memory
    whose trigger token comes in a burst -- gets the dense merge, for its own column only; when
    most memories have that many (the first batches) the whole batch is merged densely from its
    own top-k (`dense_batch_merge`). Leading dimensions (layers stacked) work as in
    `merge_topk`. Same values as `merge_topk`; refs may differ only among equal values.

    The comparisons and the merge run in the state's dtype: give a state in the coefficients'
    dtype (KeyCollector does) and no copy of the batch is converted -- the values are the
    coefficients themselves, so the comparisons are exact in any dtype. Two host syncs in the
    steady state (three when some memory has too many candidates)."""
    *lead, n_signs, k, n = top_coef.shape
    pos = coef.shape[-2]
    state = top_coef.reshape(-1, n_signs, k, n)
    state_refs = top_ref.reshape(-1, n_signs, k, n)
    n_blocks, dev = state.shape[0], state.device
    coef3 = coef.reshape(-1, pos, n).to(state.dtype)
    if valid is not None:  # an invalid position holds 0: it never enters and counts for no sign
        coef3 = coef3.masked_fill(~valid[None, :, None], 0)
    active = count_signs(coef3, None, signs, matvec)  # [block sign neuron]
    cap = max_new if max_new is not None else 2 * k
    thr = state[:, :, k - 1].clamp(min=0)  # [block sign neuron]
    enter = torch.empty((n_blocks, n_signs, pos, n), dtype=torch.bool, device=dev)
    for s, sign in enumerate(signs):
        if sign == "+":
            torch.gt(coef3, thr[:, s, None], out=enter[:, s])
        else:
            torch.lt(coef3, -thr[:, s, None], out=enter[:, s])
    b, sg, p, nn = enter.nonzero(as_tuple=True)  # host sync 1
    del enter
    if len(b) == 0:
        return top_coef.clone(), top_ref.clone(), active.reshape(*lead, n_signs, n)
    column = (b * n_signs + sg) * n + nn  # a memory: (block, sign, neuron)
    n_memories = n_blocks * n_signs * n
    counts = torch.zeros(n_memories, dtype=torch.long, device=dev).index_add_(0, column, torch.ones_like(column))
    n_over, most, n_cols = torch.stack([(counts > cap).sum(), counts.max(), (counts > 0).sum()]).tolist()  # sync 2
    if 4 * n_over > n_cols:  # most memories with candidates have too many: merge the whole batch densely
        values, out_refs = dense_batch_merge(state, state_refs, coef3, refs, signs)
        return values.reshape(top_coef.shape), out_refs.reshape(top_ref.shape), active.reshape(*lead, n_signs, n)
    minus = signs.index("-") if "-" in signs else -1  # the sign axis' "-" (no tensor sent to the device)

    def signed_values(values: Tensor, sign_axis: Tensor) -> Tensor:
        return torch.where(sign_axis == minus, -values, values)

    old_coef = state.permute(2, 0, 1, 3).reshape(k, n_memories)  # [k, memory], a copy
    old_ref = state_refs.permute(2, 0, 1, 3).reshape(k, n_memories)
    if n_over:  # these memories' columns, merged densely
        over = counts > cap
        cols = over.nonzero().squeeze(-1)
        memory = signed_values(coef3[cols // (n_signs * n), :, cols % n], (cols // n % n_signs)[:, None]).T  # [pos, column]
        old_coef[:, cols], old_ref[:, cols], _ = merge_topk(old_coef[:, cols], old_ref[:, cols], memory, refs)
        keep = ~over[column]
        b, sg, p, nn, column = b[keep], sg[keep], p[keep], nn[keep], column[keep]
        counts = counts.masked_fill(over, 0)
        n_cols, most = n_cols - n_over, min(most, cap)
    if len(column):
        order = column.argsort(stable=True)
        b, sg, p, nn, column = b[order], sg[order], p[order], nn[order], column[order]
        # each candidate's memory, ranked among the n_cols memories with candidates (no sync:
        # their number is known), and its slot among that memory's candidates
        first = torch.ones_like(column, dtype=torch.bool)
        first[1:] = column[1:] != column[:-1]
        rank = first.cumsum(0) - 1
        cols = torch.empty(n_cols, dtype=column.dtype, device=dev).scatter_(0, rank, column)
        slot = torch.arange(len(column), device=dev) - (counts.cumsum(0) - counts)[column]
        new_coef = torch.full((most, n_cols), float("-inf"), dtype=state.dtype, device=dev)
        new_ref = torch.full((most, n_cols), -1, dtype=state_refs.dtype, device=dev)
        new_coef[slot, rank] = signed_values(coef3[b, p, nn], sg)
        new_ref[slot, rank] = refs[p].to(state_refs.dtype)
        best, where = torch.cat([old_coef[:, cols], new_coef]).topk(k, dim=0)
        old_coef[:, cols] = best
        old_ref[:, cols] = torch.cat([old_ref[:, cols], new_ref]).gather(0, where)
    values = old_coef.reshape(k, n_blocks, n_signs, n).permute(1, 2, 0, 3)
    out_refs = old_ref.reshape(k, n_blocks, n_signs, n).permute(1, 2, 0, 3)
    return (values.reshape(top_coef.shape), out_refs.reshape(top_ref.shape), active.reshape(*lead, n_signs, n))


def empty_topk(k: int, d_mlp: int, device=None, n_signs: int | None = None,
               dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """An empty running top-k: [k, d_mlp], or [n_signs, k, d_mlp] when `n_signs` is given
    (values in `dtype`, default float32)."""
    shape = (k, d_mlp) if n_signs is None else (n_signs, k, d_mlp)
    return (
        torch.full(shape, float("-inf"), device=device, dtype=dtype or torch.float32),
        torch.full(shape, -1, dtype=torch.long, device=device),
    )


def signed(coef: Float[Tensor, "pos neuron"], signs: tuple[str, ...]) -> Float[Tensor, "sign pos neuron"]:
    """Each sign's memory coefficients (sign · c) stacked: [c] or [c, -c]."""
    return torch.stack([coef if s == "+" else -coef for s in signs])


def default_pending_bytes(device: torch.device) -> int:
    """How many bytes of coefficients a stacked collector keeps before merging (class doc)."""
    if device.type != "cuda":
        return 1 << 30
    from interp.models.device import available_bytes

    return int(min(max((available_bytes(device) or 0) // 16, 1 << 28), 1 << 33))


@dataclass
class LayerKeys:
    coef: Float[Tensor, "sign k neuron"]  # the k largest coefficients seen, per memory (sign, neuron)
    ref: Int[Tensor, "sign k neuron"]  # their global positions (window * seq_len + pos), -1 = empty
    active: Int[Tensor, "sign neuron"]  # how many valid positions had that sign's coefficient > 0


class KeyCollector:
    """Running top-k trigger positions and activity counts, for the chosen layers and `signs`
    (default both), starting on `device`, the values kept in `dtype` (build_index passes the
    model's: the values are coefficients, so nothing is lost and no batch is converted).

    Call `set_batch(refs, valid)` before each forward pass over a batch, with the global
    position of every token of the batch (flattened batch-major) and which ones count, and
    `flush()` after it.

    Device-following: each layer's state lives where that layer's coefficients arrive (a model
    split over devices keeps every layer's top-k on its own device); the batch's positions are
    copied once to each device that needs them.

    `stacked` (default: on CUDA) defers the merges: the hooks only keep each layer's
    coefficients, and `flush()` merges all pending layers (of one device) and signs in one
    stacked call -- a few dozen kernel launches and two host syncs per batch instead of per
    layer, which is what bounds a small batch on a GPU. Pending coefficients are flushed early
    past `max_pending_bytes` (default: a 16th of the device's free memory, between 256 MiB and
    8 GiB; 1 GiB off CUDA). Otherwise (the CPU default) each layer is merged as it comes.
    Either way the merge is `merge_topk_sparse` (`sparse=False`: the dense `merge_topk`, twice
    the work for two signs).
    Measured on an H200 (synthetic SwiGLU coefficients, 30 x 1536 neurons, top-25, past 40k
    positions, float32), before the merge ran in the model's dtype: one stacked flush of 4096 /
    8192 positions took 9.5 / 17.5 ms dense with one sign, 20.5 / 38.1 ms dense with two,
    11.8 / 15.2 ms sparse with two."""

    def __init__(self, layers: list[int], d_mlp: int, k: int, device=None, stacked: bool | None = None,
                 max_pending_bytes: int | None = None, signs: tuple[str, ...] = SIGNS, sparse: bool = True,
                 dtype: torch.dtype | None = None):
        self.layers = list(layers)
        self.signs = tuple(check_sign(s) for s in signs)
        self.device = torch.device(device or "cpu")
        self.dtype = dtype or torch.float32
        self.stacked = self.device.type == "cuda" if stacked is None else stacked
        self.sparse = sparse
        self.max_pending_bytes = default_pending_bytes(self.device) if max_pending_bytes is None else max_pending_bytes
        self.state = {}
        for layer in self.layers:
            coef, ref = empty_topk(k, d_mlp, self.device, len(self.signs), self.dtype)
            active = torch.zeros(len(self.signs), d_mlp, dtype=torch.long, device=self.device)
            self.state[layer] = LayerKeys(coef, ref, active)
        self.n_positions = 0  # valid positions seen so far
        self._refs: Tensor | None = None  # this batch's positions, on the CPU
        self._valid: Tensor | None = None
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}  # ... copied to each device
        self._pending: dict[int, Tensor] = {}
        self._pending_bytes = 0

    def set_batch(self, refs: Int[Tensor, " pos"], valid: Bool[Tensor, " pos"]) -> None:
        self.flush()  # anything still pending belongs to the previous batch's positions
        self.n_positions += int(valid.sum())  # counted before the move: no device sync
        self._refs, self._valid = refs, valid
        self._on = {}

    def batch_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(refs, valid) of the current batch on `device`."""
        if device not in self._on:
            self._on[device] = (self._refs.to(device, non_blocking=True), self._valid.to(device, non_blocking=True))
        return self._on[device]

    def _follow(self, layer: int, device: torch.device) -> LayerKeys:
        """The layer's state, moved to `device` if its coefficients come from there."""
        s = self.state[layer]
        if s.coef.device != device:
            s.coef, s.ref, s.active = s.coef.to(device), s.ref.to(device), s.active.to(device)
        return s

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
        s = self._follow(layer, flat.device)
        refs, valid = self.batch_on(flat.device)
        if self.sparse:
            s.coef, s.ref, positive = merge_topk_sparse(s.coef, s.ref, flat, refs, valid, self.signs)
        else:
            s.coef, s.ref, positive = merge_topk(s.coef, s.ref, signed(flat, self.signs), refs, valid)
        s.active += positive

    def flush(self) -> None:
        """Merge the pending layers' coefficients (stacked mode; a no-op otherwise), one stacked
        call per device they are on."""
        by_device: dict[torch.device, list[int]] = {}
        for layer, flat in self._pending.items():
            by_device.setdefault(flat.device, []).append(layer)
        for device, layers in by_device.items():
            self._flush(device, layers)
        self._pending.clear()
        self._pending_bytes = 0

    def _flush(self, device: torch.device, layers: list[int]) -> None:
        states = [self._follow(layer, device) for layer in layers]
        refs, valid = self.batch_on(device)
        top, ref = torch.stack([s.coef for s in states]), torch.stack([s.ref for s in states])
        if self.sparse:
            pending = torch.stack([self._pending[layer] for layer in layers])  # our own copy: masked in place
            pending.masked_fill_(~valid[None, :, None], 0)  # invalid positions never enter (merge_topk_sparse)
            coef, ref, positive = merge_topk_sparse(top, ref, pending, refs, None, self.signs)
        else:
            pending = torch.stack([signed(self._pending[layer], self.signs) for layer in layers])
            coef, ref, positive = merge_topk(top, ref, pending, refs, valid)
        active = torch.stack([s.active for s in states]) + positive
        for i, s in enumerate(states):
            s.coef, s.ref, s.active = coef[i], ref[i], active[i]

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
            s.coef = tensors[f"{layer}.coef"].to(dev, self.dtype)
            s.ref = tensors[f"{layer}.ref"].to(dev)
            s.active = tensors[f"{layer}.active"].to(dev)
