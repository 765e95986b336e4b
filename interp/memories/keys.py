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
batch never reaches a top-k; on the CPU it is what makes two signs cost less than one did. On
CUDA it reads each batch once, through a compiled scan (`scan_batch`), and `KeyCollector` runs
the merges a batch late on a side stream (`lagged`).
`interp.memories.collector.KeyCollector` owns that state for several layers and hands out the
forward hooks.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp import hooks
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
    return hooks.name("post", layer)


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


def _scan(coef: Tensor, valid: Tensor, thr: Tensor, factors: tuple[float, ...]) -> tuple[Tensor, Tensor, Tensor]:
    c = torch.where(valid[None, :, None], coef, 0)
    active, enter, code = [], [], None
    for s, f in enumerate(factors):
        side = c if f > 0 else -c
        active.append((side > 0).sum(-2))
        e = side > thr[:, s, None]
        enter.append(e.sum(-2))
        part = e.to(torch.int8) * (s + 1)
        code = part if code is None else code + part
    return torch.stack(active, 1), torch.stack(enter, 1), code


_COMPILED: dict[str, object] = {}


def scan_batch(
    coef: Float[Tensor, "block pos neuron"], valid: Bool[Tensor, " pos"], thr: Float[Tensor, "block sign neuron"],
    factors: tuple[float, ...], compiled: bool = False,
) -> tuple[Int[Tensor, "block sign neuron"], Int[Tensor, "block sign neuron"], Int[Tensor, "block pos neuron"]]:
    """One read of a batch of coefficients for `merge_topk_sparse`: per memory (block, sign,
    neuron) how many valid positions have that sign's coefficient (factor · c) > 0 and how many
    beat `thr` (the candidates), and a code per position: 0 = no candidate, s + 1 = a candidate
    of sign s (the signs exclude each other: thr >= 0). `compiled`: through torch.compile (one
    kernel or two instead of a pass per comparison; the eager function otherwise, and whenever
    compiling fails)."""
    if compiled and _COMPILED.get("failed") is None:
        if "scan" not in _COMPILED:  # wrapped once (compiled at its first call)
            _COMPILED["scan"] = torch.compile(_scan, dynamic=True)
        fn = _COMPILED["scan"]
        try:
            return fn(coef, valid, thr, factors)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ImportError):  # no compiler backend here (dynamo's errors are RuntimeErrors): eagerly
            _COMPILED["failed"] = True
    return _scan(coef, valid, thr, factors)


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
    fused: bool | None = None,
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
    steady state (three when some memory has too many candidates).

    `fused` (default: on CUDA) reads the batch through `scan_batch` -- compiled there, so the
    counts, the candidates per memory and where they sit come from about two reads of the batch
    instead of a dozen passes -- and decides between the dense and the sparse merge before any
    candidate list is made (a list of every position of the first batches would be several
    times the batch). Otherwise the signs are counted by `count_signs` and the candidates found
    by one comparison per sign (what is fastest on a CPU). Both give the same state."""
    *lead, n_signs, k, n = top_coef.shape
    state = top_coef.reshape(-1, n_signs, k, n)
    state_refs = top_ref.reshape(-1, n_signs, k, n)
    coef3 = coef.reshape(-1, coef.shape[-2], n).to(state.dtype)
    cap = max_new if max_new is not None else 2 * k
    fused = state.device.type == "cuda" if fused is None else fused
    find = _scan_candidates if fused else _compare_candidates
    active, coef3, found = find(coef3, valid, state[:, :, k - 1].clamp(min=0), signs, cap, matvec)
    active = active.reshape(*lead, n_signs, n)
    if found is None:  # nothing beats any memory's k-th best
        return top_coef.clone(), top_ref.clone(), active
    if found == "dense":  # most memories with candidates have too many: merge the whole batch densely
        values, out_refs = dense_batch_merge(state, state_refs, coef3, refs, signs)
    else:
        values, out_refs = _scatter_merge(state, state_refs, coef3, refs, valid, signs, cap, *found)
    return values.reshape(top_coef.shape), out_refs.reshape(top_ref.shape), active


def _scan_candidates(coef3, valid, thr, signs, cap, matvec):
    """merge_topk_sparse's candidates through `scan_batch`, the dense-or-sparse choice made from
    the counts before any list is made: (active, coef3, None | "dense" | candidates)."""
    dev, n_signs, n = coef3.device, len(signs), coef3.shape[-1]
    ok = valid if valid is not None else torch.ones(coef3.shape[1], dtype=torch.bool, device=dev)
    active, counts, code = scan_batch(coef3, ok, thr, tuple(SIGN_FACTOR[s] for s in signs), compiled=dev.type == "cuda")
    counts = counts.reshape(-1)
    n_over, most, n_cols = _summary(counts, cap)  # host sync 1
    if n_cols == 0:
        return active, coef3, None
    if _dense(n_over, n_cols):  # the dense merge reads every position: the invalid ones must hold 0
        return active, coef3 if valid is None else coef3.masked_fill(~valid[None, :, None], 0), "dense"
    b, p, nn = code.nonzero(as_tuple=True)  # host sync 2
    sg = code[b, p, nn].long() - 1
    return active, coef3, (b, sg, p, nn, (b * n_signs + sg) * n + nn, counts, n_over, most, n_cols)


def _summary(counts: Int[Tensor, " memory"], cap: int) -> tuple[int, int, int]:
    """(memories with more than `cap` candidates, the most any has, memories with any): one host sync."""
    n_over, most, n_cols = torch.stack([(counts > cap).sum(), counts.max(), (counts > 0).sum()]).tolist()
    return n_over, most, n_cols


def _dense(n_over: int, n_cols: int) -> bool:
    """Most memories with candidates have too many: merge the whole batch densely."""
    return 4 * n_over > n_cols


def _compare_candidates(coef3, valid, thr, signs, cap, matvec):
    """The same as `_scan_candidates` by one comparison per sign (the CPU's way)."""
    n_blocks, pos, n = coef3.shape
    if valid is not None:  # an invalid position holds 0: it never enters and counts for no sign
        coef3 = coef3.masked_fill(~valid[None, :, None], 0)
    active = count_signs(coef3, None, signs, matvec)  # [block sign neuron]
    enter = torch.empty((n_blocks, len(signs), pos, n), dtype=torch.bool, device=coef3.device)
    for s, sign in enumerate(signs):
        if sign == "+":
            torch.gt(coef3, thr[:, s, None], out=enter[:, s])
        else:
            torch.lt(coef3, -thr[:, s, None], out=enter[:, s])
    b, sg, p, nn = enter.nonzero(as_tuple=True)  # host sync 1
    del enter
    if len(b) == 0:
        return active, coef3, None
    column = (b * len(signs) + sg) * n + nn  # a memory: (block, sign, neuron)
    counts = torch.zeros(n_blocks * len(signs) * n, dtype=torch.long, device=coef3.device)
    counts.index_add_(0, column, torch.ones_like(column))
    n_over, most, n_cols = _summary(counts, cap)  # host sync 2
    if _dense(n_over, n_cols):
        return active, coef3, "dense"
    return active, coef3, (b, sg, p, nn, column, counts, n_over, most, n_cols)


def _scatter_merge(state, state_refs, coef3, refs, valid, signs, cap, b, sg, p, nn, column, counts, n_over, most, n_cols):
    """Merge the candidates (b, sg, p, nn; `column` = their memory) into the state: the memories
    with more than `cap` by a dense merge of their own columns, the rest scattered into a few
    rows and merged by one top-k."""
    n_blocks, n_signs, k, n = state.shape
    n_memories, dev = n_blocks * n_signs * n, state.device
    minus = signs.index("-") if "-" in signs else -1  # the sign axis' "-" (no tensor sent to the device)

    def signed_values(values: Tensor, sign_axis: Tensor) -> Tensor:
        return torch.where(sign_axis == minus, -values, values)

    old_coef = state.permute(2, 0, 1, 3).reshape(k, n_memories)  # [k, memory], a copy
    old_ref = state_refs.permute(2, 0, 1, 3).reshape(k, n_memories)
    if n_over:  # these memories' columns, merged densely
        over = counts > cap
        cols = over.nonzero().squeeze(-1)
        memory = signed_values(coef3[cols // (n_signs * n), :, cols % n], (cols // n % n_signs)[:, None]).T  # [pos, column]
        old_coef[:, cols], old_ref[:, cols], _ = merge_topk(old_coef[:, cols], old_ref[:, cols], memory, refs, valid)
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
    return values, old_ref.reshape(k, n_blocks, n_signs, n).permute(1, 2, 0, 3)


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
