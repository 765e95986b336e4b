"""The graph's writers and inputs on the bridge: capturing every writer's output in a forward pass, and
checking the bridge's per-input residual copies that the plain references edit.

Writers are read at their sites (interp.circuits.types.Node.hook): `blocks.0.hook_resid_pre` (the
embedding), `attn.hook_z` (times W_O[h], per head) and `hook_mlp_out`. The fast engines (attribution,
the replayed block) never need per-input copies of the residual stream; the plainly written
references do, and TransformerLens 4.3's HF bridges give every input its own (interp.bridge.
split_inputs: one copy per query head at `attn.hook_q_input`, one per *KV head* at `hook_k_input` /
`hook_v_input`, the MLP's at `hook_mlp_in`). `check_inputs(model)` verifies once per model that the
copies really are the pre-norm residual stream (the verdict is kept on the Model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.bridge import split_inputs
from interp.circuits.types import Graph, Reader
from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model


def head_out(model: Model, layer: int, z: Float[Tensor, "... head d_head"]) -> Float[Tensor, "... head d_model"]:
    """Each head's own write into the residual stream, z_h @ W_O[h] (no bias)."""
    W_O = model.bridge.blocks[layer].attn.W_O  # [head d_head d_model]
    return einops.einsum(z, W_O.to(z.dtype), "... head e, head e d -> ... head d")


def writer_hooks(model: Model, graph: Graph, put: Callable[[int, Tensor], None], rows: int | None = None) -> list:
    """Forward hooks that hand each writer group's output to `put(first, output)`, `first` being the
    group's first writer index: the embedding [batch pos 1 d], a layer's heads [batch pos head d]
    (z_h @ W_O[h]), an MLP [batch pos 1 d]; in forward order, detached; of the first `rows` prompts
    of the batch only, when given."""

    def hand(first: int, fn: Callable[[Tensor], Tensor]):
        def hook(x, hook=None):
            with torch.no_grad():
                put(first, fn(x.detach()[:rows]))

        return hook

    out = [(hooks.name("resid_pre", 0), hand(0, lambda x: x[:, :, None]))]
    for layer in range(graph.n_layers):
        out.append((hooks.name("z", layer), hand(graph.first_head(layer), lambda z, layer=layer: head_out(model, layer, z))))
        if graph.has_mlp:
            out.append((hooks.name("mlp_out", layer), hand(graph.mlp_writer(layer), lambda x: x[:, :, None])))
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


def layer_inputs(graph: Graph) -> list[tuple[Reader, Tensor]]:
    """(a representative reader, the reader indices) of every input hook, in forward order: per layer
    its q, k and v copies (one hook each, a head axis inside) and its MLP's, then the logits'."""
    out = []
    for layer in range(graph.n_layers):
        for kind in ("q", "k", "v", "mlp") if graph.has_mlp else ("q", "k", "v"):
            idx = graph.layer_readers(layer, kind)
            out.append((graph.readers[int(idx[0])], idx))
    idx = graph.layer_readers(0, "logits")
    return out + [(graph.readers[int(idx[0])], idx)]


@torch.no_grad()
def check_inputs(model: Model) -> None:
    """Refuse a bridge whose per-input copies are not the pre-norm residual stream (once per model)."""
    if model.memo.get("split inputs checked"):
        return
    graph = Graph.of(model)
    tokens = model.to_tokens("The quick brown fox jumps over")
    inputs = layer_inputs(graph)
    final = hooks.final_resid(graph.n_layers)  # what the final norm's input must equal
    stream = lambda r: final if r.kind == "logits" else r.stream  # noqa: E731
    names = sorted({stream(r) for r, _ in inputs} | {r.hook for r, _ in inputs})
    got: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(x, hook=None):
            got[name] = x.detach().clone()

        return hook

    with split_inputs(model):
        model.run_with_hooks(tokens, fwd_hooks=[(n, keep(n)) for n in names])
    for reader, _ in inputs:
        if reader.hook not in got:
            raise WorkbenchError(f"{model.info.name}'s bridge gives {reader.kind} inputs no hook of their own ({reader.hook}); "
                                 "edge circuits cannot run on it")  # fmt: skip
        x = got[reader.hook] if reader.kind in ("mlp", "logits") else got[reader.hook][:, :, 0]
        if not torch.allclose(x.float(), got[stream(reader)].float(), atol=1e-4, rtol=1e-3):
            raise WorkbenchError(
                f"{model.info.name}: the bridge's {reader.kind} input at layer {reader.layer} is not the pre-norm "
                "residual stream; edge circuits cannot run on this architecture"
            )
    model.memo["split inputs checked"] = True
