"""The hooks behind interp.circuits.ablate's ablated forwards, one circuit a forward: each rebuilds
the inputs of one layer from the writers' differences (see that module's docstring) -- `_Group`
for a layer's attention inputs, the logits' input or an MLP's earlier part, `_MLPInput` for an
MLP's input -- with the helpers the stacked engine (interp.circuits.stacked) shares: the one-copy
uploads, the signed weights, the MLPs that are not computed, the END-only readout."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks

if TYPE_CHECKING:
    from interp.models import Model


@contextmanager
def _replaced_forwards(forwards: dict):
    """Inside the block, each module of `forwards` runs its given forward instead of its own (set on
    the bridge component itself: its __setattr__ would pass it on to HF's module)."""
    try:
        for module, forward in forwards.items():
            object.__setattr__(module, "forward", forward)
        yield
    finally:
        for module in forwards:
            module.__dict__.pop("forward", None)


def _skipped_mlps(model: Model, outputs: dict[int, Tensor]) -> dict:
    """Forwards (for `_replaced_forwards`) by which the MLPs of the layers in `outputs` are not
    computed: each returns its given output ([batch|1 pos|1 d_model], broadcast to its input's
    shape) through its hook_out, so the hooks on hook_mlp_out still see it."""

    def skip(mlp, out):
        return lambda x, *args, **kwargs: mlp.hook_out(out.to(x.dtype).expand(*x.shape[:-1], out.shape[-1]))

    mlps = {layer: model.bridge.blocks[layer].mlp for layer in outputs}
    return {mlps[layer]: skip(mlps[layer], out) for layer, out in outputs.items()}


def _windowed_mlps(model: Model, before: dict[int, Tensor], t0: int) -> dict:
    """Forwards by which the MLPs of the layers in `before` compute the positions t0.. only (their
    hooks see those positions) and return `before[layer]` ([batch t0 d_model]) for the ones before."""

    def window(mlp, known):
        own = type(mlp).forward
        return lambda x, *args, **kwargs: torch.cat([known.to(x.dtype), own(mlp, x[:, t0:].contiguous(), *args, **kwargs)], 1)

    mlps = {layer: model.bridge.blocks[layer].mlp for layer in before}
    return {mlps[layer]: window(mlps[layer], known) for layer, known in before.items()}


def _windowed(linear, before: Tensor, t0: int):
    """An output maker for `_stubbed`: the linear's matmul at the positions t0.. only, after the
    output `before` ([batch t0 out]) known for the positions before."""
    module = linear.original_component
    return lambda x: torch.cat([before.to(x.dtype), module(x[:, t0:].contiguous())], 1)


def _stubbed(linears: dict) -> dict:
    """Forwards by which each LinearBridge of `linears` skips its matmul: `make(input)` gives its
    output. Its hook_in and hook_out still fire, as in LinearBridge.forward."""

    def stub(lin, make):
        def forward(x, *args, **kwargs):
            if lin._suppress_next_hook_in:
                object.__setattr__(lin, "_suppress_next_hook_in", False)
            else:
                x = lin.hook_in(x)
            out = lin.hook_out(make(x))
            object.__setattr__(lin, "_fired_hook_out", True)
            return out

        return forward

    return {lin: stub(lin, make) for lin, make in linears.items()}


def _readout(model: Model, resid_end: Float[Tensor, "row d_model"]) -> Float[Tensor, "row vocab"]:
    """Logits from final residual streams at END only: the bridge's final norm and unembedding on
    those rows (the positions before END are never read out)."""
    return model.bridge.unembed(model.bridge.ln_final(resid_end[:, None]))[:, 0]


def _project(block, kind: str, normed: Tensor) -> Tensor:
    """q, k or v (before rotary) of normalized inputs [..., d_model] -> [..., head, d_head], every head."""
    a = block.attn
    W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[kind]
    out = torch.einsum("...d,hde->...he", normed, W.to(normed.dtype))
    return out if b is None else out + b.to(out.dtype)


def _signed(sub: Tensor, zero: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(inside [reader], signed weights [writer reader]) of inputs with the circuit's edges `sub`
    ([writer reader], True = kept, on the CPU): each input sums the smaller side, + its kept edges
    from the fully ablated input ("inside") or - its ablated edges from its current residual stream.
    Writers in `zero` ([writer]) output exactly their replacement (`_skipped_mlps`): no weight."""
    kept = sub.sum(0)
    inside = kept <= sub.shape[0] - kept
    w = torch.where(inside[None, :], sub.float(), -(~sub).float())
    if zero is not None:
        w[zero[: len(w)]] = 0
    return inside, w


class _Uploads:
    """The small CPU tensors (indices, signed weights) one forward's hooks read on the device, sent
    in one copy per dtype before the forward (each separate copy to an accelerator waits for it)."""

    def __init__(self, device: torch.device):
        self.device, self.cpu, self.dev = torch.device(device), [], []

    def add(self, t: Tensor) -> int:
        self.cpu.append(t)
        return len(self.cpu) - 1

    def send(self) -> None:
        if self.device.type == "cpu":
            self.dev = self.cpu
            return
        self.dev = [None] * len(self.cpu)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(self.cpu):
            by_dtype.setdefault(t.dtype, []).append(i)
        for ids in by_dtype.values():
            flat = torch.cat([self.cpu[i].reshape(-1) for i in ids]).to(self.device)
            for i, part in zip(ids, flat.split([self.cpu[i].numel() for i in ids])):
                self.dev[i] = part.view(self.cpu[i].shape)

    def __getitem__(self, i: int) -> Tensor:
        return self.dev[i]


class _Group:
    """The inputs of one layer's attention (q heads, then k and v heads), of the logits or the part of
    an MLP's input from the writers before its layer (`tail`), with the circuit's edges among the n
    writers before them (`sub` [writer reader], True = kept, on the CPU). Each input is rebuilt from
    the smaller side (`_signed`). An input left exactly at one end is not recomputed: the fully
    ablated one takes its cached projection, an untouched one keeps the bridge's own. The inputs with
    a non-empty sum (`active`, inside ones first) and the tail are summed by one matmul over the
    writers' differences (each layer reads them once); the active ones are normalized once and
    projected by one batched matmul."""

    def __init__(self, sub: Tensor, diff: Tensor, up: _Uploads, tail: Tensor | None = None, zero: Tensor | None = None,
                 t0: int = 0):  # fmt: skip
        self.n, self.diff, self.up, self.t0 = sub.shape[0], diff, up, t0
        inside, w = _signed(sub, zero)
        summed = w.ne(0).any(0)
        act_in, act_out = (summed & inside).nonzero().flatten(), (summed & ~inside).nonzero().flatten()
        self.active = torch.cat([act_in, act_out])  # [active] reader columns, inside ones first
        self.n_in, self.n_act = len(act_in), len(self.active)
        self.ablated = (inside & ~summed).nonzero().flatten()  # columns that take the fully ablated projection
        w = w[:, self.active]
        rows = w.ne(0).any(1).nonzero().flatten()
        gather = 3 * len(rows) < self.n  # gathering a few rows beats reading them all
        # the MLP's earlier part rides along only when every row is read anyway
        self.has_tail = tail is not None and self.n_act > 0 and not gather
        if self.has_tail:
            w = torch.cat([w, tail[:, None]], 1)
        self.rows = up.add(rows) if gather else None
        self.w = up.add((w[rows] if gather else w).to(diff.dtype))  # [rows|n active(+tail)]
        self.inside0 = bool(inside[0]) if len(inside) else True
        self.done: dict[str, Tensor] = {}

    def mark_read(self, read: Tensor) -> None:
        """Mark the writers whose differences `sums` reads."""
        if not (self.n_act or self.has_tail):
            return
        if self.rows is None:
            read[: self.n] = True
        else:
            read[self.up.cpu[self.rows]] = True

    def sums(self, at: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The signed sums of the active inputs (and the tail) [active(+1) batch pos-t0 d] (the
        positions t0.. that `diff` holds), or at the positions `at` only ((batch index, position) ->
        [active(+1) row d])."""
        part = self.diff[: self.n] if self.rows is None else self.diff[: self.n].index_select(0, self.up[self.rows])
        if at is not None:
            part = part[:, at[0], at[1] - self.t0]
        w = self.up[self.w]
        return (w.T @ part.reshape(part.shape[0], -1)).view(w.shape[1], *part.shape[1:])

    def rebuilt(self, sums: Tensor, base: Tensor, current: Tensor) -> Tensor:
        """The active inputs' residual streams [active batch pos d], in place in `sums`."""
        if self.n_in:
            sums[: self.n_in] += base
        if self.n_in < self.n_act:
            sums[self.n_in : self.n_act] += current
        return sums[: self.n_act]

    def pre_hooks(self, pre: str, current: dict[str, Tensor]) -> list:
        """The hook on the layer's resid_pre, if it has anything to sum: remembers the residual stream
        and sums (every earlier writer is written by then)."""

        def hook(x, hook=None):
            current[pre] = x
            self.done["sums"] = self.sums()
            if self.has_tail:
                self.done["tail"] = self.done["sums"][-1]

        return [(pre, hook)] if self.n_act or self.has_tail else []

    def attention_hooks(self, layer, stacked, base, current, pre, projected, n_heads, n_kv, attn=None,
                        stubs: dict | None = None) -> list:  # fmt: skip
        """The hooks on hook_q, hook_k and hook_v ([batch pos width d_head], before rotary) of the kinds
        with something to replace. The first to need it rebuilds, normalizes and projects every active
        input of the layer (one batched matmul). A kind whose every head is replaced needs nothing of
        the bridge's own projection: with `stubs`, its linear (of the attention bridge `attn`) goes
        there (module -> output maker, for `_stubbed`) and the hook fills the empty output."""
        ln1, W, b = stacked
        up, spans = self.up, {"q": (0, n_heads), "k": (n_heads, n_kv), "v": (n_heads + n_kv, n_kv)}
        act, abl = self.active.tolist(), self.ablated.tolist()
        which = up.add(self.active)

        t0 = self.t0

        def project(dtype: torch.dtype) -> Tensor:  # positions t0.. only
            if "p" not in self.done:
                normed = ln1(self.rebuilt(self.done.pop("sums"), base[:, t0:], current[pre][:, t0:]).to(dtype))
                p = torch.einsum("abtd,ade->abte", normed, W[up[which]].to(normed.dtype))
                self.done["p"] = p if b is None else p + b[up[which]][:, None, None, :].to(p.dtype)
            return self.done["p"]

        out, made = [], {}
        for kind, proj in zip("qkv", projected):
            start, width = spans[kind]
            mine = [(j, c - start) for j, c in enumerate(act) if start <= c < start + width]
            ablated = [c - start for c in abl if start <= c < start + width]
            if t0 and stubs is not None and hasattr(attn, kind):  # before t0 the output is the cached one
                stubs[getattr(attn, kind)] = _windowed(getattr(attn, kind), proj[:, :t0].flatten(2), t0)
            if not mine and not ablated:  # every input of this kind keeps the bridge's projection
                continue
            sel = up.add(torch.tensor([j for j, _ in mine], dtype=torch.long))
            heads = up.add(torch.tensor([h for _, h in mine], dtype=torch.long))
            gone = up.add(torch.tensor(ablated, dtype=torch.long))

            if len(mine) + len(ablated) == width and stubs is not None and hasattr(attn, kind):  # no head keeps
                # the bridge's projection: its linear makes an empty output (noted, so the hook fills it in
                # place only when the linear ran: an attention that never calls it gets a copy)
                def make(x, n=width * W.shape[-1], kind=kind):
                    made[kind] = True
                    return x.new_empty(*x.shape[:-1], n)

                stubs[getattr(attn, kind)] = make

            def hook(x, hook=None, mine=mine, ablated=ablated, sel=sel, heads=heads, gone=gone, projected=proj, kind=kind):
                stubbed = made.pop(kind, False)  # the linear made an empty output: ours to fill in place
                if len(ablated) == x.shape[2]:  # the whole kind fully ablated
                    return projected.to(x.dtype, copy=True)
                if not stubbed:
                    x = x.clone()
                elif t0:  # an empty output: before t0 every head reads what the corrupted (= clean) run read
                    x[:, :t0] = projected[:, :t0].to(x.dtype)
                if ablated:
                    x[:, :, up[gone]] = projected.index_select(2, up[gone]).to(x.dtype)
                if mine:
                    x[:, t0:, up[heads]] = project(x.dtype).index_select(0, up[sel]).permute(1, 2, 0, 3).to(x.dtype)
                return x

            out.append((hooks.name(kind, layer), hook))
        return out

    def end_hook(self, base_end: Tensor, at: tuple[Tensor, Tensor], got: dict[str, Tensor]):
        """The hook on the final residual stream: puts the logits' input at each prompt's END
        ([batch d], positions `at`) into got["x"] (nothing else of it is read)."""

        def hook(x, hook=None):
            if self.n_act:
                got["x"] = self.rebuilt(self.sums(at), base_end, x[at])[0].to(x.dtype)
            else:
                got["x"] = base_end.to(x.dtype) if self.inside0 else x[at]

        return hook


class _MLPInput:
    """An MLP's input. When its layer's attention sum reads every earlier writer anyway, the MLP's
    edges from them are summed there (`tail`, that group's extra column) and only those from the
    layer's own heads here; otherwise its whole sum is made here (gathering its few rows)."""

    def __init__(self, sub: Tensor, n_before: int, diff: Tensor, up: _Uploads, zero: Tensor | None = None, t0: int = 0):
        self.t0 = t0
        inside, w = _signed(sub, zero)
        self.inside, self.w = bool(inside[0]), w[:, 0]
        self.active = bool(self.w.ne(0).any())
        self.tail = self.w[:n_before] if bool(self.w[:n_before].ne(0).any()) else None
        self.n_before, self.n, self.diff, self.up = n_before, len(self.w), diff, up

    def settle(self, attention: _Group) -> None:
        """Fix which writers this hook sums, once the attention group has taken the tail or not."""
        self.attention = attention
        lo = self.n_before if attention.has_tail else 0
        w = self.w[lo:]
        rows = w.ne(0).nonzero().flatten()
        self.rows = rows + lo if 3 * len(rows) < len(w) else torch.arange(lo, self.n)
        self.part = self.up.add(self.w[self.rows].to(self.diff.dtype)) if len(rows) else None
        self.contiguous = len(self.rows) == self.n - lo
        self.lo, self.idx = lo, self.up.add(self.rows)

    def mark_read(self, read: Tensor) -> None:
        """Mark the writers whose differences the hook reads."""
        if self.active and self.part is not None:
            read[self.rows] = True

    def hook(self, block, base, current, mid, projected):
        """The hook on the MLP's normalized input."""

        def hook(x, hook=None):
            w = x.shape[1] != projected.shape[1]  # the MLP computes the positions t0.. only
            if not self.active:
                return (projected[:, self.t0 :] if w else projected).to(x.dtype) if self.inside else x
            s = base if self.inside else current[mid]
            t0, add = self.t0, None  # the change, at the positions t0.. only
            if self.attention.has_tail:
                add = self.attention.done.pop("tail")
            if self.part is not None:
                rows = self.diff[self.lo : self.n] if self.contiguous else self.diff.index_select(0, self.up[self.idx])
                part = (self.up[self.part] @ rows.reshape(rows.shape[0], -1)).view(rows.shape[1:])
                add = part if add is None else add + part
            if w:
                s = s[:, t0:] if add is None else s[:, t0:] + add
            elif add is not None:
                s = torch.cat([s[:, :t0], s[:, t0:] + add], 1) if t0 else s + add
            return block.ln2(s.to(x.dtype))

        return hook
