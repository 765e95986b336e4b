"""Replaying pieces of a model's forward pass from its clean cache, batched over many variants.

Path patching only changes a few things and keeps the rest of the clean run. This module holds
the model's weights in TransformerLens layout and the pure tensor steps that fast path patching
is built from: a head's output, an MLP step, q/k/v projections with rotary, and causal
attention for a *window* of query positions against clean keys/values elsewhere. Every step
is checked against the bridge's own hooks by `Replay.check` (the fast path refuses to run when
the replay cannot reproduce the model), and tests compare it with the brute-force reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import WorkbenchError


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@dataclass
class Replay:
    """Weights and callables of one model, read once from its bridge."""

    bridge: object  # the TransformerBridge (ln/mlp submodules are called directly)
    n_layers: int  # layers
    n_heads: int  # query heads per layer
    n_kv: int  # key/value heads per layer (GQA: query head h reads kv head h // (n_heads // n_kv))
    scale: float  # attention scores are q.k * scale
    rotary: bool  # whether q/k are rotated (hook_cos/hook_sin are then cached)

    @classmethod
    def of(cls, model) -> Replay:
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
        )

    # -- weights -------------------------------------------------------------------------------
    def attn(self, layer: int):
        return self.bridge.blocks[layer].attn

    def kv_of(self, head: int) -> int:
        return head // (self.n_heads // self.n_kv)

    def cache_names(self, layer: int) -> list[str]:
        names = [f"blocks.{layer}.{h}" for h in ("hook_resid_pre", "hook_resid_mid", "hook_mlp_out", "attn.hook_z")]
        names += [f"blocks.{layer}.attn.hook_{x}" for x in ("q", "k", "v")]
        if self.rotary:
            names += [f"blocks.{layer}.attn.hook_{x}" for x in ("cos", "sin", "rot_k", "rot_q")]
        return names

    # -- pure steps ----------------------------------------------------------------------------
    def head_out(
        self, layer: int, heads: Int[Tensor, "n"], z: Float[Tensor, "n ... d_head"]
    ) -> Float[Tensor, "n ... d_model"]:
        """Each row's head output z @ W_O[head] (no bias: a difference of two outputs needs none)."""
        W_O = self.attn(layer).W_O[heads]  # [n, d_head, d_model]
        return torch.einsum("n...e,ned->n...d", z, W_O)

    def mlp(self, layer: int, resid_mid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        block = self.bridge.blocks[layer]
        return block.mlp(block.ln2(resid_mid))

    def project(
        self, layer: int, resid_pre: Float[Tensor, "... pos d_model"], which: str, normed: bool = False
    ) -> Float[Tensor, "... pos head d_head"]:
        """Un-rotated q (all query heads) or k/v (all kv heads) of a residual stream input
        (or of its ln1 output already, with normed=True)."""
        a = self.attn(layer)
        W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[which]
        x = resid_pre if normed else self.bridge.blocks[layer].ln1(resid_pre)
        out = torch.einsum("...pd,hde->...phe", x, W)
        return out if b is None else out + b

    def ln1(self, layer: int, resid_pre: Tensor) -> Tensor:
        return self.bridge.blocks[layer].ln1(resid_pre)

    def rotate(self, x: Float[Tensor, "... pos head d_head"], cos: Float[Tensor, "... pos d_head"], sin) -> Tensor:
        if not self.rotary:
            return x
        return x * cos.unsqueeze(-2) + rotate_half(x) * sin.unsqueeze(-2)

    def attend(
        self,
        q: Float[Tensor, "s batch win head d_head"],
        k_pre: Float[Tensor, "batch pos kv d_head"],
        v_pre: Float[Tensor, "batch pos kv d_head"],
        k_win: Float[Tensor, "s batch win kv d_head"],
        v_win: Float[Tensor, "s batch win kv d_head"],
        start: Int[Tensor, "batch"],
    ) -> Float[Tensor, "s batch win head d_head"]:
        """Causal attention for a window of consecutive query positions start..start+win-1:
        keys before `start` come from the clean run (shared by every variant s), keys in the
        window from the variant itself. No key tensor is copied per variant."""
        S, B, W, H, E = q.shape
        G = k_pre.shape[-2]
        qg = q.view(S, B, W, G, H // G, E)
        pre = torch.einsum("sbwgre,btge->sbgrwt", qg, k_pre) * self.scale
        before = torch.arange(k_pre.shape[1], device=q.device)[None, :] < start[:, None]  # [batch pos]
        pre = pre.masked_fill(~before[None, :, None, None, None, :], float("-inf"))
        win = torch.einsum("sbwgre,sbvge->sbgrwv", qg, k_win) * self.scale
        causal = torch.ones(W, W, dtype=torch.bool, device=q.device).tril()
        win = win.masked_fill(~causal, float("-inf"))
        pattern = torch.cat([pre, win], dim=-1).softmax(-1)
        p_pre, p_win = pattern.split([pre.shape[-1], W], dim=-1)
        z = torch.einsum("sbgrwt,btge->sbwgre", p_pre, v_pre) + torch.einsum("sbgrwv,sbvge->sbwgre", p_win, v_win)
        return z.reshape(S, B, W, H, E)

    def logit_diff(
        self, resid_final: Float[Tensor, "... d_model"], io: Int[Tensor, "..."], s: Int[Tensor, "..."]
    ) -> Tensor:
        """logit(io) - logit(s) from the final residual stream (final norm recomputed)."""
        x = self.bridge.ln_final(resid_final)
        W_U = self.bridge.W_U
        direction = W_U[:, io] - W_U[:, s]  # [d_model, ...]
        out = torch.einsum("...d,d...->...", x, direction)
        b_U = getattr(self.bridge, "b_U", None)
        return out if b_U is None else out + (b_U[io] - b_U[s])


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
