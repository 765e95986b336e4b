"""From one forward+backward's gradients at the projections to the gradient at every input's own copy
of the residual stream (interp.circuits.attribute's EAP and EAP-IG contract it with the writers'
differences), with the block's norm pulled back analytically, and the plain autograd version tests
hold it to."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from einops import einsum
from torch import Tensor

from interp import hooks
from interp.bridge import unwrapped
from interp.circuits.types import Graph
from interp.circuits.weights import stacked_qkv
from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class GradientPass:
    """One forward+backward of s stacked steps: the gradients at each projection's output (`grad`)
    and the outputs themselves (`value`), the residual streams the norms read, the logits at END."""

    grad: dict[str, Tensor]
    value: dict[str, Tensor]
    resid: dict[str, Tensor]
    end: Tensor  # [step batch vocab]
    steps: int


class Pullback:
    """From one pass's gradients at the projections to the gradient at every input's own copy of
    the residual stream, summed over the pass's stacked steps: [reader, batch*pos, d_model] per
    layer and input kind, with the reader columns and the writer prefix it is contracted with.

    A layer's q, k and v gradients g_r (per query / KV head r) are carried back through W_r and the
    norm analytically. With x the residual stream, inv = 1/rms (RMSNorm; 1/std of the centred x for
    LayerNorm), xhat = x inv, w the norm's weight and u_r = w * (W_r g_r) the cotangent at xhat,
    the norm's vector-Jacobian product is inv (u_r - mean(u_r) - xhat mean(u_r xhat)) (RMSNorm
    without the mean(u_r) term). Summed over the steps s this is

        W'_r (sum_s inv_s g_r,s) - [LN] (sum_s inv_s g_r,s) . m_r - sum_s inv_s dot_r,s xhat_s

    with W'_r = w * W_r folded once per call, m_r = W_r^T w / d_model, and dot_r = mean(u_r xhat)
    = g_r . (h_r - c_r) / d_model read off the projection's own output h_r (its constant part c_r,
    the biases, taken away): one contraction with W' per layer on the prompt batch instead of one
    per step, and no [step, batch, pos, reader, d_model] tensor. An MLP's input is the same with W
    the identity. `reference` is the plain autograd version (tests hold the two together)."""

    def __init__(self, model: Model, graph: Graph):
        info, cfg = model.info, model.bridge.cfg
        self.model, self.graph, self.d = model, graph, info.d_model
        self.norm = None if info.normalization is None else ("LN" if info.normalization.startswith("LN") else "RMS")
        self.where: dict[tuple[int | None, str], tuple[slice, int]] = {}
        self.attn, self.mlp = [], []
        for layer in range(info.n_layers):
            block = model.bridge.blocks[layer]
            idx = torch.cat([graph.layer_readers(layer, k) for k in "qkv"])
            first, r = int(idx[0]), len(idx)
            if not torch.equal(idx, torch.arange(first, first + r)):
                raise WorkbenchError("the graph's q, k and v inputs of a layer are not consecutive")  # a graph.py change
            self.where[(layer, "attn")] = (slice(first, first + r), graph.n_writers_before(graph.readers[first]))
            a = block.attn
            Wc, bias = stacked_qkv(a)
            Wc = Wc.detach().float()  # [reader d_model d_head]
            w, b, eps = _norm_form(block.ln1, self.norm, cfg, Wc.device)
            c = bias.detach().float() if bias is not None else torch.zeros_like(Wc[:, 0])
            if b is not None:
                c = c + einsum(b, Wc, "d, r d e -> r e")
            m = einsum(w, Wc, "d, r d e -> r e") / self.d if self.norm == "LN" else None
            Wt = (Wc * w[None, :, None]).transpose(1, 2).contiguous().to(a.W_Q.dtype)  # [reader d_head d_model]
            self.attn.append((Wt, c if bool(c.any()) else None, m, eps))
            if graph.has_mlp:
                self.where[(layer, "mlp")] = (slice(first + r, first + r + 1), graph.n_writers_before(graph.readers[first + r]))
                self.mlp.append(_norm_form(block.ln2, self.norm, cfg, Wc.device))
        R = len(graph.readers)
        self.where[(None, "logits")] = (slice(R - 1, R), len(graph.writers))

    def pullback(self, run: GradientPass):
        """`gradients`, once per model first held to `reference` on a real pass: a norm or bias the
        analytic form misreads (another parametrisation) falls back to the reference, with a warning."""
        memo, key = self.model.memo, "analytic norm pull-back"
        if key not in memo:
            fast, slow = list(self.gradients(run)), list(self.reference(run))
            tol = 1e-3 if self.model.dtype == torch.float32 else 5e-2
            memo[key] = all(float((f[3] - r[3]).detach().norm()) <= tol * float(r[3].detach().norm()) + 1e-12
                            for f, r in zip(fast, slow))
            if not memo[key]:
                warnings.warn(f"{self.model.info.name}: the analytic norm pull-back disagrees with autograd; "
                              "edge attribution takes the slower autograd path", stacklevel=3)  # fmt: skip
            return iter(fast if memo[key] else slow)
        return self.gradients(run) if memo[key] else self.reference(run)

    def _stats(self, x: Tensor, eps: float) -> tuple[Tensor | None, Tensor]:
        """(inv [rows pos], xhat [rows pos d_model]) in float32; (None, x) without a norm."""
        if self.norm is None:
            return None, x.float()
        xf = x.float()
        if self.norm == "LN":
            xf = xf - xf.mean(-1, keepdim=True)
        inv = (xf.square().mean(-1) + eps).rsqrt()
        return inv, xf * inv[..., None]  # not in place: x.float() may be the pass's own residual stream

    def gradients(self, run: GradientPass):
        """(key, reader columns, writer prefix, gradient [reader, batch*pos, d_model]) per input group."""
        s, d = run.steps, self.d
        for layer in range(len(self.attn)):
            Wt, c, m, eps = self.attn[layer]
            inv, xhat = self._stats(run.resid[hooks.name("resid_pre", layer)], eps)
            names = [hooks.name(k, layer) for k in "qkv"]
            g = torch.cat([run.grad[n] for n in names], dim=2).float()  # [rows pos reader d_head]
            A = g if inv is None else g * inv[:, :, None, None]
            A = A.view(s, -1, *A.shape[2:]).sum(0)  # [batch*pos reader d_head]
            G = torch.bmm(A.transpose(0, 1).to(Wt.dtype), Wt).float()  # [reader batch*pos d_model]
            if inv is not None:
                dot = (g * torch.cat([run.value[n] for n in names], dim=2)).sum(-1)
                if c is not None:
                    dot -= einsum(g, c, "n p r e, r e -> n p r")
                F = (dot * (inv / d)[..., None]).view(s, -1, dot.shape[-1])
                G -= einsum(F, xhat.view(s, -1, d), "s n r, s n d -> r n d")
                if m is not None:
                    G -= einsum(A, m, "n r e, r e -> r n")[..., None]
            yield ((layer, "attn"), *self.where[(layer, "attn")], G)
            if self.mlp:
                w, b, eps = self.mlp[layer]
                inv, xhat = self._stats(run.resid[hooks.name("resid_mid", layer)], eps)
                name = hooks.name("mlp_normed", layer)
                g = run.grad[name].float()
                A = g if inv is None else g * inv[..., None]
                G = A.view(s, -1, d).sum(0) * w  # [batch*pos d_model]
                if inv is not None:
                    dot = (g * run.value[name]).sum(-1)
                    if b is not None:
                        dot -= g @ b
                    if self.norm == "LN":
                        G -= G.mean(-1, keepdim=True)
                    F = (dot * inv / d).view(s, -1, 1)
                    G -= (F * xhat.view(s, -1, d)).sum(0)
                yield ((layer, "mlp"), *self.where[(layer, "mlp")], G[None])
        yield ((None, "logits"), *self.where[(None, "logits")], run.grad[hooks.name("final_in")].float().view(s, -1, d).sum(0)[None])

    def reference(self, run: GradientPass):
        """`gradients` the plain way: each step's cotangents through W_Q[h] (W_K[g], W_V[g]) and
        autograd through the block's own norm module, row by row, then summed over the steps."""
        s, d = run.steps, self.d
        for layer in range(len(self.attn)):
            block = self.model.bridge.blocks[layer]
            a = block.attn
            cot = [einsum(run.grad[hooks.name(k, layer)], W, "b p h e, h d e -> b p h d")
                   for k, W in (("q", a.W_Q), ("k", a.W_K), ("v", a.W_V))]  # fmt: skip
            back = _norm_vjp(block.ln1, run.resid[hooks.name("resid_pre", layer)], torch.cat(cot, dim=2))
            G = back.reshape(s, -1, back.shape[2], d).sum(0).transpose(0, 1)
            yield ((layer, "attn"), *self.where[(layer, "attn")], G)
            if self.mlp:
                g = run.grad[hooks.name("mlp_normed", layer)][:, :, None]
                back = _norm_vjp(block.ln2, run.resid[hooks.name("resid_mid", layer)], g)[:, :, 0]
                yield ((layer, "mlp"), *self.where[(layer, "mlp")], back.reshape(s, -1, d).sum(0)[None])
        yield ((None, "logits"), *self.where[(None, "logits")], run.grad[hooks.name("final_in")].float().view(s, -1, d).sum(0)[None])


def _norm_form(norm, kind: str | None, cfg, device) -> tuple[Tensor, Tensor | None, float]:
    """(weight [d_model], bias or None, eps) of a block's norm, in float32 (weight 1 without one)."""
    mod = unwrapped(norm)
    pick = lambda *names: next((getattr(mod, n) for n in names if getattr(mod, n, None) is not None), None)  # noqa: E731
    w, b = pick("weight", "w"), pick("bias", "b")
    eps = pick("eps", "variance_epsilon")
    eps = float(eps if eps is not None else getattr(cfg, "eps", 1e-5))
    d = cfg.d_model
    w = torch.ones(d, device=device) if w is None or kind is None else w.detach().float()
    b = None if b is None or kind != "LN" or not bool(b.detach().any()) else b.detach().float()
    return w, b, eps


def _norm_vjp(norm, x: Tensor, cot: Tensor) -> Tensor:
    """cot [batch pos r d] pulled back through `norm` at x [batch pos d], for each of the r rows."""
    with torch.enable_grad():
        rep = x[:, :, None].expand(-1, -1, cot.shape[2], -1).detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(norm(rep), rep, cot.to(rep.dtype))
    return g.float()
