"""The replayed block: one transformer block run from our own code, on windows of positions, for many
variants at once. Path patching, exact edge patching, the IOI evaluation and the ablation engine
behind faithfulness curves all run their blocks through `Replay.block`, and nothing else writes a
block's forward.

A *variant* axis runs along the front of every residual stream X [variant batch win d_model]: the
senders of path patching, the edges into one input of exact patching, the circuits of a curve. A
*span* is the window of positions computed, per prompt (`Span`: from a start to each prompt's END,
padded to a common width); the positions before a prompt's start are the same in every variant as in
a base run, so its attention reads their keys and values from that run (`Keys`) instead of
recomputing them. A block:

    q, k, v  from ln1 of each input's residual stream (X itself, or a reader's own stream: `Inputs`),
             rotated at the span's positions (rotary models), at the query rows asked for;
    z        causal attention over the base run's keys before the span and the span's own after;
             `Edit.z` overrides or mean-ablates head outputs;
    X_mid    X + sum_h z_h W_O[h] + b_O; or, per head relative to a replacement (`Edit.relative_to`),
             handed to `Edit.heads`, their sum + `Edit.offset`;
    X'       X_mid + MLP(ln2(the MLP's input)): X_mid, `Edit.mlp_input(X_mid)`, or a known output.

Precision: the modules (norms, projections, MLPs) run in the model's dtype, as the model does; what
is summed is summed in float32 (`ACC`): the residual streams, attention's scores, softmax and
weighted sum of values. On a float32 model the casts are no-ops. Placement: each block runs on the
device of its own parameters, so a model split layer-wise over devices replays as on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.circuits.span import Span, gather_pos, reads_2d
from interp.circuits.weights import stacked_qkv
from interp.errors import WorkbenchError

ACC = torch.float32  # what sums are accumulated in, whatever the model's dtype
__all__ = ["ACC", "Edit", "Inputs", "Keys", "Replay", "Span", "gather_pos", "reads_2d"]


def rotate_half(x: Tensor) -> Tensor:
    """RoPE's rotation by halves (HF/NeoX: dims i and i + d/2 rotate together)."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotate_pairs(x: Tensor) -> Tensor:
    """RoPE's rotation by adjacent pairs (TransformerLens's native model: dims 2i and 2i+1)."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


@dataclass
class Keys:
    """What a span's attention reads before it: one layer's keys (rotated) and values over whole
    sequences of a base run; the positions from each prompt's start on are masked."""

    k: Float[Tensor, "batch pos kv d_head"]
    v: Float[Tensor, "batch pos kv d_head"]


@dataclass
class Inputs:
    """The q/k/v inputs of a layer that do not read its residual stream X: `streams` are the
    residual streams of the stacked columns `columns` (query heads 0..H-1, k heads H..H+G-1, v heads
    after: interp.circuits.weights.stacked_qkv's order), `projected` the projections (before rotary,
    biases included) of the columns `fixed`."""

    columns: Int[Tensor, "n"] | None = None
    streams: Float[Tensor, "variant n batch win d_model"] | None = None
    fixed: Int[Tensor, "m"] | None = None
    projected: Float[Tensor, "batch win m d_head"] | None = None
    default: Int[Tensor, "r"] | None = None  # the columns reading X (worked out here when not given)


