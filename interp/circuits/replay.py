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
            raise WorkbenchError(f"{model.info.name} runs attention and MLP in parallel; path patching needs sequential blocks")
        if getattr(cfg, "attn_scores_soft_cap", -1) not in (-1, -1.0, None, 0):
            raise WorkbenchError(f"{model.info.name} soft-caps attention scores; fast path patching does not support it")
        scale = cfg.attn_scale if cfg.attn_scale and cfg.attn_scale > 0 else cfg.d_head**0.5
        return cls(
            b, cfg.n_layers, cfg.n_heads, model.info.n_kv_heads, 1.0 / scale if cfg.use_attn_scale else 1.0,
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
    def head_out(self, layer: int, heads: Int[Tensor, "n"], z: Float[Tensor, "n ... d_head"]) -> Float[Tensor, "n ... d_model"]:
        """Each row's head output z @ W_O[head] (no bias: a difference of two outputs needs none)."""
        W_O = self.attn(layer).W_O[heads]  # [n, d_head, d_model]
        return torch.einsum("n...e,ned->n...d", z, W_O)

    def mlp(self, layer: int, resid_mid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        block = self.bridge.blocks[layer]
        return block.mlp(block.ln2(resid_mid))

    def project(self, layer: int, resid_pre: Float[Tensor, "... pos d_model"], which: str) -> Float[Tensor, "... pos head d_head"]:
        """Un-rotated q (all query heads) or k/v (all kv heads) of a residual stream input."""
        a = self.attn(layer)
        W, b = {"q": (a.W_Q, a.b_Q), "k": (a.W_K, a.b_K), "v": (a.W_V, a.b_V)}[which]
        x = self.bridge.blocks[layer].ln1(resid_pre)
        out = torch.einsum("...pd,hde->...phe", x, W)
        return out if b is None else out + b

    def rotate(self, x: Float[Tensor, "... pos head d_head"], cos: Float[Tensor, "... pos d_head"], sin) -> Tensor:
        if not self.rotary:
            return x
        return x * cos.unsqueeze(-2) + rotate_half(x) * sin.unsqueeze(-2)

    def attend(
        self,
        q: Float[Tensor, "s batch win head d_head"],
        k: Float[Tensor, "s batch key kv d_head"],
        v: Float[Tensor, "s batch key kv d_head"],
        q_pos: Int[Tensor, "batch win"],
    ) -> Float[Tensor, "s batch win head d_head"]:
        """Causal attention of window queries at absolute positions `q_pos` over keys 0..key-1."""
        rep = q.shape[-2] // k.shape[-2]
        k = k.repeat_interleave(rep, dim=-2)
        v = v.repeat_interleave(rep, dim=-2)
        scores = torch.einsum("sbwhe,sbkhe->sbhwk", q, k) * self.scale
        key_pos = torch.arange(k.shape[2], device=q.device)
        allowed = key_pos[None, None, :] <= q_pos[:, :, None]  # [batch win key]
        scores = scores.masked_fill(~allowed[None, :, None], float("-inf"))
        pattern = scores.softmax(-1)
        return torch.einsum("sbhwk,sbkhe->sbwhe", pattern, v)

    def logit_diff(self, resid_final: Float[Tensor, "... d_model"], io: Int[Tensor, "..."], s: Int[Tensor, "..."]) -> Tensor:
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


def scatter_pos(full: Float[Tensor, "one batch pos ..."], idx: Int[Tensor, "batch win"], values: Tensor) -> Tensor:
    """[s, batch, pos+1, ...]: `full` with out[:, b, idx[b, w]] = values[:, b, w]. The extra last
    position is a dummy slot that invalid window entries point at; no real query attends to it."""
    S, B, T = values.shape[0], full.shape[1], full.shape[2]
    out = full.new_zeros(S, B, T + 1, *full.shape[3:])
    out[:, :, :T] = full
    view = idx.view(1, *idx.shape, *([1] * (values.dim() - 3))).expand(S, *idx.shape, *values.shape[3:])
    return out.scatter_(2, view, values)


def window(start: Int[Tensor, "batch"], end: Int[Tensor, "batch"], n_pos: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-prompt absolute positions start..end padded to a common width: (positions, the same
    clamped for gathers, the same with invalid entries sent to the dummy slot n_pos for scatters)."""
    width = int((end - start).max()) + 1
    pos = start[:, None] + torch.arange(width, device=start.device)[None]
    valid = pos <= end[:, None]
    return pos, pos.clamp(max=n_pos - 1), torch.where(valid, pos, torch.full_like(pos, n_pos))


