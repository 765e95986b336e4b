"""The one place that touches TransformerLens internals, behind a version check.

Everything else in the workbench uses the bridge's public surface: `run_with_hooks`, the classic
hook names (interp.hooks), `blocks[l].attn.W_Q` and friends, `ln1`/`ln2`/`mlp`, `ln_final`,
`W_U`/`b_U`, `original_model`. What that surface does not offer lives here, each piece written
against the TransformerLens release range in `SUPPORTED`:

- `check_version()`: refuse another TransformerLens with a one-line error naming the range (a
  private attribute that moved would otherwise give a wrong number, not an error);
- `split_inputs(model)` / `supports_split(model)`: the bridge's per-input residual copies
  (`hook_q_input`, `hook_k_input`, `hook_v_input`, `hook_mlp_in`) that the plain references edit;
- `build_native(...)`: a bridge around TransformerLens's native model (in-house models), built by
  TransformerLens's private bridge builder;
- `native_parameters(bridge)`, `native_attention_scale(bridge)`, `native_head_bias(bridge)`: the
  native model's weights under their plain names, as the fast training forward reads them;
- `native_rotary(bridge)`: the native model's RoPE tables (it shows no hook_cos/hook_sin/hook_rot_k);
- `unwrapped(component)`: the module a bridge component wraps (a norm's weight and eps);
- `fast_norm(norm)`: a norm's own module where the bridge's output is that module's, bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import torch

from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model

SUPPORTED = ((4, 3), (4, 4))  # TransformerLens releases >= 4.3 and < 4.4 (what every internal here was read against)
_WRAPPED = "_original_component"  # how a bridge component names the module it wraps, in parameter names


def _release(text: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


@cache
def installed() -> str:
    try:
        return version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - the package is a dependency
        raise WorkbenchError("TransformerLens is not installed; run `make` (or pip install 'transformer-lens>=4.3,<4.4')") from None


def check_version(found: str | None = None) -> None:
    """Refuse a TransformerLens outside `SUPPORTED` (one line, naming the range)."""
    found = found or installed()
    lo, hi = SUPPORTED
    if not lo <= _release(found) < hi:
        raise WorkbenchError(
            f"TransformerLens {found} is installed; the workbench supports >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}: "
            f"pip install 'transformer-lens>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'"
        )


# -- per-input residual copies --------------------------------------------------------------------


def supports_split(model: Model) -> bool:
    """Whether the bridge can fork a per-input residual copy (TL 4.3's HF bridges can; the native
    bridge of in-house models cannot)."""
    check_version()
    b, cfg = model.bridge, model.bridge.cfg
    saved = bool(cfg.use_split_qkv_input)
    try:
        b.set_use_split_qkv_input(True)
        return True
    except NotImplementedError:
        return False
    finally:
        try:
            b.set_use_split_qkv_input(saved)
        except NotImplementedError:
            pass


@contextmanager
def split_inputs(model: Model):
    """Inside the block, every attention input has its own copy of the residual stream (one per query
    head at `attn.hook_q_input`, one per KV head at `hook_k_input`/`hook_v_input`) and the MLP its own
    (`hook_mlp_in`); the caller's flags are restored after, also on error."""
    if not supports_split(model):
        raise WorkbenchError(f"{model.info.name}'s bridge cannot give each attention input its own copy; "
                             "use the batched engines (they do not need it)")  # fmt: skip
    b, cfg = model.bridge, model.bridge.cfg
    saved = (bool(cfg.use_split_qkv_input), bool(cfg.use_hook_mlp_in), bool(getattr(cfg, "use_attn_in", False)))
    try:
        if saved[2]:
            b.set_use_attn_in(False)
        b.set_use_split_qkv_input(True)
        if not model.info.attn_only:
            b.set_use_hook_mlp_in(True)
        yield
    finally:
        b.set_use_split_qkv_input(saved[0])
        if not model.info.attn_only:
            b.set_use_hook_mlp_in(saved[1])
        if saved[2]:
            b.set_use_attn_in(True)


# -- the native model (in-house checkpoints) ---------------------------------------------------------


def native_model(cfg):
    """TransformerLens's native model for a bridge config, initialised as TransformerLens does."""
    check_version()
    from transformer_lens.model_bridge.sources.native.init import initialize_native_model
    from transformer_lens.model_bridge.sources.native.model import NativeModel

    native = NativeModel(cfg)
    initialize_native_model(native, native.cfg)
    return native


def native_attention_class():
    """The native model's attention module class (subclassed for ALiBi)."""
    check_version()
    from transformer_lens.model_bridge.sources.native.model import NativeAttention

    return NativeAttention


def build_native(native, tokenizer, dtype=None, device=None):
    """A TransformerBridge around a native model (TransformerLens's private bridge builder)."""
    check_version()
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    return build_bridge_from_module(native, architecture="TransformerLensNative", tl_config=native.cfg,
                                    tokenizer=tokenizer, dtype=dtype, device=device, model_name="inhouse")  # fmt: skip


def native_parameters(bridge) -> dict[str, torch.nn.Parameter]:
    """The bridged native model's parameters under its plain names (e.g. 'layers.0.attn.q.weight')."""
    return {n.replace(f".{_WRAPPED}", ""): p for n, p in bridge.original_model.named_parameters()}


def plain_state_dict(bridge) -> dict[str, torch.Tensor]:
    """The wrapped model's state under its own module names (e.g. HF's 'model.layers.0.self_attn.k_proj.weight');
    the bridge's aliases of the same tensors come out under other names, which a caller filters by the keys it
    expects."""
    return {n.replace(f".{_WRAPPED}", ""): t for n, t in bridge.original_model.state_dict().items()}


def native_attention_scale(bridge) -> float:
    """What the native attention multiplies its scores by."""
    check_version()
    return 1.0 / float(getattr(bridge.original_model.layers[0].attn, _WRAPPED).scale)


def native_head_bias(bridge) -> torch.Tensor | None:
    """The native unembedding's bias buffer, or None."""
    return dict(bridge.original_model.named_buffers()).get(f"head.{_WRAPPED}.bias")


def native_rotary(bridge) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(cos, sin [n_ctx, rotary_dim], rotary_dim) of TransformerLens's native model with RoPE, whose
    pairs are adjacent (dims 2i and 2i+1 rotate together); None for any other bridge."""
    rot = getattr(getattr(bridge, "original_model", None), "rotary", None)
    if rot is None or not hasattr(rot, "cos_cached"):
        return None
    check_version()
    return rot.cos_cached, rot.sin_cached, int(rot.rotary_dim)


def unwrapped(component):
    """The module a bridge component wraps (itself when it wraps none)."""
    return getattr(component, "original_component", component)


def fast_norm(norm):
    """The module to call for `norm`'s output when no hook edits it: the wrapped module itself where the
    bridge returns that module's own output (its native-autograd path: RMSNorm bridges), which skips
    the bridge's hook_scale computed on the side (several times the norm's cost on small tensors);
    the bridge's wrapper elsewhere (e.g. GPT-2's LayerNorm bridge recomputes the norm itself, which
    differs from the wrapped module's at float rounding)."""
    inner = getattr(norm, "original_component", None)
    native = getattr(norm, "use_native_layernorm_autograd", False) or getattr(getattr(norm, "config", None),
                                                                           "layer_norm_folding", False)
    return inner if inner is not None and native else norm
