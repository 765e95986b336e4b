"""One prompt's local replacement model: transcoders for every MLP, attention and norms frozen.

From one real run of the prompt we keep what is nonlinear, frozen at its value:

    attention patterns A[layer, head, query, key]
    normalisation scales s (the LayerNorm / RMSNorm denominators) of ln1, ln2 and the final norm
    the transcoders' active features and their activations (which latents fire and how much)
    error nodes: the real MLP output minus the transcoder's output, per layer and position

What is left is affine in the residual stream. With r_0 = the token embeddings (plus positional
embeddings where the model has them), every layer is

    x1    = N1(r)          N(x) = (x - mean(x) [LayerNorm only]) / s * w (+ b)
    r_mid = r + sum_h A_h (x1 W_V[kv(h)] + b_V) W_O[h] + b_O        (GQA: head h reads kv h // group)
    x2    = N2(r_mid)      what the transcoder reads (the MLP's own input)
    r'    = r_mid + [sum_f a_f W_dec[f]] + b_dec + x2 W_skip^T + error

and the logits are N_final(r_L) W_U + b_U. Run on the real inputs it reproduces the real logits
(`forward`); its transpose (`backward`) carries gradients from targets to sources, one
vector-Jacobian product per target row, batched. GQA is served natively: query heads are grouped by
the kv head they read (an einsum over [kv, member] axes), the kv weights are never copied per head.
`Transposed` is the same transpose for speed: the frozen norms folded into the weights and patterns,
gradients laid out [pos, row, d_model] so that every step is one in-place matrix product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.features.dictionary import Dictionary

_CENTRED = {"LN": True, "LNPre": True, "RMS": False, "RMSPre": False}


@dataclass
class Norm:
    """A norm's frozen form: y = (x - mean(x) if centre) / scale * weight (+ bias)."""

    centre: bool  # LayerNorm subtracts the mean first; RMSNorm does not
    weight: Float[Tensor, " d_model"] | None
    bias: Float[Tensor, " d_model"] | None

    def apply(self, x: Float[Tensor, "... pos d_model"], scale: Float[Tensor, " pos"], bias: bool = True) -> Tensor:
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        y = x / scale[:, None]
        if self.weight is not None:
            y = y * self.weight
        if bias and self.bias is not None:
            y = y + self.bias
        return y

    def transpose(self, g: Float[Tensor, "... pos d_model"], scale: Float[Tensor, " pos"]) -> Tensor:
        """The gradient at the norm's input for a gradient g at its output (scale frozen)."""
        if self.weight is not None:
            g = g * self.weight
        g = g / scale[:, None]
        return g - g.mean(-1, keepdim=True) if self.centre else g


def _norm(component, kind: str | None) -> Norm:
    from interp.bridge import unwrapped

    if kind not in _CENTRED:
        raise WorkbenchError(f"the attribution graph needs LayerNorm or RMSNorm, not normalization {kind!r}")
    m = unwrapped(component)
    w, b = getattr(m, "weight", None), getattr(m, "bias", None)
    return Norm(_CENTRED[kind], None if w is None else w.detach().float(), None if b is None else b.detach().float())


@dataclass
class Weights:
    """What the frozen model reads of a model's weights (float32, views where possible)."""

    W_V: list[Float[Tensor, "kv d_model d_head"]]
    b_V: list[Float[Tensor, "kv d_head"] | None]
    W_O: list[Float[Tensor, "head d_head d_model"]]
    b_O: list[Float[Tensor, " d_model"] | None]
    ln1: list[Norm]
    ln2: list[Norm]
    ln_final: Norm
    W_U: Float[Tensor, "d_model vocab"]
    b_U: Float[Tensor, " vocab"] | None

    @classmethod
    def of(cls, model) -> Weights:
        b, cfg, info = model.bridge, model.bridge.cfg, model.info
        if info.attn_only or info.d_mlp is None:
            raise WorkbenchError(f"{info.name} has no MLPs; an attribution graph replaces MLPs by transcoders")
        if getattr(cfg, "parallel_attn_mlp", False):
            raise WorkbenchError(
                f"{info.name} runs attention and MLP in parallel; the replacement model needs sequential blocks"
            )
        kind = info.normalization
        f = lambda t: None if t is None else t.detach().float()
        blocks = list(b.blocks)
        return cls([f(blk.attn.W_V) for blk in blocks], [f(blk.attn.b_V) for blk in blocks],
                   [f(blk.attn.W_O) for blk in blocks], [f(blk.attn.b_O) for blk in blocks],
                   [_norm(blk.ln1, kind) for blk in blocks], [_norm(blk.ln2, kind) for blk in blocks],
                   _norm(b.ln_final, kind), f(b.W_U), f(getattr(b, "b_U", None)))  # fmt: skip


