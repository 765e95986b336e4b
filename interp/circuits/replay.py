"""Replaying pieces of a model's forward pass from its clean cache, batched over many variants.

Path patching changes a few things and keeps the rest of the clean run. `Replay` holds one
model's weights in TransformerLens layout and the steps fast path patching is built from:

- `frozen_pass` (step 1): every head frozen at its clean output except one sender per variant,
  which takes its corrupted output; only MLPs (and norms) are recomputed, so nothing moves
  between positions and the pass runs on the few positions that matter;
- `receiver_z` (step 2a): a receiver head's output over a window of positions, its q/k/v input
  taken from step 1 at the patched position and clean keys/values elsewhere;
- `window_pass` (step 2b): the model from the first receiver layer to the end, over the window
  from the patched position to END only, against clean keys and values before it;
- the pure pieces these use: a head's output, an MLP, q/k/v projections with rotary, causal
  attention for a window of queries (`attend`), and the logit difference at the end.

A variant axis ("variant") runs along the front of every batched tensor: one variant per
sender. Every step is checked against the bridge (`check_null`: the replay with nothing patched
must give back the clean run, or the fast path refuses to run), and tests compare the whole
engine with the brute-force reference (interp.circuits.path_reference).

Low precision (bf16/fp16). The modules (norms, projections, MLPs) run in the model's dtype, as the
model does, but what is summed is summed in float32: the senders' changes of the residual stream,
the frozen and replayed residual streams, attention's softmax and its weighted sum, and the metric
(final norm and unembedding columns) of the final residual. Each batch also carries a null variant
(nothing patched) through the same kernels, and a variant's result is the clean metric plus its
difference from the null one, so the replay's own rounding (a bf16 forward in another order than
the bridge's) cancels instead of showing up as an effect. On a float32 model the casts are no-ops.

Placement. Tensors follow the layer they are used at (the device of that block's parameters; the
final norm's for the metric), so a model split layer-wise over devices replays as on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.types import Head

if TYPE_CHECKING:
    from interp.models import Model

Metric = Callable[[Tensor], Tensor]  # final residual at END [variant batch d_model] -> [variant batch]
ACC = torch.float32  # what sums are accumulated in, whatever the model's dtype


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def gather_pos(x: Float[Tensor, "batch pos ..."], idx: Int[Tensor, "batch win"]) -> Float[Tensor, "batch win ..."]:
    """x[b, idx[b, w]] for every prompt b (a per-prompt gather along positions)."""
    view = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:])
    return x.gather(1, view)


def window(start: Int[Tensor, "batch"], end: Int[Tensor, "batch"], n_pos: int) -> Int[Tensor, "batch win"]:
    """Per-prompt positions start..end padded to a common width (clamped to the sequence; the
    entries past a prompt's END are never read by its real positions)."""
    width = int((end - start).max()) + 1
    pos = start[:, None] + torch.arange(width, device=start.device)[None]
    return pos.clamp(max=n_pos - 1)


@dataclass
class PatchCaches:
    """What path patching reads from the two real runs: the clean run's cache (every hook the
    replay needs), the corrupted run's head outputs, and both runs' metric per prompt."""

    clean: dict[str, Tensor]  # hook name -> clean activation [batch pos ...]
    corrupted: dict[str, Tensor]  # hook name -> corrupted hook_z [batch pos head d_head]
    clean_metric: Float[Tensor, "batch"]  # e.g. the clean logit difference
    corrupted_metric: Float[Tensor, "batch"]

    @classmethod
    @torch.no_grad()
    def collect(cls, model: Model, clean_tokens: Tensor, corrupted_tokens: Tensor, names: list[str],
                metric: Callable[[Tensor], Tensor]) -> PatchCaches:
        """Run both prompt sets once; `metric(logits) -> [batch]`."""
        wanted = set(names)
        clean_logits, clean = model.run_with_cache(clean_tokens, names_filter=lambda n: n in wanted)
        z_names = set(hooks.names("z", range(model.info.n_layers)))
        corr_logits, corr = model.run_with_cache(corrupted_tokens, names_filter=lambda n: n in z_names)
        missing = sorted(wanted - set(clean.keys()))
        if missing:
            raise WorkbenchError(
                f"{model.info.name} does not expose the hooks fast patching replays ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}); use interp.circuits.path_reference.path_patch_reference"
            )
        return cls(dict(clean.items()), dict(corr.items()), metric(clean_logits), metric(corr_logits))


@dataclass
class Replay:
    """Weights and callables of one model, read once from its bridge."""

    bridge: object  # the TransformerBridge (ln/mlp submodules are called directly)
    n_layers: int  # layers
    n_heads: int  # query heads per layer
    n_kv: int  # key/value heads per layer (GQA: query head h reads kv head h // (n_heads // n_kv))
    scale: float  # attention scores are q.k * scale
    rotary: bool  # whether q/k are rotated (hook_cos/hook_sin are then cached)
    has_mlp: bool = True  # False for attention-only models
    dtype: torch.dtype = torch.float32  # the weights' dtype: what the modules are run in
    devices: list[torch.device] | None = None  # each block's device, then the final norm's (read once)

    @classmethod
    def of(cls, model: Model) -> Replay:
        b, cfg = model.bridge, model.bridge.cfg
        if getattr(cfg, "parallel_attn_mlp", False):
            raise WorkbenchError(
                f"{model.info.name} runs attention and MLP in parallel; path patching needs sequential blocks"
            )
        if getattr(cfg, "attn_scores_soft_cap", -1) not in (-1, -1.0, None, 0):
            raise WorkbenchError(
                f"{model.info.name} soft-caps attention scores; fast path patching does not support it"
            )
        scale = cfg.attn_scale if cfg.attn_scale and cfg.attn_scale > 0 else cfg.d_head**0.5
        return cls(
            b,
            cfg.n_layers,
            cfg.n_heads,
            model.info.n_kv_heads,
            1.0 / scale if cfg.use_attn_scale else 1.0,
            model.info.positional == "rotary",
            not model.info.attn_only,
            next(b.parameters()).dtype,
        )

    # -- weights and cache names -------------------------------------------------------------------
    def attn(self, layer: int):
        return self.bridge.blocks[layer].attn

    def kv_of(self, head: int) -> int:
        return head // (self.n_heads // self.n_kv)

    def device_of(self, layer: int) -> torch.device:
        """Where block `layer`'s weights live (layer n_layers: the final norm's)."""
        if self.devices is None:
            modules = [*self.bridge.blocks, self.bridge.ln_final]
            self.devices = [next(m.parameters()).device for m in modules]
        return self.devices[min(layer, self.n_layers)]

    def clean_at(self, cache: PatchCaches, layer: int, P: Int[Tensor, "batch p"]) -> Float[Tensor, "batch p d_model"]:
        """The clean residual stream entering `layer` (n_layers: the final one) at positions P, in
        float32 on that layer's device."""
        dev = self.device_of(layer)
        name = hooks.name("resid_pre", layer) if layer < self.n_layers else hooks.final_resid(self.n_layers)
        return gather_pos(cache.clean[name].to(dev), P.to(dev)).to(ACC)

    def cache_names(self, layer: int) -> list[str]:
        """The clean-run hooks the replay reads at `layer`."""
        kinds = ["resid_pre", "z", "q", "k", "v"] + (["resid_mid", "mlp_out"] if self.has_mlp else [])
        if self.rotary:
            kinds += ["cos", "sin", "rot_k", "rot_q"]
        return [hooks.name(kind, layer) for kind in kinds]

    def all_cache_names(self) -> list[str]:
        return [n for layer in range(self.n_layers) for n in self.cache_names(layer)] + [hooks.final_resid(self.n_layers)]

    # -- pure steps ----------------------------------------------------------------------------
    def head_out(
        self, layer: int, heads: Int[Tensor, "n"], z: Float[Tensor, "n ... d_head"]
    ) -> Float[Tensor, "n ... d_model"]:
        """Each row's head output z @ W_O[head] in z's dtype (no bias: a difference of two outputs
        needs none)."""
        W_O = self.attn(layer).W_O[heads].to(z.dtype)  # [n, d_head, d_model]
        return einops.einsum(z, W_O, "n ... d_head, n d_head d_model -> n ... d_model")

    def mlp(self, layer: int, resid_mid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The block's MLP output (the norm reads `resid_mid` as given, the MLP runs in the model's
        dtype), in resid_mid's dtype."""
        block = self.bridge.blocks[layer]
        return block.mlp(block.ln2(resid_mid).to(self.dtype)).to(resid_mid.dtype)

    def ln1(self, layer: int, resid_pre: Tensor) -> Tensor:
        return self.bridge.blocks[layer].ln1(resid_pre)

    def project(
        self, layer: int, resid_pre: Float[Tensor, "... pos d_model"], which: str, normed: bool = False
    ) -> Float[Tensor, "... pos head d_head"]:
        """Un-rotated q (all query heads) or k/v (all kv heads) of a residual stream input
        (or of its ln1 output already, with normed=True)."""
        a = self.attn(layer)
        W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[which]
        x = (resid_pre if normed else self.ln1(layer, resid_pre)).to(W.dtype)
        out = einops.einsum(x, W, "... pos d_model, head d_model d_head -> ... pos head d_head")
        return out if b is None else out + b

    def rotate(self, x: Float[Tensor, "... pos head d_head"], cos: Float[Tensor, "... pos d_head"], sin) -> Tensor:
        if not self.rotary:
            return x
        return x * cos.unsqueeze(-2) + rotate_half(x) * sin.unsqueeze(-2)

    def attend(
        self,
        q: Float[Tensor, "variant batch win head d_head"],
        k_pre: Float[Tensor, "batch pos kv d_head"],
        v_pre: Float[Tensor, "batch pos kv d_head"],
        k_win: Float[Tensor, "variant batch win kv d_head"],
        v_win: Float[Tensor, "variant batch win kv d_head"],
        start: Int[Tensor, "batch"],
    ) -> Float[Tensor, "variant batch win head d_head"]:
        """Causal attention for a window of consecutive query positions start..start+win-1:
        keys before `start` come from the clean run (shared by every variant), keys in the
        window from the variant itself. No key tensor is copied per variant. Query heads are
        grouped by the KV head they read (GQA): head = kv * group + member. Scores, softmax and
        the weighted sum of values are float32; z comes back in v_win's dtype."""
        S, B, W, H, E = q.shape
        G = k_pre.shape[-2]
        qg = q.view(S, B, W, G, H // G, E)
        pre = einops.einsum(qg, k_pre, "s b win kv member e, b key kv e -> s b kv member win key").to(ACC) * self.scale
        before = torch.arange(k_pre.shape[1], device=q.device)[None, :] < start[:, None]  # [batch key]
        pre = pre.masked_fill(~before[None, :, None, None, None, :], float("-inf"))
        win = einops.einsum(qg, k_win, "s b win kv member e, s b wkey kv e -> s b kv member win wkey")
        win = win.to(ACC) * self.scale
        causal = torch.ones(W, W, dtype=torch.bool, device=q.device).tril()
        win = win.masked_fill(~causal, float("-inf"))
        pattern = torch.cat([pre, win], dim=-1).softmax(-1)
        p_pre, p_win = pattern.split([pre.shape[-1], W], dim=-1)
        z = einops.einsum(p_pre, v_pre.to(ACC), "s b kv member win key, b key kv e -> s b win kv member e")
        z = z + einops.einsum(p_win, v_win.to(ACC), "s b kv member win wkey, s b wkey kv e -> s b win kv member e")
        return z.reshape(S, B, W, H, E).to(v_win.dtype)

    def logit_diff(
        self, resid_final: Float[Tensor, "... d_model"], io: Int[Tensor, "..."], s: Int[Tensor, "..."]
    ) -> Tensor:
        """logit(io) - logit(s) from the final residual stream (final norm recomputed), in
        resid_final's dtype (float32 for the replay's residuals) on the unembedding's device."""
        W_U = self.bridge.W_U
        x = self.bridge.ln_final(resid_final.to(W_U.device))
        io, s = io.to(W_U.device), s.to(W_U.device)
        direction = (W_U[:, io] - W_U[:, s]).to(x.dtype)  # [d_model, ...]
        out = einops.einsum(x, direction, "... d_model, d_model ... -> ...")
        b_U = getattr(self.bridge, "b_U", None)
        return out if b_U is None else out + (b_U[io] - b_U[s]).to(x.dtype)

    def causal_attend(
        self,
        q: Float[Tensor, "variant batch query head d_head"],
        k: Float[Tensor, "variant batch pos kv d_head"],
        v: Float[Tensor, "variant batch pos kv d_head"],
        qpos: Int[Tensor, "batch query"],
    ) -> Float[Tensor, "variant batch query head d_head"]:
        """Causal attention over whole sequences for queries at positions `qpos` (every position,
        or END alone in a last layer). k/v may have a variant axis of 1 (shared clean keys and
        values); query heads are grouped by the KV head they read, head = kv * group + member.
        The softmax runs in float32, as the HF attention the bridge wraps does."""
        S, B, Q, H, E = q.shape
        G = k.shape[-2]
        qg = q.reshape(S, B, Q, G, H // G, E).permute(0, 1, 3, 4, 2, 5)  # [s b kv member query e]
        kt = k.permute(0, 1, 3, 4, 2)[:, :, :, None]  # [s b kv 1 e pos]
        scores = (qg @ kt.to(qg.dtype)).float() * self.scale  # [s b kv member query pos]
        keys = torch.arange(k.shape[2], device=q.device)
        allowed = keys[None, None, :] <= qpos[:, :, None]  # [batch query pos]
        scores = scores.masked_fill(~allowed[None, :, None, None], float("-inf"))
        pattern = scores.softmax(-1).to(v.dtype)
        z = pattern @ v.permute(0, 1, 3, 2, 4)[:, :, :, None]  # [s b kv member query e]
        return z.permute(0, 1, 4, 2, 3, 5).reshape(S, B, Q, H, E)

    def layer(self, cache: PatchCaches, layer: int, X: Float[Tensor, "variant batch pos d_model"],
              end: Int[Tensor, "batch"] | None = None) -> Tensor:
        """One whole block on residual streams X (every position); with `end`, only each prompt's
        END comes out ([variant batch 1 d_model]: a last layer needs nothing else)."""
        B, T = X.shape[1], X.shape[2]
        pos = torch.arange(T, device=X.device).expand(B, T)
        cos, sin = self.cos_sin(cache, layer, pos)
        x = self.ln1(layer, X)
        q = self.project(layer, x, "q", normed=True)
        if end is not None:
            q = gather_pos(q.flatten(0, 1), end.repeat(X.shape[0])[:, None]).view(X.shape[0], B, 1, *q.shape[3:])
            qc, qs = (None, None) if cos is None else (gather_pos(cos, end[:, None]), gather_pos(sin, end[:, None]))
            q = self.rotate(q, qc, qs)
            qpos = end[:, None]
            X = gather_pos(X.flatten(0, 1), end.repeat(X.shape[0])[:, None]).view(X.shape[0], B, 1, -1)
        else:
            q = self.rotate(q, cos, sin)
            qpos = pos
        k = self.rotate(self.project(layer, x, "k", normed=True), cos, sin)
        v = self.project(layer, x, "v", normed=True)
        z = self.causal_attend(q, k, v, qpos)
        a = self.attn(layer)
        X = X + einops.einsum(z, a.W_O, "s b p head e, head e d_model -> s b p d_model")
        X = X + (0 if a.b_O is None else a.b_O)
        return X + self.mlp(layer, X) if self.has_mlp else X

    # -- cached pieces ---------------------------------------------------------------------------
    def clean_qkv(self, cache: PatchCaches, layer: int, which: str) -> Float[Tensor, "batch pos head d_head"]:
        """The clean run's rotated q/k (or plain v) of a layer, on that layer's device."""
        kind = f"rot_{which}" if self.rotary and which != "v" else which
        return cache.clean[hooks.name(kind, layer)].to(self.device_of(layer))

    def cos_sin(self, cache: PatchCaches, layer: int, idx: Int[Tensor, "batch win"]):
        """Rotary cos/sin at per-prompt positions `idx` (None, None without rotary), on idx's device."""
        if not self.rotary:
            return None, None
        return (gather_pos(cache.clean[hooks.name(x, layer)].to(idx.device).expand(idx.shape[0], -1, -1), idx)
                for x in ("cos", "sin"))  # fmt: skip

    # -- step 1 -------------------------------------------------------------------------------------
    def frozen_pass(
        self, cache: PatchCaches, senders: list[Head], P: Int[Tensor, "batch p"], targets: list[int]
    ) -> dict[int, Float[Tensor, "variant batch p d_model"]]:
        """Residual stream entering each target layer (n_layers = the final residual) at
        positions P, for each sender (variants sorted by layer), with every head frozen at its
        clean output but that sender (corrupted); float32, on the target layer's device. Targets
        below a sender's layer get the clean residual for that variant (the sender cannot reach
        them). Each variant's change of the residual is summed in float32; an MLP's change is
        its output on the changed input minus its output on the clean one, both from the same call
        (a null row rides along), so a change too small to alter the MLP's input adds nothing."""
        clean = cache.clean
        layers = [layer for layer, _ in senders]
        D: Tensor | None = None  # each variant's change of the residual stream [variant batch p d_model]
        out = {}
        for layer in range(min(min(layers), min(targets)), max(targets) + 1):
            dev = self.device_of(layer)
            Pl = P.to(dev)
            if D is None:
                d = clean[hooks.name("resid_pre", 0)].shape[-1]
                D = torch.zeros(len(senders), *P.shape, d, dtype=ACC, device=dev)
            D = D.to(dev)
            if layer in targets:
                out[layer] = self.clean_at(cache, layer, Pl) + D
            if layer == self.n_layers:
                break
            act = sum(x <= layer for x in layers)  # senders are sorted: this layer's rows are first..act-1
            first = layers.index(layer) if layer in layers else act
            if layer in layers:
                heads = torch.tensor([h for _, h in senders[first:act]], device=dev)
                z = hooks.name("z", layer)
                dz = gather_pos(cache.corrupted[z].to(dev), Pl).to(ACC) - gather_pos(clean[z].to(dev), Pl).to(ACC)
                D[first:act] += self.head_out(layer, heads, einops.rearrange(dz[:, :, heads], "b p n e -> n b p e"))
            if act and self.has_mlp:
                mid = gather_pos(clean[hooks.name("resid_mid", layer)].to(dev), Pl).to(ACC)
                y = self.mlp(layer, mid + torch.cat([D[:act], D.new_zeros(1, *D.shape[1:])]))  # last row: clean
                D[:act] += y[:act] - y[act:]
        return out

    # -- step 2 -------------------------------------------------------------------------------------
    @staticmethod
    def into_window(base: Tensor, new: Tensor, every: bool) -> Tensor:
        """The window's values with the patched position(s) replaced: the first window entry
        (a named position starts the window) or, when every position is patched, all of them."""
        if every:
            return new[:, :, : base.shape[2]]
        out = base.expand(new.shape[0], *base.shape[1:]).clone()
        out[:, :, :1] = new
        return out

    def receiver_z(self, cache: PatchCaches, layer: int, head: int, comps: str, P: Tensor, resid: Tensor,
                   pos: Tensor, every: bool) -> Float[Tensor, "variant batch win d_head"]:
        """The receiver head's output on the window `pos`, its q/k/v inputs at P taken from `resid`
        (all on the layer's device)."""
        g = self.kv_of(head)
        start = pos[:, 0]
        cos, sin = self.cos_sin(cache, layer, P)
        one = {"q": slice(head, head + 1), "k": slice(g, g + 1), "v": slice(g, g + 1)}
        x = {}
        for c in "qkv":
            full = self.clean_qkv(cache, layer, c)[:, :, one[c]]  # clean [batch pos 1 e]
            x[c] = (full, gather_pos(full, pos)[None])  # (prefix source, window)
            if c in comps:
                new = self.project(layer, resid, c)[..., one[c], :]
                new = new if c == "v" else self.rotate(new, cos, sin)
                x[c] = (full, self.into_window(x[c][1], new, every))
        q = x["q"][1].expand(resid.shape[0], *x["q"][1].shape[1:])
        k_win, v_win = (x[c][1].expand(resid.shape[0], *x[c][1].shape[1:]) for c in "kv")
        z = self.attend(q, x["k"][0], x["v"][0], k_win, v_win, start)
        return z[..., 0, :]

    def window_pass(self, cache: PatchCaches, first: int, pos: Tensor, end: Tensor,
                    replaced: dict[Head, Tensor]) -> Float[Tensor, "variant batch d_model"]:
        """The model from layer `first` to the end over the window `pos` (its first column is
        each prompt's start, `end` its END), with the outputs of the heads in `replaced` set to
        the given z [variant batch win d_head]; returns the final residual at END (float32, on
        the final norm's device). The residual stream is summed in float32; each layer runs on
        its own device."""
        clean = cache.clean
        S = next(iter(replaced.values())).shape[0]
        X = None
        for layer in range(first, self.n_layers):
            dev = self.device_of(layer)
            pl = pos.to(dev)
            if X is None:
                X = gather_pos(clean[hooks.name("resid_pre", first)].to(dev), pl).to(ACC).expand(S, -1, -1, -1)
            X = X.to(dev)
            cos, sin = self.cos_sin(cache, layer, pl)
            x = self.ln1(layer, X)
            q = self.rotate(self.project(layer, x, "q", normed=True), cos, sin)
            k = self.rotate(self.project(layer, x, "k", normed=True), cos, sin)
            v = self.project(layer, x, "v", normed=True)
            z = self.attend(q, self.clean_qkv(cache, layer, "k"), self.clean_qkv(cache, layer, "v"), k, v, pl[:, 0])
            for (rl, h), zh in replaced.items():
                if rl == layer:
                    z[:, :, :, h] = zh.to(dev)
            a = self.attn(layer)
            X = X + einops.einsum(z, a.W_O, "s b win head e, head e d_model -> s b win d_model").to(ACC)
            X = X + (0 if a.b_O is None else a.b_O.to(ACC))
            X = X + self.mlp(layer, X) if self.has_mlp else X
        dev = self.device_of(self.n_layers)
        at_end = (end - pos[:, 0]).to(dev)[None, :, None, None].expand(S, -1, 1, X.shape[-1])
        return X.to(dev).gather(2, at_end)[:, :, 0]

    def receiver_final(self, cache: PatchCaches, receivers: list[Head], components: str, every: bool,
                       P: Tensor, end: Tensor, resid: dict[int, Tensor]) -> Float[Tensor, "variant batch d_model"]:
        """Step 2: each receiver's output recomputed from `resid` (step 1's residual at its
        layer), then the model replayed over the window P..END with those outputs; the final
        residual at END."""
        T = cache.clean[hooks.name("resid_pre", 0)].shape[1]
        pos = window(P[:, 0], end.to(P.device), T)
        zs = {}
        for layer, h in receivers:
            dev = self.device_of(layer)
            zs[(layer, h)] = self.receiver_z(cache, layer, h, components, P.to(dev), resid[layer].to(dev),
                                             pos.to(dev), every)  # fmt: skip
        first = min(layer for layer, _ in receivers)
        return self.window_pass(cache, first, pos, end, zs)

    def receiver_pass(self, cache: PatchCaches, receivers: list[Head], components: str, every: bool, P: Tensor,
                      end: Tensor, resid: dict[int, Tensor], metric: Metric) -> Float[Tensor, "variant batch"]:
        """`metric` after step 2 for each variant of `resid`: the clean metric plus the variant's
        difference from a null variant (the receivers' inputs clean) replayed in the same batch."""
        resid = {layer: torch.cat([self.clean_at(cache, layer, P)[None], r.to(self.device_of(layer))])
                 for layer, r in resid.items()}  # fmt: skip
        m = metric(self.receiver_final(cache, receivers, components, every, P, end, resid))
        return cache.clean_metric.to(m) + (m[1:] - m[:1])

    @torch.no_grad()
    def check_null(self, cache: PatchCaches, receivers: list[Head], components: str, every: bool, P: Tensor,
                   end: Tensor, metric: Metric) -> None:
        """The window replay with nothing patched must give back the clean run: its final residual
        at END within rounding of the cached one (relative to that residual's largest entry:
        1e-4 in float32, 2^-5 in lower precision), and in float32 its metric within 1e-3."""
        layers = sorted({layer for layer, _ in receivers})
        got = self.receiver_final(cache, receivers, components, every, P, end,
                                  {layer: self.clean_at(cache, layer, P)[None] for layer in layers})[0]  # fmt: skip
        want = self.clean_at(cache, self.n_layers, end.to(P.device)[:, None])[:, 0]
        rel = float(((got - want).abs().amax(-1) / want.abs().amax(-1).clamp_min(1e-30)).max())
        exact = self.dtype == torch.float32
        err = float((metric(got[None])[0] - cache.clean_metric.to(got.device)).abs().max()) if exact else 0.0
        if rel > (1e-4 if exact else 2**-5) or err > 1e-3 * max(1.0, float(cache.clean_metric.abs().max())):
            raise WorkbenchError(
                f"fast path patching cannot replay this model's attention (off by {max(err, rel):.3g}); "
                "use interp.circuits.path_reference.path_patch_reference instead"
            )
