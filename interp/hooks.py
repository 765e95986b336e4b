"""Hook names, the one early exit from a forward pass, and capturing activations.

Names are TransformerLens's classic ones (`blocks.{layer}.attn.hook_z`, ...), which the 4.x
TransformerBridge keeps as aliases; `name("z", 3)` spells them through TL's `get_act_name`
where it has the name, so no module writes a hook name by hand.

Early exit: most analyses need the model only up to some layer (a head's pattern, an MLP's
coefficients). `run_until(model, tokens, hooks, last)` runs the forward pass with `hooks` and
stops it right after the hook `last` has run, by raising `StopForward` from a hook and catching
it here, in one place (the pattern of nnsight's early stop). Nothing after `last` is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from interp.models import Model

Hook = tuple[str, Callable]

# names get_act_name spells per layer, and the ones it does not know: rotary's cos/sin, the bridge's
# per-input residual copies (interp.bridge.split_inputs), the MLP's normalized input and the final
# norm's input and scale
_BLOCK_EXTRA = {
    "cos": "attn.hook_cos", "sin": "attn.hook_sin",
    "q_input": "attn.hook_q_input", "k_input": "attn.hook_k_input", "v_input": "attn.hook_v_input",
    "mlp_in": "hook_mlp_in",  # the MLP's own residual copy (split inputs)
    "mlp_normed": "mlp.hook_in",  # what the MLP module receives: ln2 of its input
    "ln1_scale": "ln1.hook_scale", "ln2_scale": "ln2.hook_scale",  # the norms' denominators
}  # fmt: skip
_MODEL_EXTRA = {"final_in": "ln_final.hook_in", "final_scale": "ln_final.hook_scale"}


def name(kind: str, layer: int | None = None) -> str:
    """The hook name of `kind` ("z", "pattern", "q", "k", "v", "rot_q", "rot_k", "cos", "sin",
    "resid_pre", "resid_mid", "resid_post", "mlp_out", "attn_out", "post", "q_input", "k_input",
    "v_input", "mlp_in", "mlp_normed", "ln1_scale", "ln2_scale", ...) at `layer`; model-level: "embed", "pos_embed",
    "final_in" (the final norm's input), "final_scale"."""
    if kind in _BLOCK_EXTRA:
        return f"blocks.{layer}.{_BLOCK_EXTRA[kind]}"
    if kind in _MODEL_EXTRA:
        return _MODEL_EXTRA[kind]
    if layer is None:
        return f"hook_{kind}"  # model-level hooks: embed, pos_embed
    from transformer_lens.utilities import get_act_name

    return get_act_name(kind, layer)


def names(kind: str, layers: Iterable[int]) -> list[str]:
    return [name(kind, layer) for layer in layers]


def final_resid(n_layers: int) -> str:
    """The residual stream after the last block (what the final norm reads)."""
    return name("resid_post", n_layers - 1)


class StopForward(Exception):
    """Raised by `stop_hook` once everything needed has been seen; caught by `run_until`."""


def stop_hook(hook_name: str) -> Hook:
    """A hook that ends the forward pass at `hook_name` (add it after the hooks it must follow)."""

    def stop(activation: Tensor, hook=None):
        raise StopForward

    return hook_name, stop


def run_until(model: Model, tokens: Tensor, fwd_hooks: list[Hook], last: str | None) -> Tensor | None:
    """Run `tokens` with `fwd_hooks`; with `last`, stop right after the hook `last` (returns
    None), else run to the end and return the logits."""
    hooks = list(fwd_hooks) + ([stop_hook(last)] if last is not None else [])
    try:
        return model.bridge.run_with_hooks(tokens.to(model.device), fwd_hooks=hooks)
    except StopForward:
        return None


def stopped(fn: Callable[[], object]) -> None:
    """Call `fn` (a forward pass under hooks that may raise StopForward) and swallow the stop:
    for passes that run inside a `model.hooks(...)` context rather than through `run_until`."""
    try:
        fn()
    except StopForward:
        pass


@torch.no_grad()
def capture(model: Model, tokens: Tensor, hook_names: list[str], last: str | None = None) -> dict[str, Tensor]:
    """The activations at `hook_names` for `tokens` (detached, on their device). The pass stops
    after `last` (default: the last of `hook_names`, which must then be the deepest one)."""
    got: dict[str, Tensor] = {}

    def keeper(key: str):  # hook.name can be an alias of the name asked for: key by ours
        def keep(activation: Tensor, hook=None):
            got[key] = activation.detach()

        return keep

    run_until(model, tokens, [(n, keeper(n)) for n in hook_names], last if last is not None else hook_names[-1])
    return got


def layer_pattern(model: Model, tokens: Tensor, layer: int) -> Tensor:
    """Attention patterns [batch, head, dest, src] of one layer; the pass stops right after it
    (layer 0 costs a fraction of a full pass)."""
    from interp.errors import WorkbenchError

    if not 0 <= layer < model.info.n_layers:
        raise WorkbenchError(f"layer {layer} does not exist; {model.info.name} has layers 0..{model.info.n_layers - 1}")
    hook_name = name("pattern", layer)
    return capture(model, tokens, [hook_name])[hook_name]