@dataclass
class LocalReplacement:
    """The frozen linear model of one prompt (see the module docstring)."""

    tokens: Int[Tensor, " pos"]
    weights: Weights
    transcoders: Dictionary  # one per layer, in layer order
    inputs: Float[Tensor, "pos d_model"]  # r_0: what the token nodes write (embedding + positional)
    patterns: Float[Tensor, "layer head pos pos"]
    scales: Float[Tensor, "3 layer pos"]  # ln1, ln2 denominators per layer (index 2: the final norm's in [2, 0])
    mlp_in: Float[Tensor, "layer pos d_model"]  # the transcoders' inputs in the real run
    mlp_out: Float[Tensor, "layer pos d_model"]  # the real MLP outputs
    pre: Float[Tensor, "layer pos d_sae"]  # the transcoders' pre-activations (b_enc included)
    acts: Float[Tensor, "layer pos d_sae"]  # their activations (TopK / ReLU / JumpReLU applied)
    decoded: Float[Tensor, "layer pos d_model"]  # sum_f a_f W_dec[f] (no b_dec, no skip)
    errors: Float[Tensor, "layer pos d_model"]  # real MLP output - transcoder output
    logits: Float[Tensor, "pos vocab"]  # the real logits

    @property
    def n_layers(self) -> int:
        return self.patterns.shape[0]

    @property
    def n_pos(self) -> int:
        return self.patterns.shape[-1]

    @property
    def final_scale(self) -> Float[Tensor, " pos"]:
        return self.scales[2, 0]

    # -- pieces ------------------------------------------------------------------------------------------
    def _attention(self, layer: int, x1: Float[Tensor, "batch pos d_model"], bias: bool) -> Tensor:
        W_V, W_O = self.weights.W_V[layer], self.weights.W_O[layer]
        kv, H = W_V.shape[0], W_O.shape[0]
        v = torch.einsum("bkd,gde->bkge", x1, W_V)
        if bias and self.weights.b_V[layer] is not None:
            v = v + self.weights.b_V[layer]
        A = self.patterns[layer].view(kv, H // kv, self.n_pos, self.n_pos)  # [kv member query key]
        z = torch.einsum("gmqk,bkge->bqgme", A, v)
        out = torch.einsum("bqgme,gmed->bqd", z, W_O.view(kv, H // kv, *W_O.shape[1:]))
        if bias and self.weights.b_O[layer] is not None:
            out = out + self.weights.b_O[layer]
        return out

    def _attention_transpose(self, layer: int, g: Float[Tensor, "batch pos d_model"]) -> Tensor:
        W_V, W_O = self.weights.W_V[layer], self.weights.W_O[layer]
        kv, H = W_V.shape[0], W_O.shape[0]
        gz = torch.einsum("bqd,gmed->bqgme", g, W_O.view(kv, H // kv, *W_O.shape[1:]))
        A = self.patterns[layer].view(kv, H // kv, self.n_pos, self.n_pos)
        gv = torch.einsum("gmqk,bqgme->bkge", A, gz)
        return torch.einsum("bkge,gde->bkd", gv, W_V)

    def skip(self, layer: int) -> Float[Tensor, "d_model d_model"] | None:
        """W_skip [d_out, d_in] of `layer`'s transcoder, or None."""
        W = self.transcoders.W_skip
        return None if W is None else W[layer].detach().float()

    # -- the frozen model ------------------------------------------------------------------------------
    def forward(self, embed: Float[Tensor, "batch pos d_model"], writes: Float[Tensor, "batch layer pos d_model"],
                bias: bool = True) -> tuple[Tensor, Tensor]:  # fmt: skip
        """(x2 [batch layer pos d_model]: what each transcoder reads, x_final [batch pos d_model]: the final
        norm's output) of the frozen model fed `embed` at r_0 and `writes` at each MLP's output (beside
        the skip connection, which the model computes). `bias`: include every bias (norms', b_V, b_O,
        b_dec); without, the map is linear."""
        r, seen = embed.float(), []
        for layer in range(self.n_layers):
            r, x2 = self.block(layer, r, writes[:, layer], bias)
            seen.append(x2)
        return torch.stack(seen, 1), self.weights.ln_final.apply(r, self.final_scale, bias)

    def block(self, layer: int, r: Float[Tensor, "batch pos d_model"], write: Float[Tensor, "batch pos d_model"],
              bias: bool = True) -> tuple[Tensor, Tensor]:  # fmt: skip
        """One frozen block: (the residual stream after `layer`, x2: what its transcoder read), with `write`
        at the MLP's output (beside the skip connection and, with `bias`, b_dec)."""
        w = self.weights
        x1 = w.ln1[layer].apply(r, self.scales[0, layer], bias)
        r = r + self._attention(layer, x1, bias)
        x2 = w.ln2[layer].apply(r, self.scales[1, layer], bias)
        r = r + write.float()
        S = self.skip(layer)
        if S is not None:
            r = r + x2 @ S.T
        if bias:
            r = r + self.transcoders.b_dec[layer].detach().float()
        return r, x2

    def unembed(self, x_final: Float[Tensor, "... d_model"], bias: bool = True) -> Float[Tensor, "... vocab"]:
        out = x_final @ self.weights.W_U
        return out + self.weights.b_U if bias and self.weights.b_U is not None else out

    @cached_property
    def transposed(self) -> Transposed:
        return Transposed.of(self)

    def backward(self, final: Float[Tensor, "batch pos d_model"], inject: Callable[[int], Tensor | None],
                 read: Callable[[int, Tensor], None]) -> Float[Tensor, "batch pos d_model"]:  # fmt: skip
        """The transpose of the linear part of `forward`, for a batch of target rows at once.

        `final`: gradients at the final norm's output (zeros for rows that are not logits);
        `inject(layer)`: gradients at what `layer`'s transcoder reads (x2), or None; `read(layer, G)`:
        called with the gradient at layer's MLP output (= at r_{layer+1}) before layer's own targets
        enter. Returns the gradient at r_0."""
        w = self.weights
        G = w.ln_final.transpose(final.float(), self.final_scale)
        for layer in reversed(range(self.n_layers)):
            read(layer, G)
            gx2 = inject(layer)
            S = self.skip(layer)
            if S is not None:
                gx2 = G @ S if gx2 is None else gx2 + G @ S
            if gx2 is not None:
                G = G + w.ln2[layer].transpose(gx2, self.scales[1, layer])
            G = G + w.ln1[layer].transpose(self._attention_transpose(layer, G), self.scales[0, layer])
        return G


@dataclass
class Transposed:
    """`LocalReplacement.backward`'s linear maps with the frozen norms folded in, for gradients G
    [pos, row, d_model] (position-major: a layer's work is a few big matrix products on G viewed
    [pos * row, d_model], in place, with no copy of G). With C the centring of a LayerNorm (identity
    for RMSNorm), ln^T(g) = C (w * g) / s: w and C go into the matrices, 1/s into the patterns (ln1)
    or one multiply per position (ln2)."""

    W_O: list[Float[Tensor, "head d_model d_head"]]  # W_O[h]^T
    W_V: list[Float[Tensor, "kv d_head d_model"]]  # (W_V[g] w1)^T C
    patterns: Float[Tensor, "layer kv key member query"]  # A[g*m, q, k] / s1[k]
    skip: list[Float[Tensor, "d_model d_model"]] | None  # W_skip w2 C
    inv_s2: Float[Tensor, "layer pos"]
    causal: bool  # every pattern is lower-triangular: rows of target position p need positions <= p only

    @classmethod
    def of(cls, R: LocalReplacement) -> Transposed:
        w, L = R.weights, R.n_layers
        kv, H = w.W_V[0].shape[0], w.W_O[0].shape[0]

        def fold(M: Tensor, norm: Norm) -> Tensor:  # M [..., d_model] -> C (w * M) along the last axis
            M = M * norm.weight if norm.weight is not None else M.clone()
            return M - M.mean(-1, keepdim=True) if norm.centre else M

        W_V = [fold(w.W_V[la].transpose(1, 2), w.ln1[la]).contiguous() for la in range(L)]
        A = R.patterns / R.scales[0][:, None, None, :]  # [layer head query key], divided by s1[key]
        A = A.view(L, kv, H // kv, R.n_pos, R.n_pos).permute(0, 1, 4, 2, 3).contiguous()
        skip = None if R.transcoders.W_skip is None else [fold(R.skip(la), w.ln2[la]).contiguous() for la in range(L)]
        causal = not R.patterns.triu(1).any()
        return cls([W.transpose(1, 2).contiguous() for W in w.W_O], W_V, A, skip, 1 / R.scales[1], causal)

    def truncated(self, p: int) -> Float[Tensor, "layer kv key member_query"]:
        """The patterns of the first p positions, [layer, kv, key, (member, query)] for one batched product."""
        A = self.patterns[:, :, :p, :, :p]
        return A.reshape(*A.shape[:3], -1)

    def skip_(self, layer: int, G: Float[Tensor, "pos row d_model"], tmp: Tensor) -> None:
        """G += ln2^T(G W_skip), in place (G: the gradient at the MLP's output; after: at r_mid)."""
        if self.skip is None or G.numel() == 0:
            return
        p, n, d = G.shape
        out = tmp[: G.numel()].view(p, n, d)
        torch.mm(G.view(-1, d), self.skip[layer], out=out.view(-1, d))
        G.addcmul_(out, self.inv_s2[layer, :p, None, None])

    def attention_(self, layer: int, G: Float[Tensor, "pos row d_model"], A: Tensor, gz: Tensor, gv: Tensor) -> None:
        """G += ln1^T(attention^T G), in place (G: the gradient at r_mid; after: at the block's input r).
        `A`: `truncated(p)[layer]`; gz, gv: scratch of at least head * pos * row * d_head floats."""
        if G.numel() == 0:
            return
        p, n, d = G.shape
        W_O, W_V = self.W_O[layer], self.W_V[layer]
        (H, _, e), kv = W_O.shape, W_V.shape[0]
        Gf = G.view(-1, d)
        z = gz[: H * p * n * e].view(H, p * n, e)  # [kv, member, query, row, d_head]
        for h in range(H):
            torch.mm(Gf, W_O[h], out=z[h])
        v = gv[: kv * p * n * e].view(kv, p, n * e)  # [kv, key, row, d_head]
        torch.bmm(A, z.view(kv, (H // kv) * p, n * e), out=v)
        for g in range(kv):
            Gf.addmm_(v[g].view(p * n, e), W_V[g])

    def entering(self, layer: int, v: Float[Tensor, "row d_model"], pos: Int[Tensor, " row"], A: Tensor
                 ) -> Float[Tensor, "row pos d_model"]:  # fmt: skip
        """The gradient at the block's input r of rows whose gradient at r_mid is `v` at position `pos`
        alone (rows entering at this layer): v + ln1^T(attention^T v). Each head's OV image of v is
        computed at the row's one position, then spread over the keys by the head's pattern column.
        `A`: `truncated(p)[layer]`."""
        W_O, W_V = self.W_O[layer], self.W_V[layer]
        (H, d, e), kv, p, r = W_O.shape, W_V.shape[0], A.shape[1], len(pos)
        z = torch.einsum("rd,hde->rhe", v, W_O).view(r, kv, H // kv, e)
        u = torch.einsum("rgme,ged->rgmd", z, W_V).reshape(r, H, d)  # [row head d_model]
        a = A.view(kv, p, H // kv, p)[..., pos].permute(3, 1, 0, 2).reshape(r, p, H)  # [row key head]
        out = torch.bmm(a, u)
        out[torch.arange(r), pos] += v
        return out


def check_transcoders(model, transcoders: Dictionary) -> None:
    """One-line errors unless `transcoders` are MLP transcoders of `model` covering every layer."""
    from interp.features.formats import check_for_model

    check_for_model(transcoders, model, site="mlp")
    missing = sorted(set(range(model.info.n_layers)) - set(transcoders.layers))
    if missing:
        raise WorkbenchError(f"the transcoders have no layer {', '.join(map(str, missing))}; an attribution graph "
                             f"replaces every MLP: give transcoders for all {model.info.n_layers} layers")  # fmt: skip


def ordered(transcoders: Dictionary, n_layers: int) -> Dictionary:
    """The transcoders of layers 0..n_layers-1 in layer order (a view when they already are)."""
    if transcoders.layers == list(range(n_layers)):
        return transcoders
    order = [transcoders.index(la) for la in range(n_layers)]
    out = Dictionary.__new__(Dictionary)
    torch.nn.Module.__init__(out)
    from interp.features.dictionary import DictionaryConfig

    out.cfg = DictionaryConfig(**{**transcoders.cfg.to_dict(), "layers": list(range(n_layers))})
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "threshold"):
        t = getattr(transcoders, name)
        setattr(out, name, None if t is None else t.detach()[order])
    return out


def capture_names(n_layers: int) -> list[str]:
    """The real-run hooks a replacement reads."""
    per = ("resid_pre", "pattern", "mlp_normed", "mlp_out")
    names = [hooks.name(k, la) for la in range(n_layers) for k in per]
    names += [hooks.name(f"{ln}_scale", la) for la in range(n_layers) for ln in ("ln1", "ln2")]
    return names + [hooks.name("final_scale")]


@torch.no_grad()
def build(model, transcoders: Dictionary, tokens: Int[Tensor, " pos"]) -> LocalReplacement:
    """The local replacement model of one prompt (`tokens` 1-D), from one real run."""
    check_transcoders(model, transcoders)
    L = model.info.n_layers
    tc = ordered(transcoders, L)
    tokens = tokens.reshape(-1).to(model.device)
    names = capture_names(L)
    got: dict[str, Tensor] = {}

    def keeper(key: str):
        def keep(x: Tensor, hook=None):
            got[key] = x.detach()[0].float()

        return keep

    logits = model.run_with_hooks(tokens[None], fwd_hooks=[(n, keeper(n)) for n in names])[0].float()
    stack = lambda kind: torch.stack([got[hooks.name(kind, la)] for la in range(L)])
    scale = lambda ln: torch.stack([got[hooks.name(f"{ln}_scale", la)][:, 0] for la in range(L)])
    final = got[hooks.name("final_scale")][:, 0]
    scales = torch.stack([scale("ln1"), scale("ln2"), final.expand(L, -1)])
    mlp_in, mlp_out = stack("mlp_normed"), stack("mlp_out")
    tcf = tc.rows(0, L, detach=True)
    pre = tcf.pre_acts(mlp_in.to(tcf.W_enc.dtype)).float()
    acts = tcf.activate(pre.to(tcf.W_enc.dtype)).float()
    decoded = torch.bmm(acts, tcf.W_dec.float())
    recon = tcf.decode(acts.to(tcf.W_dec.dtype), mlp_in.to(tcf.W_dec.dtype)).float()
    return LocalReplacement(tokens.cpu(), Weights.of(model), tcf, got[hooks.name("resid_pre", 0)], stack("pattern"),
                            scales, mlp_in, mlp_out, pre, acts, decoded, mlp_out - recon, logits)  # fmt: skip
