"""The graph on the bridge: where each writer's output and each input's residual stream live.

Writers are read at `blocks.0.hook_resid_pre` (the embedding), `attn.hook_z` (times W_O[h], per
head: `writer_hooks`, `writer_diff_hooks`) and `hook_mlp_out`. Inputs are the residual stream a
reader's projection starts from: `resid_pre` (a layer's q, k and v), `resid_mid` (its MLP) and the
final residual stream (the logits, `ln_final.hook_in`).

The fast engines never need per-input copies of the residual stream: attribution takes gradients
at the projections and pulls them back through the norm (interp.circuits.attribute), the ablation
engine rebuilds only the projections whose inputs change (interp.circuits.ablate), and exact
patching replays from the clean cache (interp.circuits.edges). The plainly written references do
use them: TransformerLens 4.3's HF bridges can give every input its own copy (`cfg.use_split_qkv_input`
forks each attention layer's pre-norm input into one copy per query head, `attn.hook_q_input`, and
one per *KV head*, `attn.hook_k_input`/`hook_v_input`: on GQA models the k/v input is the shared
key/value head's, see interp.circuits.graph; `cfg.use_hook_mlp_in` gives the MLP its own,
`hook_mlp_in`), so a reference edits one input with one hook, independently of the fast code.
`split_inputs(model)` turns those flags on for a block of code and restores the caller's flags
after (even on error); `check_inputs(model)` verifies once per model that the copies really are
the pre-norm residual stream; `supports_split` says whether a bridge has them at all (the native
bridge of in-house models does not: its references recompute the one projection instead).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.circuits.graph import Graph
from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model

_CHECKED: set[int] = set()


@contextmanager
def split_inputs(model: Model):
    """Give every input its own residual-stream copy (see the module docstring) inside the block."""
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


def supports_split(model: Model) -> bool:
    """Whether the bridge can fork a per-input residual copy (TL 4.3's HF bridges can; the native
    bridge of in-house models cannot)."""
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


def input_hook(kind: str, layer: int | None) -> str:
    """The hook holding the residual-stream copy an input of `kind` reads at `layer`."""
    if kind in ("q", "k", "v"):
        return f"blocks.{layer}.attn.hook_{kind}_input"
    if kind == "mlp":
        return f"blocks.{layer}.hook_mlp_in"
    return "ln_final.hook_in"


def layer_inputs(graph: Graph) -> list[tuple[str, str, int | None, Tensor]]:
    """(hook name, kind, layer, reader indices) for every input hook, in forward order."""
    out = []
    for layer in range(graph.n_layers):
        kinds = ("q", "k", "v", "mlp") if graph.has_mlp else ("q", "k", "v")
        out += [(input_hook(k, layer), k, layer, graph.layer_readers(layer, k)) for k in kinds]
    out.append((input_hook("logits", None), "logits", None, graph.layer_readers(0, "logits")))
    return out


def head_out(model: Model, layer: int, z: Float[Tensor, "... head d_head"]) -> Float[Tensor, "... head d_model"]:
    """Each head's own write into the residual stream, z_h @ W_O[h] (no bias)."""
    W_O = model.bridge.blocks[layer].attn.W_O  # [head d_head d_model]
    return einops.einsum(z, W_O.to(z.dtype), "... head e, head e d -> ... head d")


def writer_hooks(model: Model, graph: Graph, put: Callable[[int, Tensor], None], rows: int | None = None) -> list:
    """Forward hooks that hand each writer group's output to `put(first, output)`, `first` being the
    group's first writer index: the embedding [batch pos 1 d], a layer's heads [batch pos head d]
    (z_h @ W_O[h]), an MLP [batch pos 1 d]; in forward order, detached; of the first `rows` prompts
    of the batch only, when given."""
    from interp.circuits.graph import Node

    where = graph.writer_index()

    def hand(first: int, fn: Callable[[Tensor], Tensor]):
        def hook(x, hook=None):
            with torch.no_grad():
                put(first, fn(x.detach()[:rows]))

        return hook

    out = [(hooks.name("resid_pre", 0), hand(0, lambda x: x[:, :, None]))]
    for layer in range(graph.n_layers):
        out.append((hooks.name("z", layer), hand(where[Node("head", layer, 0)], lambda z, layer=layer: head_out(model, layer, z))))
        if graph.has_mlp:
            out.append((hooks.name("mlp_out", layer), hand(where[Node("mlp", layer)], lambda x: x[:, :, None])))
    return out


