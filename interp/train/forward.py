"""A hook-free forward pass over an in-house bridge's own parameters, for fast training.

The TransformerBridge runs every submodule through hook wrappers -- right for analysis, costly
for training small models. `FastLM` holds the *same* Parameter objects as the bridge (so an
optimizer step on one is a step on the other) and computes the same function with plain torch:
fused scaled-dot-product attention (ALiBi as an additive mask, rotary in Llama's adjacent-pair
format, GQA by repeating key/value heads). tests/train/test_forward_data.py checks it against the
bridge's own forward for every preset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.bridge import native_attention_scale, native_head_bias, native_parameters
from interp.models.inhouse import NativeSpec, alibi_bias

_ACTS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def bridge_parameters(bridge) -> dict[str, nn.Parameter]:
    """The bridge's parameters under the native model's plain names (e.g. 'layers.0.attn.q.weight')."""
    return native_parameters(bridge)


def _rotate_half(x: Tensor) -> Tensor:
    rot = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1)
    return rot.flatten(-2)


class FastLM(nn.Module):
    """logits = FastLM(bridge, spec)(tokens), sharing the bridge's parameters."""

    def __init__(self, bridge, spec: NativeSpec):
        super().__init__()
        if spec.act_fn not in _ACTS and not spec.attn_only:
            raise ValueError(f"FastLM has no activation {spec.act_fn!r}")
        self.spec = spec
        self.eps = float(bridge.cfg.eps)
        native = bridge.original_model
        self.scale = native_attention_scale(bridge)
        self.p = nn.ParameterDict({k.replace(".", "__"): v for k, v in bridge_parameters(bridge).items()})
        head_bias = native_head_bias(bridge)
        self.register_buffer("head_bias", None if head_bias is None else head_bias.detach().clone(), persistent=False)
        if spec.positional == "rotary":
            rot = native.rotary
            self.register_buffer("cos", rot.cos_cached.detach().clone(), persistent=False)
            self.register_buffer("sin", rot.sin_cached.detach().clone(), persistent=False)
            self.rotary_dim = rot.rotary_dim
        if spec.positional == "alibi":
            seq = spec.n_ctx
            causal = torch.ones(seq, seq, dtype=torch.bool).triu(1)
            bias = alibi_bias(spec.n_heads, seq).masked_fill(causal, float("-inf"))
            self.register_buffer("alibi", bias, persistent=False)

    def w(self, name: str) -> Tensor:
        return self.p[name.replace(".", "__")]

    def _norm(self, x: Tensor, prefix: str) -> Tensor:
        kind = self.spec.normalization
        if kind == "LN":
            return F.layer_norm(x, (x.shape[-1],), self.w(f"{prefix}.weight"), self.w(f"{prefix}.bias"), self.eps)
        if kind == "RMS":
            x32 = x.float()
            return self.w(f"{prefix}.weight") * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return x

    def _rope(self, x: Float[Tensor, "batch head pos d_head"]) -> Tensor:
        seq, rd = x.shape[-2], self.rotary_dim
        cos, sin = self.cos[:seq].to(x.dtype), self.sin[:seq].to(x.dtype)
        x_rot, x_pass = x[..., :rd], x[..., rd:]
        x_rot = x_rot * cos + _rotate_half(x_rot) * sin
        return torch.cat([x_rot, x_pass], dim=-1) if x_pass.shape[-1] else x_rot

    def _attention(self, x: Float[Tensor, "batch pos d_model"], layer: int) -> Tensor:
        s, pre = self.spec, f"layers.{layer}.attn"
        batch, seq, _ = x.shape
        n_kv = s.n_kv_heads or s.n_heads

        def proj(name: str, heads: int) -> Tensor:
            out = F.linear(x, self.w(f"{pre}.{name}.weight"), self.w(f"{pre}.{name}.bias"))
            return out.view(batch, seq, heads, s.d_head).transpose(1, 2)

        q, k, v = proj("q", s.n_heads), proj("k", n_kv), proj("v", n_kv)
        if s.positional == "rotary":
            q, k = self._rope(q), self._rope(k)
        if n_kv != s.n_heads:
            k = k.repeat_interleave(s.n_heads // n_kv, dim=1)
            v = v.repeat_interleave(s.n_heads // n_kv, dim=1)
        if s.positional == "alibi":
            mask = self.alibi[:, :seq, :seq].to(q.dtype)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        z = z.transpose(1, 2).reshape(batch, seq, s.n_heads * s.d_head)
        return F.linear(z, self.w(f"{pre}.o.weight"), self.w(f"{pre}.o.bias"))

    def _mlp(self, x: Tensor, layer: int) -> Tensor:
        pre, act = f"layers.{layer}.mlp", _ACTS[self.spec.act_fn]
        if self.spec.gated_mlp:
            hidden = act(F.linear(x, self.w(f"{pre}.gate.weight"))) * F.linear(x, self.w(f"{pre}.in.weight"))
            return F.linear(hidden, self.w(f"{pre}.out.weight"))
        hidden = act(F.linear(x, self.w(f"{pre}.fc_in.weight"), self.w(f"{pre}.fc_in.bias")))
        return F.linear(hidden, self.w(f"{pre}.fc_out.weight"), self.w(f"{pre}.fc_out.bias"))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos vocab"]:
        x = F.embedding(tokens, self.w("tok_embed.weight"))
        if self.spec.positional == "standard":
            x = x + self.w("pos.weight")[: tokens.shape[1]]
        for layer in range(self.spec.n_layers):
            x = x + self._attention(self._norm(x, f"layers.{layer}.ln1"), layer)
            if not self.spec.attn_only:
                x = x + self._mlp(self._norm(x, f"layers.{layer}.ln2"), layer)
        x = self._norm(x, "ln_out")
        return F.linear(x, self.w("head.weight"), self.head_bias)


def lm_loss(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Mean next-token cross-entropy (float32 for stability under autocast)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
