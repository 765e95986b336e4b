"""Every circuit of a faithfulness curve in one ablated forward, stacked size-major along the batch:
interp.circuits.ablate's engine for accelerators (see that module's docstring), built from the
per-circuit engine's helpers in interp.circuits.rebuild."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp import hooks
from interp.circuits.readers import input_hook
from interp.circuits.rebuild import _readout, _Uploads

if TYPE_CHECKING:
    from interp.circuits.ablate import Ablator


class _Stacked:
    """Several circuits in one forward, stacked size-major along the batch (row s * B + b is prompt b
    under circuit s): `Ablator.run`'s hooks with a size axis, for accelerators, where a forward costs
    its kernel count. Each layer's inputs are rebuilt by one batched matmul over the sizes, with
    signed weights [size, writer, input] (`_signed`'s choice per size; the MLP's part from the
    writers before its layer rides along as one more column), base or current stream per (size,
    input) by a torch.where; once any size rebuilds an attention input of a layer, all of them are
    rebuilt for every size (one norm, one projection, no per-head selection), and only a layer
    with every (size, input) at an end swaps in the fully ablated projections by a torch.where. All
    of it is worked out on the CPU and uploaded in one copy per dtype: the forward never waits on
    the host. (MLPs are always computed here: the largest size of a curve reads them all.)"""

    def __init__(self, ab: Ablator, keeps: Bool[Tensor, "size edge"]):
        g, model = ab.graph, ab.model
        self.ab, self.g, self.model, dev = ab, g, model, model.device
        self.S, (self.B, self.T) = len(keeps), ab.task.clean.shape
        M = torch.zeros(self.S, len(g.writers), len(g.readers), dtype=torch.bool)
        M[:, ab._src, ab._dst] = keeps
        self.up, self.read = _Uploads(dev), torch.zeros(len(g.writers), dtype=torch.bool)
        self.diff = torch.empty(len(g.writers), self.S * self.B, self.T, model.info.d_model, dtype=ab.rep_w.dtype, device=dev)
        self.fwd: list = []
        self.done: dict[str, Tensor] = {}
        for layer, ((idx, n), (midx, mn)) in enumerate(zip(ab._attn_inputs, ab._mlp_inputs)):
            self._layer(layer, M[:, :n, idx], M[:, :mn, int(midx[0])] if g.has_mlp else None)
        self._logits(M[:, :, int(ab._logits_input[0])])
        self.up.send()
        self.fwd = self._diff_hooks() + self.fwd

    @torch.no_grad()
    def run(self) -> Float[Tensor, "size batch"]:
        S, B = self.S, self.B
        hooks.run_until(self.model, self.ab.task.clean.repeat(S, 1), self.fwd, hooks.final_resid(self.g.n_layers))
        return self.ab.metric(_readout(self.model, self.done.pop("end")).view(S, B, -1))

    # -- structure, on the CPU -----------------------------------------------------------------------
    @staticmethod
    def _ends(sub: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Inputs with edges `sub` [size, n, input] (True = kept): (inside [size input], signed weights
        [size n input], untouched [size input]: every edge kept, ablated [size input]: none kept)."""
        kept = sub.sum(1)
        inside = kept <= sub.shape[1] - kept  # `_signed`'s choice, for every size at once
        w = torch.where(inside[:, None], sub.float(), -(~sub).float())
        empty = ~w.ne(0).any(1)
        return inside, w, empty & ~inside, empty & inside

    def _mix(self, w: Tensor, lo: int = 0) -> tuple:
        """Upload the weights [size, k, column] of one batched sum over the differences of writers
        lo..lo+k (gathering the rows some weight reads when they are few); marks them read."""
        rows = w.ne(0).any(2).any(0).nonzero().flatten()
        gather = 3 * len(rows) < w.shape[1]
        self.read[rows + lo if gather else slice(lo, lo + w.shape[1])] = True
        k = w.shape[1]
        w = w[:, rows] if gather else w
        weights = self.up.add(w.transpose(1, 2).to(self.diff.dtype).contiguous())  # [size column k]
        return (self.up.add(rows + lo), weights, lo, lo) if gather else (None, weights, lo, lo + k)

    def _layer(self, layer: int, sub: Tensor, msub: Tensor | None) -> None:
        """A layer's hooks. If some size rebuilds some attention input, every attention input of the
        layer is rebuilt for every size (no per-head selection: one sum, one norm, one projection);
        if every (size, input) is at an end, only the fully ablated ones are swapped in. The MLP's
        input likewise."""
        n, S = sub.shape[1], self.S
        inside, w, untouched, ablated = self._ends(sub)
        attn = not bool((untouched | ablated).all())
        columns = w if attn else w[:, :, :0]
        m_active = tail = False
        if msub is not None:
            m_in, m_w, m_un, m_ab = (t.squeeze(-1) for t in self._ends(msub[:, :, None]))
            m_active = not bool((m_un | m_ab).all())
            tail = m_active and bool(m_w[:, :n].ne(0).any())
            if tail:
                columns = torch.cat([columns, m_w[:, :n, None]], 2)
        if columns.shape[2]:
            ins = self.up.add(inside.reshape(S, -1, 1, 1, 1))
            self.fwd.append((hooks.name("resid_pre", layer), self._pre_hook(layer, self._mix(columns), attn, ins, tail)))
        self._attention_hooks(layer, attn, ablated)
        if msub is None or not (m_active or bool(m_ab.any())):
            return
        mid = hooks.name("resid_mid", layer)
        heads = None
        if m_active:
            self.fwd.append((mid, self._remember(mid)))
            heads = self._mix(m_w[:, n:, None], n) if bool(m_w[:, n:].ne(0).any()) else None
        mask = self.up.add((m_in if m_active else m_ab).view(S, 1, 1, 1))
        self.fwd.append((f"blocks.{layer}.mlp.hook_in", self._mlp_hook(layer, heads, mask, m_active, tail)))

    def _logits(self, sub: Tensor) -> None:
        inside, w = (t.squeeze(-1) for t in self._ends(sub[:, :, None])[:2])
        mix = self._mix(w[:, :, None]) if bool(w.ne(0).any()) else None
        ins, dev = self.up.add(inside.view(-1, 1, 1)), self.model.device
        at = (torch.arange(self.S * self.B, device=dev), self.ab.task.end.to(dev).repeat(self.S))

        def hook(x, hook=None):
            r = torch.where(self.up[ins], self.ab._base_end, x[at].view(self.S, self.B, -1))
            if mix is not None:
                r = r + self._sums(mix, at)[:, 0]
            self.done["end"] = r.reshape(self.S * self.B, -1).to(x.dtype)

        self.fwd.append((hooks.final_resid(self.g.n_layers), hook))

    # -- the hooks --------------------------------------------------------------------------------
    def _sums(self, mix: tuple, at: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """sum_w weight[s, w, c] diff[w, rows of size s] -> [size column batch pos d] ([size column
        batch d] at the positions `at`)."""
        rows, w, lo, hi = mix
        part = self.diff[lo:hi] if rows is None else self.diff.index_select(0, self.up[rows])
        if at is not None:
            part = part[:, at[0], at[1]]
        out = torch.bmm(self.up[w], part.reshape(part.shape[0], self.S, -1).transpose(0, 1))
        return out.view(self.S, out.shape[1], self.B, *part.shape[2:])

    def _remember(self, name: str):
        def hook(x, hook=None):
            self.done[name] = x

        return hook

    def _pre_hook(self, layer: int, mix: tuple, attn: bool, ins: int, tail: bool):
        """On the layer's resid_pre: one batched sum; every attention input rebuilt, normalized and
        projected (one batched matmul with the stacked W_Q/W_K/W_V) into [size batch pos input
        d_head]; the MLP's tail kept."""
        base, (ln1, W, b) = self.ab.base[input_hook("q", layer)], self.ab._qkv(layer)
        S, B, n_cols = self.S, self.B, W.shape[0] if attn else 0

        def hook(x, hook=None):
            sums = self._sums(mix)  # [size column batch pos d]
            if tail:
                self.done["tail"] = sums[:, n_cols]
            if attn:
                cur = x.view(S, 1, B, *x.shape[1:])
                normed = ln1((sums[:, :n_cols] + torch.where(self.up[ins], base, cur)).to(x.dtype))
                p = torch.einsum("scbtd,cde->sbtce", normed, W.to(normed.dtype))
                self.done["p"] = p if b is None else p + b.to(p.dtype)

        return hook

    def _attention_hooks(self, layer: int, attn: bool, ablated: Tensor) -> None:
        """The hooks on hook_q, hook_k and hook_v: the rebuilt projections, or (when no size rebuilds
        any input of the layer) the fully ablated projection where an input has no circuit edge."""
        g, S, B, up = self.g, self.S, self.B, self.up
        for kind, start, width in (("q", 0, g.n_heads), ("k", g.n_heads, g.n_kv), ("v", g.n_heads + g.n_kv, g.n_kv)):
            gone = ablated[:, start : start + width]
            if not attn and not bool(gone.any()):
                continue
            gone_i = up.add(gone.view(S, 1, 1, width, 1))
            projected = self.ab.projected[hooks.name(kind, layer)]

            def hook(x, hook=None, start=start, width=width, gone_i=gone_i, projected=projected):
                if attn:
                    return self.done["p"][:, :, :, start : start + width].reshape(x.shape).to(x.dtype)
                return torch.where(up[gone_i], projected.to(x.dtype), x.view(S, B, *x.shape[1:])).reshape(x.shape)

            self.fwd.append((hooks.name(kind, layer), hook))

    def _mlp_hook(self, layer: int, heads: tuple | None, mask: int, active: bool, tail: bool):
        """The hook on the MLP's normalized input: rebuilt for every size, or (when no size rebuilds
        it) the fully ablated one where it has no circuit edge."""
        block, S, B = self.model.bridge.blocks[layer], self.S, self.B
        base, mid = self.ab.base[input_hook("mlp", layer)], hooks.name("resid_mid", layer)
        projected = self.ab.projected[f"blocks.{layer}.mlp.hook_in"]

        def hook(x, hook=None):
            x4 = x.view(S, B, *x.shape[1:])
            if not active:
                return torch.where(self.up[mask], projected.to(x.dtype), x4).reshape(x.shape)
            s = torch.where(self.up[mask], base, self.done.pop(mid).view(x4.shape))
            if tail:
                s = s + self.done.pop("tail")
            if heads is not None:
                s = s + self._sums(heads)[:, 0]
            return block.ln2(s.to(x.dtype)).reshape(x.shape)

        return hook

    def _diff_hooks(self) -> list:
        """Each read writer's output minus its replacement into `diff` (every size's rows at once)."""
        S, B, T = self.S, self.B, self.T
        diff, rep, out = self.diff, self.ab.rep_w, []
        d = diff.shape[-1]

        def single(i: int):
            def hook(x, hook=None):
                torch.sub(x.detach().reshape(S, B, T, d), rep[i], out=diff[i].view(S, B, T, d))

            return hook

        def heads(layer: int, lo: int, hi: int):
            W_O = self.model.bridge.blocks[layer].attn.W_O  # [head d_head d_model]

            def hook(z, hook=None):
                H = hi - lo
                o = diff[lo:hi]
                torch.bmm(z.detach().permute(2, 0, 1, 3).reshape(H, S * B * T, -1), W_O.to(z.dtype), out=o.view(H, -1, d))
                o.view(H, S, B, T, d).sub_(rep[lo:hi][:, None])

            return hook

        for name, (lo, hi) in self.ab._writer_span.items():
            if bool(self.read[lo:hi].any()):
                out.append((name, heads(int(name.split(".")[1]), lo, hi) if name.endswith("hook_z") else single(lo)))
        return out