def writer_diff_hooks(model: Model, graph: Graph, buffer: Tensor, minus: Tensor,
                      head_sums: dict[int, Tensor | None] | None = None, start: int = 0) -> list:  # fmt: skip
    """Forward hooks that write each writer's output minus `minus` ([writer batch|1 pos|1 d]) into
    `buffer` ([writer batch pos d], writer-major, filled in place without intermediate copies).
    For each layer among `head_sums`' keys, `head_sums[layer]` also receives the sum of the layer's
    head outputs [batch pos d] (its attention output without b_O), taken before the subtraction.
    From `start` on: the buffer and `minus` hold the positions start.. only."""
    from interp.circuits.graph import Node

    where = graph.writer_index()
    B, T, d = buffer.shape[1:]

    def single(i: int):
        def hook(x, hook=None):
            x = x.detach()
            torch.sub(x[:, start:] if x.shape[1] != buffer.shape[2] else x, minus[i], out=buffer[i])

        return hook

    def heads(layer: int, first: int):
        W_O = model.bridge.blocks[layer].attn.W_O  # [head d_head d_model]
        H = W_O.shape[0]

        def hook(z, hook=None):
            out = buffer[first : first + H]
            z = z.detach()[:, start:]
            torch.bmm(z.permute(2, 0, 1, 3).reshape(H, B * T, -1), W_O.to(z.dtype), out=out.view(H, B * T, d))
            if head_sums is not None and layer in head_sums:
                head_sums[layer] = out.sum(0)
            out.sub_(minus[first : first + H])

        return hook

    out = [(hooks.name("resid_pre", 0), single(0))]
    for layer in range(graph.n_layers):
        out.append((hooks.name("z", layer), heads(layer, where[Node("head", layer, 0)])))
        if graph.has_mlp:
            out.append((hooks.name("mlp_out", layer), single(where[Node("mlp", layer)])))
    return out


def stack_writers(sink: dict[int, Tensor], n_writers: int) -> Float[Tensor, "batch pos writer d_model"]:
    out = torch.cat([sink[k] for k in sorted(sink)], dim=2)
    if out.shape[2] != n_writers:
        raise WorkbenchError(f"captured {out.shape[2]} writer outputs, expected {n_writers}: the bridge skipped a hook")
    return out


@torch.no_grad()
def writer_outputs(model: Model, tokens: Tensor, graph: Graph | None = None) -> tuple[Tensor, Tensor]:
    """(logits, every writer's output [batch pos writer d_model]) of one plain forward pass."""
    graph = graph or Graph.of(model)
    sink: dict[int, Tensor] = {}
    logits = model.run_with_hooks(tokens, fwd_hooks=writer_hooks(model, graph, sink.__setitem__))
    return logits, stack_writers(sink, len(graph.writers))


@torch.no_grad()
def check_inputs(model: Model) -> None:
    """Refuse a bridge whose per-input copies are not the pre-norm residual stream (once per model)."""
    if id(model) in _CHECKED:
        return
    graph = Graph.of(model)
    tokens = model.to_tokens("The quick brown fox jumps over")
    L = model.info.n_layers
    names = [hooks.name("resid_pre", layer) for layer in range(L)] + [hooks.name("resid_mid", layer) for layer in range(L)]
    names += [hooks.final_resid(L)]
    got: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(x, hook=None):
            got[name] = x.detach().clone()

        return hook

    inputs = layer_inputs(graph)
    with split_inputs(model):
        model.run_with_hooks(tokens, fwd_hooks=[(n, keep(n)) for n in names] + [(h, keep(h)) for h, *_ in inputs])
    for name, kind, layer, _ in inputs:
        if name not in got:
            raise WorkbenchError(f"{model.info.name}'s bridge gives {kind} inputs no hook of their own ({name}); "
                                 "edge circuits cannot run on it")  # fmt: skip
        ref = {"mlp": hooks.name("resid_mid", layer), "logits": hooks.final_resid(L)}.get(kind, hooks.name("resid_pre", layer))
        x = got[name] if kind in ("mlp", "logits") else got[name][:, :, 0]
        if not torch.allclose(x.float(), got[ref].float(), atol=1e-4, rtol=1e-3):
            raise WorkbenchError(
                f"{model.info.name}: the bridge's {kind} input at layer {layer} is not the pre-norm residual stream; "
                "edge circuits cannot run on this architecture"
            )
    _CHECKED.add(id(model))