@dataclass
class Edit:
    """How one replayed block departs from the plain forward (every field optional)."""

    inputs: Inputs | None = None  # readers' own residual streams or given projections
    z: Callable[[Tensor], Tensor] | None = None  # head outputs z [variant batch query head d_head] -> edited
    relative_to: Tensor | None = None  # a replacement's z [batch|1 query|1 head d_head]: per-head outputs are
    # taken relative to it, handed to `heads`, and the attention output is their sum + `offset`
    offset: Tensor | None = None  # the replacement's attention output, b_O included [batch|1 query|1 d_model]
    heads: Callable[[Tensor], None] | None = None  # receives the per-head outputs [variant batch query head d_model]
    mlp_input: Callable[[Tensor], Tensor] | None = None  # X_mid -> the MLP's own input stream
    mlp_output: Tensor | None = None  # the MLP's output, known (not computed)
    mlp_edit: Callable[[Tensor], Tensor] | None = None  # the MLP's output [variant batch query d_model] -> edited
    mlp_seen: Callable[[Tensor], None] | None = None  # receives the MLP's output (after `mlp_edit`)
    keys_seen: Callable[[Tensor, Tensor], None] | None = None  # receives the span's keys (rotated) and values


@dataclass
class Replay:
    """Weights and callables of one model, read once from its bridge, and the replayed block."""

    bridge: object  # the TransformerBridge (ln/mlp submodules are called directly)
    n_layers: int
    n_heads: int  # query heads per layer
    n_kv: int  # key/value heads per layer (GQA: query head h reads kv head h // (n_heads // n_kv))
    scale: float  # attention scores are q.k * scale
    rotary: bool  # whether q/k are rotated
    alibi: bool = False  # ALiBi biases on the scores (in-house models)
    tables: tuple | None = None  # RoPE (cos, sin, rotary dim) of a bridge that shows no hook_cos/hook_sin/hook_rot_k
    # (TransformerLens's native model: adjacent pairs); None: the caches hold them (HF bridges: halves)
    has_mlp: bool = True  # False for attention-only models
    dtype: torch.dtype = torch.float32  # the weights' dtype: what the modules are run in

    @classmethod
    def of(cls, model) -> Replay:
        b, cfg = model.bridge, model.bridge.cfg
        if getattr(cfg, "parallel_attn_mlp", False):
            raise WorkbenchError(f"{model.info.name} runs attention and MLP in parallel; the replay needs sequential blocks")
        if getattr(cfg, "attn_scores_soft_cap", -1) not in (-1, -1.0, None, 0):
            raise WorkbenchError(f"{model.info.name} soft-caps attention scores; the replay does not support it")
        scale = cfg.attn_scale if cfg.attn_scale and cfg.attn_scale > 0 else cfg.d_head**0.5
        from interp.bridge import fast_norm, native_rotary

        rotary = model.info.positional == "rotary"
        out = cls(b, cfg.n_layers, cfg.n_heads, model.info.n_kv_heads, 1.0 / scale if cfg.use_attn_scale else 1.0,
                  rotary, model.info.positional == "alibi", native_rotary(b) if rotary else None, not model.info.attn_only,
                  next(b.parameters()).dtype)  # fmt: skip
        out._devices, out._stacked = None, {}
        # the norms' own modules: the bridge's wrapper computes the same output (bit for bit, tested) but also
        # its hook_scale on the side, several times the cost of the norm on the small tensors the replay runs
        out._ln1 = [fast_norm(blk.ln1) for blk in b.blocks]
        out._ln2 = [fast_norm(blk.ln2) if hasattr(blk, "ln2") else None for blk in b.blocks]
        return out

    # -- weights and placement -----------------------------------------------------------------------
    def attn(self, layer: int):
        return self.bridge.blocks[layer].attn

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv

    def kv_of(self, head: int) -> int:
        return head // self.group

    def device_of(self, layer: int) -> torch.device:
        """Where block `layer`'s weights live (layer n_layers: the final norm's)."""
        if self._devices is None:
            devices = []
            for m in [*self.bridge.blocks, self.bridge.ln_final]:
                p = next(m.parameters(), None)  # a model without normalization has a weightless final norm
                devices.append(p.device if p is not None else devices[-1])
            self._devices = devices
        return self._devices[min(layer, self.n_layers)]

    def qkv_weights(self, layer: int) -> tuple[Tensor, Tensor | None]:
        """The layer's stacked q/k/v weights (interp.circuits.weights), read once per Replay."""
        if layer not in self._stacked:
            self._stacked[layer] = stacked_qkv(self.attn(layer))
        return self._stacked[layer]

    def cache_names(self, layer: int) -> list[str]:
        """The clean-run hooks a replay from a cache reads at `layer`."""
        kinds = ["resid_pre", "z", "q", "k", "v"] + (["resid_mid", "mlp_out"] if self.has_mlp else [])
        if self.rotary and self.tables is None:
            kinds += ["cos", "sin", "rot_k", "rot_q"]
        return [hooks.name(kind, layer) for kind in kinds]

    def all_cache_names(self) -> list[str]:
        return [n for layer in range(self.n_layers) for n in self.cache_names(layer)] + [hooks.final_resid(self.n_layers)]

    def stream_at(self, cache: dict[str, Tensor], layer: int, P: Int[Tensor, "batch p"]) -> Float[Tensor, "batch p d_model"]:
        """A cached run's residual stream entering `layer` (n_layers: the final one) at per-prompt
        positions P, in float32 on that layer's device."""
        dev = self.device_of(layer)
        name = hooks.name("resid_pre", layer) if layer < self.n_layers else hooks.final_resid(self.n_layers)
        return gather_pos(cache[name].to(dev), P.to(dev)).to(ACC)

    def keys(self, cache: dict[str, Tensor], layer: int) -> Keys:
        """A cached run's rotated keys and values at `layer`, on that layer's device."""
        dev = self.device_of(layer)
        return Keys(self.cached(cache, layer, "k").to(dev), cache[hooks.name("v", layer)].to(dev))

    def cached(self, cache: dict[str, Tensor], layer: int, which: str) -> Float[Tensor, "batch pos head d_head"]:
        """A cached run's q or k at `layer` after rotary (rotated here where the bridge shows none), or v."""
        if not self.rotary or which == "v":
            return cache[hooks.name(which, layer)]
        if self.tables is None:
            return cache[hooks.name(f"rot_{which}", layer)]
        x = cache[hooks.name(which, layer)]
        pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return self.rotate(x, *self.cos_sin(cache, layer, pos))

    # -- the pieces -------------------------------------------------------------------------------------
    def ln1(self, layer: int, resid_pre: Tensor) -> Tensor:
        return self._ln1[layer](resid_pre)

    def mlp(self, layer: int, resid_mid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The block's MLP output on an input stream (its norm reads the stream as given, the MLP runs
        in the model's dtype), in float32."""
        return self.bridge.blocks[layer].mlp(self._ln2[layer](resid_mid).to(self.dtype)).to(ACC)

    def head_out(self, layer: int, heads: Int[Tensor, "n"], z: Float[Tensor, "n ... d_head"]) -> Float[Tensor, "n ... d_model"]:
        """Each row's head output z @ W_O[head] in z's dtype (no bias: a difference of two outputs needs none)."""
        W_O = self.attn(layer).W_O[heads].to(z.dtype)  # [n, d_head, d_model]
        return einops.einsum(z, W_O, "n ... d_head, n d_head d_model -> n ... d_model")

    def project(self, layer: int, normed: Tensor, columns: Tensor | None = None) -> Float[Tensor, "... pos column d_head"]:
        """q/k/v projections (before rotary, biases included) of normalized inputs [..., pos, d_model],
        for the stacked `columns` (default: every q, k and v head of the layer)."""
        W, b = self.qkv_weights(layer)
        if columns is not None:
            W, b = W[columns], None if b is None else b[columns]
        out = torch.einsum("...pd,cde->...pce", normed.to(W.dtype), W)
        return out if b is None else out + b

    def rotate(self, x: Float[Tensor, "... pos head d_head"], cos: Tensor | None, sin: Tensor | None) -> Tensor:
        if not self.rotary:
            return x
        cos, sin = cos.unsqueeze(-2).to(x.dtype), sin.unsqueeze(-2).to(x.dtype)
        if self.tables is None:
            return x * cos + rotate_half(x) * sin
        rd = self.tables[2]
        turned = x[..., :rd] * cos + rotate_pairs(x[..., :rd]) * sin
        return torch.cat([turned, x[..., rd:]], dim=-1) if rd < x.shape[-1] else turned

    def cos_sin(self, cache: dict[str, Tensor] | None, layer: int, idx: Int[Tensor, "batch win"]):
        """Rotary cos/sin at per-prompt positions `idx` (None, None without rotary), on idx's device: from
        the cache's hook_cos/hook_sin, or from the model's own tables."""
        if not self.rotary:
            return None, None
        if self.tables is not None:
            return tuple(t.to(idx.device)[idx] for t in self.tables[:2])
        return tuple(gather_pos(cache[hooks.name(x, layer)].to(idx.device).expand(idx.shape[0], -1, -1), idx)
                     for x in ("cos", "sin"))  # fmt: skip

    def _alibi(self, qpos: Tensor, kpos: Tensor, heads: Tensor | None, shape: tuple[int, int]) -> Tensor:
        """ALiBi's score bias per query head, [batch kv member query key] (`heads`: the query heads
        attending, grouped as `shape` = (kv, member); default every head)."""
        from interp.models.inhouse import alibi_slopes

        slopes = alibi_slopes(self.n_heads).to(qpos.device)
        slopes = (slopes if heads is None else slopes[heads.to(qpos.device)]).view(*shape)
        dist = (qpos[:, :, None] - kpos[:, None, :]).clamp(min=0).float()  # [batch query key]
        return -slopes[None, :, :, None, None] * dist[:, None, None]

    def attend(
        self,
        q: Float[Tensor, "variant batch query head d_head"],
        k: Float[Tensor, "variant batch win kv d_head"],
        v: Float[Tensor, "variant batch win kv d_head"],
        qidx: Int[Tensor, "batch query"],
        span: Span,
        keys: Keys | None = None,
        heads: Int[Tensor, "head"] | None = None,
    ) -> Float[Tensor, "variant batch query head d_head"]:
        """Causal attention of queries at window entries `qidx` over the span's own keys up to them and,
        with `keys`, the base run's keys before each prompt's start (shared by every variant, never
        copied per variant). Query heads are grouped by the KV head they read (head = kv * group +
        member; `heads`: which query heads q holds, default all, for ALiBi's slopes). Scores, softmax and
        the weighted sum are float32; z comes back in v's dtype."""
        S, B, Q, H, E = q.shape
        G = k.shape[-2]
        qg = q.view(S, B, Q, G, H // G, E)
        k, v = k.expand(S, *k.shape[1:]), v.expand(S, *v.shape[1:])  # a variant axis of 1: shared (a view)
        win = torch.einsum("sbqgme,sbwge->sbgmqw", qg, k.to(qg.dtype))
        win = win.to(ACC) * self.scale
        causal = torch.arange(span.width, device=q.device)[None, None, :] <= qidx[:, :, None]  # [batch query win]
        if self.alibi:
            win = win + self._alibi(gather_pos(span.pos, qidx), span.pos, heads, (G, H // G))
        win = win.masked_fill(~causal[None, :, None, None], float("-inf"))
        if keys is None:
            pattern = win.softmax(-1)
            z = torch.einsum("sbgmqw,sbwge->sbqgme", pattern, v.to(ACC))
            return z.reshape(S, B, Q, H, E).to(v.dtype)
        n = keys.k.shape[1] if span.before is None else span.before  # no key at or after the latest start is read
        kk, kv = keys.k[:, :n], keys.v[:, :n]
        pre = torch.einsum("sbqgme,bkge->sbgmqk", qg, kk.to(qg.dtype)).to(ACC) * self.scale
        before = torch.arange(n, device=q.device)[None, :] < span.start[:, None]  # [batch key]
        if self.alibi:
            pre = pre + self._alibi(gather_pos(span.pos, qidx), torch.arange(n, device=q.device).expand(B, -1), heads, (G, H // G))
        pre = pre.masked_fill(~before[None, :, None, None, None, :], float("-inf"))
        pattern = torch.cat([pre, win], dim=-1).softmax(-1)
        p_pre, p_win = pattern.split([pre.shape[-1], win.shape[-1]], dim=-1)
        z = torch.einsum("sbgmqk,bkge->sbqgme", p_pre, kv.to(ACC))
        z = z + torch.einsum("sbgmqw,sbwge->sbqgme", p_win, v.to(ACC))
        return z.reshape(S, B, Q, H, E).to(v.dtype)

    # -- the block --------------------------------------------------------------------------------------
    def qkv(self, layer: int, X: Tensor, span: Span, cache: dict[str, Tensor] | None, inputs: Inputs | None,
            qidx: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """q (at the query rows `qidx`, all rows without), k and v of a layer over the span, rotated."""
        H, G = self.n_heads, self.n_kv
        if inputs is None:
            p = self.project(layer, self.ln1(layer, X))
        else:
            p = self._assemble(layer, X, inputs)
        q, k, v = p.split([H, G, G], dim=-2)
        cos, sin = self.cos_sin(cache, layer, span.pos) if self.rotary else (None, None)
        k = self.rotate(k, cos, sin)
        if qidx is not None:
            S = q.shape[0]
            q = gather_pos(q.flatten(0, 1), qidx.repeat(S, 1)).view(S, q.shape[1], qidx.shape[1], H, -1)
            if cos is not None:
                cos, sin = gather_pos(cos, qidx), gather_pos(sin, qidx)
        return self.rotate(q, cos, sin), k, v

    def _assemble(self, layer: int, X: Tensor, inputs: Inputs) -> Float[Tensor, "variant batch win column d_head"]:
        """Every q/k/v column's projection: from ln1(X), from a reader's own stream, or given."""
        C = self.n_heads + 2 * self.n_kv
        rest = inputs.default
        if rest is None:
            own = torch.zeros(C, dtype=torch.bool)
            for idx in (inputs.columns, inputs.fixed):
                if idx is not None:
                    own[idx.cpu()] = True
            rest = (~own).nonzero().flatten()
        S = max(X.shape[0], 1 if inputs.streams is None else inputs.streams.shape[0])
        B, W = X.shape[1], X.shape[2]
        out = None
        if len(rest):
            rest = rest.to(X.device)
            part = self.project(layer, self.ln1(layer, X), rest)  # [S' B W r E]
            out = part.new_empty(S, B, W, C, part.shape[-1])
            out[:, :, :, rest] = part
        if inputs.columns is not None and len(inputs.columns):
            cols = inputs.columns.to(X.device)
            normed = self.ln1(layer, inputs.streams)  # [S n B W d]
            W_, b = self.qkv_weights(layer)
            part = torch.einsum("snbwd,nde->sbwne", normed.to(W_.dtype), W_[cols])
            part = part if b is None else part + b[cols]
            if out is None:
                out = part.new_empty(S, B, W, C, part.shape[-1])
            out[:, :, :, cols] = part
        if inputs.fixed is not None and len(inputs.fixed):
            fixed = inputs.projected.to(X.device)
            if out is None:
                out = fixed.new_empty(S, B, W, C, fixed.shape[-1])
            out[:, :, :, inputs.fixed.to(X.device)] = fixed.to(out.dtype)
        return out

    def write(self, layer: int, z: Tensor, edit: Edit | None) -> Float[Tensor, "variant batch query d_model"]:
        """The attention output in float32: sum_h z_h W_O[h] + b_O, or per head relative to a replacement."""
        a = self.attn(layer)
        if edit is None or edit.relative_to is None:
            out = einops.einsum(z, a.W_O.to(z.dtype), "s b q h e, h e d -> s b q d").to(ACC)
            return out if a.b_O is None else out + a.b_O.to(ACC)
        rel = (z - edit.relative_to.to(z.dtype))  # [S B Q H E]
        S, B, Q, H, E = rel.shape
        per = torch.bmm(rel.permute(3, 0, 1, 2, 4).reshape(H, S * B * Q, E), a.W_O.to(z.dtype))  # [H rows d]
        per = per.view(H, S, B, Q, -1).permute(1, 2, 3, 0, 4).to(ACC)
        if edit.heads is not None:
            edit.heads(per)
        return per.sum(3) + edit.offset.to(ACC)

    def block(self, layer: int, X: Float[Tensor, "variant batch win d_model"], span: Span, *,
              cache: dict[str, Tensor] | None = None, keys: Keys | None = None, qidx: Tensor | None = None,
              edit: Edit | None = None) -> Float[Tensor, "variant batch query d_model"]:  # fmt: skip
        """One block on residual streams X over `span` (float32 out, on the layer's device): queries at
        the window entries `qidx` (default: every entry), attention over the span and, with `keys`, the
        base run's keys before it; `cache` holds the rotary tables (hook_cos/hook_sin); `edit` says
        what departs from the plain forward (see `Edit`)."""
        dev = self.device_of(layer)
        X, span = X.to(dev), span.to(dev)
        qidx = None if qidx is None else qidx.to(dev)
        q, k, v = self.qkv(layer, X, span, cache, edit.inputs if edit else None, qidx)
        if edit is not None and edit.keys_seen is not None:
            edit.keys_seen(k, v)
        rows = torch.arange(span.width, device=dev).expand(span.pos.shape[0], -1) if qidx is None else qidx
        z = self.attend(q, k, v, rows, span, keys)
        if edit is not None and edit.z is not None:
            z = edit.z(z)
        if qidx is not None:
            S = X.shape[0]
            X = gather_pos(X.flatten(0, 1), qidx.repeat(S, 1)).view(S, X.shape[1], qidx.shape[1], -1)
        mid = X.to(ACC) + self.write(layer, z, edit)
        if not self.has_mlp:
            return mid
        if edit is not None and edit.mlp_output is not None:
            out = edit.mlp_output.to(dev, ACC).expand_as(mid)
        else:
            out = self.mlp(layer, edit.mlp_input(mid) if edit is not None and edit.mlp_input is not None else mid)
        if edit is not None and edit.mlp_edit is not None:
            out = edit.mlp_edit(out)
        if edit is not None and edit.mlp_seen is not None:
            edit.mlp_seen(out)
        return mid + out

    def run(self, X: Tensor, span: Span, first: int, cache: dict[str, Tensor] | None = None,
            keys: Callable[[int], Keys | None] | None = None, edits: Callable[[int], Edit | None] | None = None,
            end_only: bool = True) -> Float[Tensor, "variant batch d_model"]:  # fmt: skip
        """Blocks `first`.. on X over `span` (the last one at the read positions only when `end_only`);
        the final residual stream at each prompt's END, or at its reads (`Span.readout`; float32, on
        the final norm's device)."""
        L = self.n_layers
        for layer in range(first, L):
            last = layer == L - 1 and end_only
            X = self.block(layer, X, span, cache=cache, keys=keys(layer) if keys else None,
                           qidx=span.rows if last else None, edit=edits(layer) if edits else None)  # fmt: skip
        dev = self.device_of(L)
        X = X.to(dev)
        if first >= L or not end_only:  # X is the final residual stream over the whole span
            S, rows = X.shape[0], span.rows.to(dev)
            return span.readout(gather_pos(X.flatten(0, 1), rows.repeat(S, 1)).view(S, -1, rows.shape[1], X.shape[-1]))
        return span.readout(X)
